package postgres

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// withSettings returns the source with extra settings.
func withSettings(src engines.Source, kv map[string]any) engines.Source {
	cfg := map[string]any{}
	for k, v := range src.Config {
		cfg[k] = v
	}
	for k, v := range kv {
		cfg[k] = v
	}
	src.Config = cfg
	return src
}

// argvRecorder is a started hook that keeps pg_restore's argv.
type argvRecorder struct {
	mu   sync.Mutex
	argv []string
}

func (a *argvRecorder) started(tool string, pid int) {
	if tool != "pg_restore" {
		return
	}
	w := &procWatch{secret: "\x00never\x00", envOf: map[string][]string{}, argv: map[string]string{}}
	w.started(tool, pid)
	a.mu.Lock()
	a.argv = append(a.argv, w.argv[tool])
	a.mu.Unlock()
}

func (a *argvRecorder) last(t *testing.T) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.argv) == 0 {
		t.Fatal("pg_restore never ran")
	}
	return a.argv[len(a.argv)-1]
}

func emptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("staging directory %s still holds %s", dir, e.Name())
	}
}

// TestRestoreModes restores the seeded database every way: streamed
// into one pg_restore (restoreJobs 1), streamed into COPYs over several
// connections (the default), and staged on local disk for pg_restore
// --jobs. All give the same database, and nothing stays in the staging
// directory; only the staged restore copies the archive there.
func TestRestoreModes(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	svc := &service{db: db}
	svc.Seed(ctx, t)
	want := db.snapshot(ctx, t, "")
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	d, _ := readDetails(info)
	if d.Databases[0].RowsFrom != "archive" || d.Databases[0].DumpBytes <= 0 {
		t.Fatalf("backup details: rows from %q, archive size %d", d.Databases[0].RowsFrom, d.Databases[0].DumpBytes)
	}
	for _, m := range []struct {
		name     string
		settings map[string]any
		staged   bool
		wantArgv string // in pg_restore's argv
	}{
		{"stream", map[string]any{"restoreJobs": 1}, false, ""},
		{"parallel", nil, false, "--jobs=2"},
		{"parallel4", map[string]any{"restoreJobs": 4}, false, "--jobs=4"},
		{"staged", nil, true, "--jobs=2"},
	} {
		t.Run(m.name, func(t *testing.T) {
			staging := t.TempDir()
			settings := map[string]any{"stagingDir": staging}
			for k, v := range m.settings {
				settings[k] = v
			}
			src := withSettings(db.source(), settings)
			svc.Damage(ctx, t)
			rec := &argvRecorder{}
			e.started = rec.started
			e.staged = m.staged
			defer func() { e.started, e.staged = nil, false }()
			log, buf := captureLog(t)
			job := store.RestoreJob(t, "mode-"+m.name, src, info, engines.RestoreOptions{DropPrevious: true})
			job.Log = log
			if _, err := e.Restore(ctx, job); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if m.staged && !regexp.MustCompile(`"offsets":[1-9]`).Match(buf.Bytes()) {
				t.Errorf("the staged archive's data offsets were not recorded:\n%s", buf.Bytes())
			}
			streamed := strings.Contains(string(buf.Bytes()), "restored the archive streaming, in parallel")
			if streamed != (m.wantArgv != "" && !m.staged) {
				t.Errorf("streamed in parallel: %v, want %v:\n%s", streamed, !streamed, buf.Bytes())
			}
			if diff := compareSnapshots(want, db.snapshot(ctx, t, "")); diff != "" {
				t.Errorf("restored database differs: %s", diff)
			}
			// Statistics, as the swapped-in database serves its first query.
			if n := db.value(ctx, t, "", `SELECT count(*)::text FROM pg_stat_user_tables
				WHERE schemaname IN ('public', 'sales') AND last_analyze IS NULL`); n != "0" {
				t.Errorf("%s restored tables have no statistics", n)
			}
			argv := rec.last(t)
			switch {
			case m.wantArgv == "":
				if strings.Contains(argv, "--jobs") || strings.Contains(argv, staging) {
					t.Errorf("restoreJobs 1: pg_restore ran as %q, want one job reading its stdin", argv)
				}
			case !strings.Contains(argv, m.wantArgv) || !strings.Contains(argv, staging+"/"+stagingPrefix):
				t.Errorf("pg_restore ran as %q, want %s and a file in %s", argv, m.wantArgv, staging)
			case !m.staged && !strings.Contains(argv, "--section=post-data"):
				t.Errorf("pg_restore ran last as %q, want the post-data section of the archive's TOC", argv)
			}
			emptyDir(t, staging)
		})
	}
}

// restoreMode is one of the three ways a restore loads a database:
// streamed from the bucket into one pg_restore (jobs 1), streamed from
// the bucket into COPYs over several connections (jobs 2), or staged on
// local disk for pg_restore --jobs (jobs 2, staged: how an archive the
// streaming restore cannot read is restored).
type restoreMode struct {
	name   string
	jobs   int
	staged bool
}

var restoreModes = []restoreMode{{"stream", 1, false}, {"parallel", 2, false}, {"staged", 2, true}}

// engine returns e set to the mode; the returned func undoes it.
func (m restoreMode) engine(e *Engine) func() {
	e.staged = m.staged
	return func() { e.staged = false }
}

// source returns src set to the mode, with a staging directory of its
// own, which it returns too.
func (m restoreMode) source(t *testing.T, src engines.Source) (engines.Source, string) {
	staging := t.TempDir()
	return withSettings(src, map[string]any{"restoreJobs": m.jobs, "stagingDir": staging}), staging
}

// TestNoRoomStreams: when the staging directory cannot hold an archive
// that must be staged, the restore streams into one pg_restore instead
// of failing; the streaming parallel restore needs no room for it at
// all.
func TestNoRoomStreams(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", `CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g`)
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	// A backup that says its archive is an exabyte.
	d, _ := readDetails(info)
	d.Databases[0].DumpBytes = 1 << 60
	huge := info
	huge.Details, _ = toMap(d)
	db.exec(ctx, t, "", `DELETE FROM t`)
	staging := t.TempDir()
	rec := &argvRecorder{}
	e.started = rec.started
	log, buf := captureLog(t)
	e.staged = true
	job := store.RestoreJob(t, "noroom", withSettings(db.source(), map[string]any{"stagingDir": staging}), huge, engines.RestoreOptions{DropPrevious: true})
	job.Log = log
	if _, err := e.Restore(ctx, job); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if n := db.value(ctx, t, "", `SELECT count(*)::text FROM t`); n != "1000" {
		t.Errorf("restored %s rows, want 1000", n)
	}
	if argv := rec.last(t); strings.Contains(argv, "--jobs") {
		t.Errorf("pg_restore ran as %q, want one job", argv)
	}
	if !strings.Contains(string(buf.Bytes()), "no room to stage") {
		t.Errorf("the log does not say why the restore was not parallel:\n%s", buf.Bytes())
	}
	emptyDir(t, staging)

	e.staged = false
	db.exec(ctx, t, "", `DELETE FROM t`)
	log, buf = captureLog(t)
	job = store.RestoreJob(t, "noroom2", withSettings(db.source(), map[string]any{"stagingDir": staging}), huge, engines.RestoreOptions{DropPrevious: true})
	job.Log = log
	if _, err := e.Restore(ctx, job); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if n := db.value(ctx, t, "", `SELECT count(*)::text FROM t`); n != "1000" {
		t.Errorf("restored %s rows, want 1000", n)
	}
	if argv := rec.last(t); !strings.Contains(argv, "--jobs=2") || !strings.Contains(string(buf.Bytes()), "restored the archive streaming, in parallel") {
		t.Errorf("an exabyte archive was not restored in parallel (pg_restore ran last as %q):\n%s", argv, buf.Bytes())
	}
	emptyDir(t, staging)
}

// TestStagingSweep: a staging directory whose worker died (its lock is
// free) is removed by the next restore's sweep; one in use is not.
func TestStagingSweep(t *testing.T) {
	parent := t.TempDir()
	live, err := newStaging(parent)
	if err != nil {
		t.Fatal(err)
	}
	defer live.remove()
	if _, err := live.copyIn(strings.NewReader("live"), "archive.dump", nil, nil); err != nil {
		t.Fatal(err)
	}
	dead, err := newStaging(parent)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.copyIn(strings.NewReader("dead"), "archive.dump", nil, nil); err != nil {
		t.Fatal(err)
	}
	_ = dead.lock.Close() // as the kernel does when its process dies
	// Died before it made its lock: removed once it is old.
	young := filepath.Join(parent, stagingPrefix+"young")
	old := filepath.Join(parent, stagingPrefix+"old")
	other := filepath.Join(parent, "not-ours")
	// Died between creating its directory and renaming it into view.
	youngNew := filepath.Join(parent, stagingNewPrefix+"young")
	oldNew := filepath.Join(parent, stagingNewPrefix+"old")
	for _, d := range []string{young, old, other, youngNew, oldNew} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-2 * time.Hour)
	for _, d := range []string{old, other, oldNew} {
		if err := os.Chtimes(d, long, long); err != nil {
			t.Fatal(err)
		}
	}

	log, _ := captureLog(t)
	sweepStaging(parent, log)
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	for _, c := range []struct {
		dir  string
		want bool
	}{{live.dir, true}, {dead.dir, false}, {young, true}, {old, false}, {other, true}, {youngNew, true}, {oldNew, false}} {
		if got := exists(c.dir); got != c.want {
			t.Errorf("%s: exists %v after the sweep, want %v", filepath.Base(c.dir), got, c.want)
		}
	}
	if !exists(live.path) {
		t.Errorf("the sweep removed the file of a staging directory in use")
	}
}

// TestRestoreJobsSetting: restoreJobs and stagingDir are checked.
func TestRestoreJobsSetting(t *testing.T) {
	base := engines.Source{Name: "s", Engine: "postgres", Config: map[string]any{"url": "postgres://u@h/db"}}
	for _, c := range []struct {
		settings map[string]any
		err      string
		jobs     int
	}{
		{nil, "", defaultRestoreJobs},
		{map[string]any{"restoreJobs": 1}, "", 1},
		{map[string]any{"restoreJobs": 8}, "", 8},
		{map[string]any{"restoreJobs": -1}, "restoreJobs: -1 is not between 1 and 32", 0},
		{map[string]any{"restoreJobs": 33}, "restoreJobs: 33", 0},
		{map[string]any{"restoreJobs": "two"}, "restoreJobs", 0},
		{map[string]any{"stagingDir": "relative/dir"}, "stagingDir: \"relative/dir\" is not an absolute path", 0},
	} {
		ci, err := parseSource(withSettings(base, c.settings))
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%v: %v", c.settings, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%v: error %v, want one containing %q", c.settings, err, c.err)
		case c.err == "" && ci.restoreJobs != c.jobs:
			t.Errorf("%v: %d jobs, want %d", c.settings, ci.restoreJobs, c.jobs)
		}
	}
}

// TestStagingSweepRacesNoNewDirectory: a restore's sweep of dead workers'
// staging directories runs while other restores create theirs (in
// TestFaultMix four workers share one stagingDir). A directory is never
// removed, nor its lock refused, while it is being created: before, a
// sweep could take the lock of a directory whose creator had made the
// lock file but not yet locked it, and remove the directory under it
// ("create staging file: … toc.dump: no such file or directory").
func TestStagingSweepRacesNoNewDirectory(t *testing.T) {
	parent := t.TempDir()
	log, _ := captureLog(t)
	stop := make(chan struct{})
	var sweeps sync.WaitGroup
	for range 2 {
		sweeps.Add(1)
		go func() {
			defer sweeps.Done()
			for {
				select {
				case <-stop:
					return
				default:
					sweepStaging(parent, log)
				}
			}
		}()
	}
	var failures []string
	var mu sync.Mutex
	var makers sync.WaitGroup
	for range 4 {
		makers.Add(1)
		go func() {
			defer makers.Done()
			for range 300 {
				s, err := newStaging(parent)
				if err == nil {
					_, err = s.copyIn(strings.NewReader("toc"), "toc.dump", nil, nil)
					_ = s.remove()
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	makers.Wait()
	close(stop)
	sweeps.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of 1200 staging directories failed beside a sweep, e.g. %s", len(failures), failures[0])
	}
	left, _ := os.ReadDir(parent)
	if len(left) != 0 {
		t.Errorf("left in the staging directory: %v", left)
	}
}
