package postgres

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// realBinDir is the directory of the installed client programs the fake
// majors' directories link to.
func realBinDir(t *testing.T) string {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
	if len(matches) == 0 {
		p, err := exec.LookPath("pg_dump")
		if err != nil {
			t.Skip("no pg_dump installed")
		}
		matches = []string{p}
	}
	return filepath.Dir(matches[0])
}

// fakeMajors builds root/usr/lib/postgresql/<major>/bin for each major,
// each holding links to the real client programs, as the PGDG packages
// lay them out, and returns the glob that finds them.
func fakeMajors(t *testing.T, majors ...string) (root, glob string) {
	t.Helper()
	real := realBinDir(t)
	root = t.TempDir()
	for _, m := range majors {
		dir := filepath.Join(root, "usr/lib/postgresql", m, "bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, tool := range []string{"pg_dump", "pg_dumpall", "pg_restore"} {
			if err := os.Symlink(filepath.Join(real, tool), filepath.Join(dir, tool)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root, filepath.Join(root, "usr/lib/postgresql/*/bin")
}

func TestPickBinDir(t *testing.T) {
	root, glob := fakeMajors(t, "12", "13", "15", "17")
	// A directory without pg_dump does not count.
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/postgresql/16/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := func(m string) string { return filepath.Join(root, "usr/lib/postgresql", m, "bin") }
	for _, c := range []struct {
		server int
		want   string
	}{
		{12, dir("12")}, {13, dir("13")}, {14, dir("15")}, {15, dir("15")},
		{16, dir("17")}, {17, dir("17")}, {18, ""}, {9, dir("12")},
	} {
		if got := pickBinDir([]string{glob}, "pg_dump", c.server); got != c.want {
			t.Errorf("server %d: picked %q, want %q", c.server, got, c.want)
		}
	}
}

// TestBackupRunsTheServersMajor backs up the shared server with several
// majors' directories installed and checks which pg_dump ran: the one of
// the server's own major, not the newest.
func TestBackupRunsTheServersMajor(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", `CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g`)
	admin := adminConnect(ctx, t, "postgres")
	var num int
	if err := admin.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&num); err != nil {
		t.Fatal(err)
	}
	major := serverMajor(num)
	root, glob := fakeMajors(t, itoa(major-1), itoa(major), itoa(major+2))
	w := watchProcs(db.password)
	e := New()
	e.started = w.started
	e.binGlobs = []string{glob}
	store := enginetest.NewStore()
	info, err := e.Backup(ctx, &engines.BackupJob{ID: "bindir", Source: db.source(), Artifacts: store})
	if err != nil {
		w.finish()
		t.Fatalf("Backup: %v", err)
	}
	_, err = e.Restore(ctx, store.RestoreJob(t, "bindir", db.source(), *info, engines.RestoreOptions{DropPrevious: true}))
	w.finish()
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	want := filepath.Join(root, "usr/lib/postgresql", itoa(major), "bin")
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if argv := w.argv[tool]; !strings.HasPrefix(argv, filepath.Join(want, tool)+" ") {
			t.Errorf("%s ran as %q, want the server's major's %s", tool, argv, want)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
