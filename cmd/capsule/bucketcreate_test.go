package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBucketCreateLocal: a read-only command refuses a bucket that does
// not exist; "capsule bucket create" makes it, says so, and says it
// exists on a second run (exit 0 both times); then ls works on it.
func TestBucketCreateLocal(t *testing.T) {
	e := newCLIEnv(t)
	dir := filepath.Join(e.dir, "new-bucket")
	url := "file://" + dir
	if _, errOut, code := e.run("--bucket", url, "ls"); code == 0 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("ls on a missing bucket: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("ls created the bucket")
	}
	if out := e.must("bucket", "create", url); out != "created "+url+" (prefix capsule/)\n" {
		t.Errorf("first create: %q", out)
	}
	if out := e.must("bucket", "create", url); out != url+" (prefix capsule/) exists already\n" {
		t.Errorf("second create: %q", out)
	}
	e.must("--bucket", url, "ls")
	if _, errOut, code := e.run("bucket", "create", "ftp://x/y"); code == 0 || !strings.Contains(errOut, "unknown scheme") {
		t.Errorf("bad URL: exit %d, %s", code, errOut)
	}
}
