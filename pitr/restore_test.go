package pitr_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/pgserver"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
)

type sources map[string]engines.Source

func (s sources) Lookup(name string) (engines.Source, error) {
	src, ok := s[name]
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
	}
	return src, nil
}

// baseBackup takes a base backup of src through the executor, as a
// scheduled backup would.
func baseBackup(t *testing.T, b bucket.Bucket, src engines.Source) *index.BackupIndex {
	t.Helper()
	return baseBackupBy(t, newExecutor(t, b, src, nil), src)
}

// newExecutor is a worker's executor of src; edit, when set, changes
// its configuration first.
func newExecutor(t *testing.T, b bucket.Bucket, src engines.Source, edit func(*executor.Config)) *executor.Executor {
	t.Helper()
	cfg := executor.Config{Bucket: b, Engines: engines.NewRegistry(postgres.New()), Sources: sources{src.Name: src},
		Worker: "test", Version: "test", Log: enginetest.TestLog(t), FormatVerifiers: pitr.Verifiers()}
	if edit != nil {
		edit(&cfg)
	}
	x, err := executor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// baseBackupBy takes a base backup of src with x.
func baseBackupBy(t *testing.T, x *executor.Executor, src engines.Source) *index.BackupIndex {
	t.Helper()
	req := requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Source: src.Name, Cluster: cluster}
	out := x.Run(context.Background(), &req, 1, nil)
	if err := x.Commit(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	if out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("base backup: %s: %s", out.Result.Status, out.Result.Error)
	}
	if out.Index.Format != postgres.FormatBase {
		t.Fatalf("backup format %s, want %s", out.Index.Format, postgres.FormatBase)
	}
	return out.Index
}

// marker is one row of the marker table: its id and the server's clock
// when it was inserted (its commit follows within milliseconds).
type marker struct {
	id int
	at time.Time
	// done is when the insert's commit returned, on this machine's
	// clock (the server's: it runs here).
	done time.Time
}

func writeMarkers(t *testing.T, srv *pgserver.Server, db string, n int, every time.Duration) []marker {
	t.Helper()
	ctx := context.Background()
	conn, err := srv.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var out []marker
	for i := 0; i < n; i++ {
		var m marker
		if err := conn.QueryRow(ctx, `INSERT INTO marks (at) VALUES (clock_timestamp()) RETURNING id, at`).Scan(&m.id, &m.at); err != nil {
			t.Fatal(err)
		}
		m.done = time.Now()
		out = append(out, m)
		time.Sleep(every)
	}
	return out
}

func markerIDs(t *testing.T, srv *pgserver.Server, db string) []int {
	t.Helper()
	ctx := context.Background()
	conn, err := srv.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT id FROM marks ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []int
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// pitrFixture: a server with database app and its marker table,
// streaming, with one base backup.
type pitrFixture struct {
	srv *pgserver.Server
	b   bucket.Bucket
	src engines.Source
	r   *running
	// base is the base backup taken at the start.
	base *index.BackupIndex
}

func newPITRFixture(t *testing.T) *pitrFixture {
	return newPITRFixtureOn(t, newBucket(t))
}

// newPITRFixtureOn is newPITRFixture on bucket b.
func newPITRFixtureOn(t *testing.T, b bucket.Bucket) *pitrFixture {
	f := &pitrFixture{srv: startServer(t), b: b}
	execPG(t, f.srv, `CREATE DATABASE app`)
	f.src = engines.Source{Name: "pg", Engine: "postgres", Config: map[string]any{"url": f.srv.URL("app"), "pitr": true, "allowSuperuser": true}}
	f.r = runStream(t, f.b, f.src, "w1", 6*time.Second)
	conn, err := f.srv.Connect(context.Background(), "app")
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), `CREATE TABLE marks (id serial PRIMARY KEY, at timestamptz NOT NULL)`)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.base = baseBackup(t, f.b, f.src)
	return f
}

// A restore to a time T between two markers recovers every marker up
// to T and none after, into the live server by the side-database swap.
func TestRestoreToTimeIntoLiveServer(t *testing.T) {
	f := newPITRFixture(t)
	marks := writeMarkers(t, f.srv, "app", 30, 100*time.Millisecond)
	k := 17
	target := marks[k].at.Add(marks[k+1].at.Sub(marks[k].at) / 2)
	execPG(t, f.srv, `SELECT pg_switch_wal()`) // not needed for the stream; makes the LSN move
	f.r.waitFor(t, currentLSN(t, f.srv))

	attacked := false
	defer pitr.SetRecoveredHook(func(sock string, port int) {
		attacked = true
		attackTempServer(t, sock, port)
	})()
	res, err := pitr.Restore(context.Background(), pitr.RestoreConfig{
		Bucket: f.b, Cluster: cluster, Source: "pg", Target: pitr.Target{Time: target},
		Into: &f.src, ID: requests.NewID(), Log: enginetest.TestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored %+v", res)
	if !attacked {
		t.Error("the restore never ran its temporary server")
	}
	ids := markerIDs(t, f.srv, "app")
	if len(ids) != k+1 || ids[len(ids)-1] != marks[k].id {
		t.Fatalf("restored markers %v, want the %d up to id %d (target %s)", ids, k+1, marks[k].id, target)
	}
}

// --to-dir writes a data directory a new server starts on; --latest
// after the server died like a crash loses at most the last seconds.
func TestRestoreLatestToDataDirAfterCrash(t *testing.T) {
	f := newPITRFixture(t)
	marks := writeMarkers(t, f.srv, "app", 20, 100*time.Millisecond)
	f.r.waitFor(t, currentLSN(t, f.srv))
	f.srv.Kill()
	f.r.stop()

	dir := outDir(t)
	data := filepath.Join(dir, "data")
	// Scratch space too deep for a Unix socket's path: the temporary
	// server's socket goes elsewhere, and the restore still reaches it.
	scratch := filepath.Join(dir, strings.Repeat("s", 110))
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := pitr.Restore(context.Background(), pitr.RestoreConfig{
		Bucket: f.b, Cluster: cluster, Source: "pg", Target: pitr.Target{Latest: true},
		DataDir: data, Scratch: scratch, Log: enginetest.TestLog(t),
	}); err != nil {
		t.Fatal(err)
	}
	srv := startOn(t, data, dir)
	ids := markerIDs(t, srv, "app")
	if len(ids) != len(marks) {
		t.Fatalf("new server has %d markers, want all %d that the stream confirmed", len(ids), len(marks))
	}
}

// The window runs from the base backup's end to the newest WAL, and a
// restore to a moment after it is refused with the latest point named.
func TestWindowAndTargetPastIt(t *testing.T) {
	f := newPITRFixture(t)
	marks := writeMarkers(t, f.srv, "app", 5, 100*time.Millisecond)
	f.r.waitFor(t, currentLSN(t, f.srv))
	ctx := context.Background()
	w, err := pitr.RecoverableWindow(ctx, f.b, cluster, "pg", nil)
	if err != nil || w == nil {
		t.Fatalf("window: %v %v", w, err)
	}
	if w.BaseBackups != 1 || w.Latest.Before(marks[len(marks)-1].at) || !w.Earliest.Before(marks[0].at) {
		t.Fatalf("window %+v does not span the markers %s..%s", w, marks[0].at, marks[len(marks)-1].at)
	}
	_, err = pitr.Restore(ctx, pitr.RestoreConfig{Bucket: f.b, Cluster: cluster, Source: "pg",
		Target: pitr.Target{Time: time.Now().Add(time.Hour)}, Into: &f.src})
	if err == nil || !strings.Contains(err.Error(), "after the latest recoverable point") {
		t.Fatalf("restore past the window: %v", err)
	}
}

// Retention keeps the WAL the kept base backups need and deletes the
// rest: once the first base backup is gone, WAL before the second one's
// start goes, and a restore still works.
func TestPruneWALKeepsWhatBaseBackupsNeed(t *testing.T) {
	f := newPITRFixture(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		writeMarkers(t, f.srv, "app", 2, 0)
		execPG(t, f.srv, `SELECT pg_switch_wal()`)
	}
	second := baseBackup(t, f.b, f.src)
	writeMarkers(t, f.srv, "app", 2, 0)
	f.r.waitFor(t, currentLSN(t, f.srv))
	if _, err := pitr.PruneWAL(ctx, f.b, cluster, "pg"); err != nil {
		t.Fatal(err)
	}
	if w, err := pitr.RecoverableWindow(ctx, f.b, cluster, "pg", nil); err != nil || w == nil || w.BaseBackups != 2 {
		t.Fatalf("with both base backups kept, pruning left the window %+v (%v)", w, err)
	}
	entries, err := index.List(ctx, f.b, index.Filter{Cluster: cluster, Source: "pg"})
	if err != nil || len(entries) != 2 {
		t.Fatalf("backups: %d %v", len(entries), err)
	}
	first := entries[1]
	if err := f.b.Delete(ctx, first.ListedKey); err != nil {
		t.Fatal(err)
	}
	n, err := pitr.PruneWAL(ctx, f.b, cluster, "pg")
	if err != nil || n == 0 {
		t.Fatalf("after the first base backup went, pruned %d: %v", n, err)
	}
	w, err := pitr.RecoverableWindow(ctx, f.b, cluster, "pg", nil)
	if err != nil || w == nil || w.BaseBackups != 1 {
		t.Fatalf("window after pruning: %+v %v", w, err)
	}
	d, _ := postgres.ReadBaseDetails(engines.BackupInfo{Format: second.Format, Details: second.Details})
	segs, _ := pitr.ListSegments(ctx, f.b, cluster, "pg")
	start := parseLSN(t, d.StartLSN) / (16 << 20) * (16 << 20)
	if uint64(segs[0].Start) > start {
		t.Fatalf("WAL from %s was deleted; the second base backup starts at %s", segs[0].Start, d.StartLSN)
	}
	if _, err := pitr.Restore(ctx, pitr.RestoreConfig{Bucket: f.b, Cluster: cluster, Source: "pg",
		Target: pitr.Target{Latest: true}, Into: &f.src, Log: enginetest.TestLog(t)}); err != nil {
		t.Fatal(err)
	}
}

// attackTempServer is another local user going for a restore's
// temporary server, which trusts every connection it accepts: no TCP
// port to connect to, and a socket directory nobody else may enter.
func attackTempServer(t *testing.T, sock string, port int) {
	t.Helper()
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second); err == nil {
		c.Close()
		t.Errorf("the temporary server accepts TCP connections on 127.0.0.1:%d", port)
	}
	if c, err := net.DialTimeout("tcp6", fmt.Sprintf("[::1]:%d", port), 2*time.Second); err == nil {
		c.Close()
		t.Errorf("the temporary server accepts TCP connections on [::1]:%d", port)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	owner := os.Geteuid()
	if owner == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		owner, _ = strconv.Atoi(u.Uid)
	}
	if fi.Mode().Perm() != 0o700 || int(fi.Sys().(*syscall.Stat_t).Uid) != owner {
		t.Errorf("socket directory %s: mode %v, owner %d; want 0700 owned by %d", sock, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid, owner)
	}
	if _, err := os.Stat(filepath.Join(sock, fmt.Sprintf(".s.PGSQL.%d", port))); err != nil {
		t.Errorf("no socket in %s: %v", sock, err)
	}
	runuser, err1 := exec.LookPath("runuser")
	psql, err2 := exec.LookPath("psql")
	if os.Geteuid() != 0 || err1 != nil || err2 != nil {
		t.Log("not root, or no runuser or psql: the mode bits stand for the attempt as another user")
		return
	}
	out, err := exec.Command(runuser, "-u", "nobody", "--", psql, "-X", "-w", "-h", sock, "-p", strconv.Itoa(port), "-U", "postgres", "-d", "template1", "-c", "SELECT 1").CombinedOutput()
	if err == nil {
		t.Errorf("user nobody connected to the temporary server: %s", out)
	} else if !strings.Contains(string(out), "Permission denied") {
		t.Errorf("nobody's psql failed, but not for the socket's permissions: %s", out)
	}
	t.Logf("nobody's attempt: %s", bytes.TrimSpace(out))
	out, err = exec.Command(runuser, "-u", "nobody", "--", psql, "-X", "-w", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "-d", "template1", "-c", "SELECT 1").CombinedOutput()
	if err == nil {
		t.Errorf("user nobody connected to the temporary server over TCP: %s", out)
	}
}

// outDir is a directory for a restore's output outside the test's own
// temporary directory, readable by the PostgreSQL server it starts
// (mode 0755), removed when the test ends.
func outDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "capsule-pitr-out-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
