package pitr

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A --scratch too deep for a Unix socket's path puts the temporary
// server's socket in a private directory of the system's temporary
// directory instead (with no TCP address, the server would otherwise be
// unreachable).
func TestSocketParentOfLongScratch(t *testing.T) {
	short := t.TempDir()
	if got, err := socketParent(short); err != nil || got != short {
		t.Errorf("socketParent(%s) = %s, %v; want the scratch itself", short, got, err)
	}
	long := filepath.Join(short, strings.Repeat("d", 120))
	got, err := socketParent(long)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(got)
	if got == long || !strings.HasPrefix(got, os.TempDir()) || len(filepath.Join(got, "sock", ".s.PGSQL.65535")) > maxSocketPath {
		t.Errorf("socketParent(long scratch) = %s", got)
	}
	if fi, err := os.Stat(got); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v, %v; want a directory of mode 0700", got, fi.Mode(), err)
	}
}
