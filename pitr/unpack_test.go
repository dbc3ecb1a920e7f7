package pitr_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/pitr"
)

// tarArtifacts are archives built in memory.
type tarArtifacts map[string][]byte

func (a tarArtifacts) Names() []string { return nil }
func (a tarArtifacts) Open(_ context.Context, name string) (io.ReadCloser, error) {
	b, ok := a[name]
	if !ok {
		return nil, fmt.Errorf("no artifact %s", name)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}
func (a tarArtifacts) Verify(context.Context, string) error { return nil }

func tarOf(t *testing.T, hs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// A tablespace's archive is unpacked beside the data directory and
// linked from pg_tblspc/<oid>, whatever the source host's link named;
// archive names that are not an OID's and entries that climb out are
// refused, and nothing is written outside the two directories.
func TestUnpackBaseTablespaces(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	base := tarOf(t,
		&tar.Header{Name: "PG_VERSION", Typeflag: tar.TypeReg, Size: 2, Mode: 0o600},
		&tar.Header{Name: "pg_tblspc/16384", Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777},
		&tar.Header{Name: "tablespace_map", Typeflag: tar.TypeReg, Size: 3, Mode: 0o600})
	ts := tarOf(t, &tar.Header{Name: "PG_15_1/5/1234", Typeflag: tar.TypeReg, Size: 4, Mode: 0o600})
	arts := tarArtifacts{postgres.BaseArtifact: base, "16384.tar": ts}
	ctx := context.Background()
	data, root := filepath.Join(dir, "data"), filepath.Join(dir, "ts")
	dirs, err := pitr.UnpackBase(ctx, arts, &postgres.BaseDetails{Archives: []string{"16384.tar", postgres.BaseArtifact}}, data, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(root, "16384")
	if l, err := os.Readlink(filepath.Join(data, "pg_tblspc", "16384")); err != nil || l != want || dirs["16384"] != want {
		t.Fatalf("pg_tblspc/16384 -> %q (%v), dirs %v; want %s", l, err, dirs, want)
	}
	if _, err := os.Stat(filepath.Join(want, "PG_15_1/5/1234")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, "tablespace_map")); !os.IsNotExist(err) {
		t.Errorf("tablespace_map left in place: %v", err)
	}
	if _, err := os.Lstat(outside); !os.IsNotExist(err) {
		t.Errorf("the source host's tablespace location was written: %v", err)
	}

	for _, c := range []struct {
		archive string
		arts    tarArtifacts
		want    string
	}{
		{"../evil.tar", tarArtifacts{postgres.BaseArtifact: base, "../evil.tar": ts}, "refused"},
		{"pg_wal.tar", tarArtifacts{postgres.BaseArtifact: base, "pg_wal.tar": ts}, "refused"},
		{"16385.tar", tarArtifacts{postgres.BaseArtifact: base, "16385.tar": tarOf(t, &tar.Header{Name: "../../escape", Typeflag: tar.TypeReg, Size: 1, Mode: 0o600})}, "leaves"},
	} {
		d := filepath.Join(t.TempDir(), "data")
		_, err := pitr.UnpackBase(ctx, c.arts, &postgres.BaseDetails{Archives: []string{c.archive, postgres.BaseArtifact}}, d, filepath.Join(filepath.Dir(d), "ts"), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("archive %s: %v, want an error saying %q", c.archive, err, c.want)
		}
	}
}
