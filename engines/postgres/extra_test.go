package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"
)

// captureLog returns a logger that writes JSON lines to t.Log and to the
// returned buffer.
func captureLog(t *testing.T) (logrus.FieldLogger, *syncBuffer) {
	buf := &syncBuffer{}
	l := logrus.New()
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetLevel(logrus.DebugLevel)
	l.SetOutput(io.MultiWriter(buf, tlogWriter{t}))
	return l, buf
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

// procWatch scans the argv of every process on the machine, over and
// over, for a secret, and records the environment and argv of the
// engine's children as they start.
type procWatch struct {
	secret string
	stop   chan struct{}
	done   chan struct{}

	mu    sync.Mutex
	leaks []string
	scans int
	envOf map[string][]string // tool → its environment
	argv  map[string]string   // tool → its argv
}

func watchProcs(secret string) *procWatch {
	w := &procWatch{secret: secret, stop: make(chan struct{}), done: make(chan struct{}),
		envOf: map[string][]string{}, argv: map[string]string{}}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			w.scan()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

func (w *procWatch) scan() {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(w.secret)) {
			w.mu.Lock()
			w.leaks = append(w.leaks, fmt.Sprintf("%s: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
			w.mu.Unlock()
		}
	}
	w.mu.Lock()
	w.scans++
	w.mu.Unlock()
}

// started is the engine's test hook: it reads the child's argv and
// environment while it runs.
func (w *procWatch) started(tool string, pid int) {
	// Debian's /usr/bin/pg_* are a Perl wrapper that execs the real tool:
	// wait (the child blocks on its pipe meanwhile) until it has.
	var env, argv []byte
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		env, _ = os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		argv, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if len(env) > 0 && len(argv) > 0 && !bytes.Contains(argv, []byte("perl")) {
			break
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.envOf[tool] = strings.Split(string(env), "\x00")
	w.argv[tool] = strings.ReplaceAll(string(argv), "\x00", " ")
	if strings.Contains(string(argv), w.secret) {
		w.leaks = append(w.leaks, fmt.Sprintf("%s argv: %q", tool, argv))
	}
}

func (w *procWatch) finish() {
	close(w.stop)
	<-w.done
}

// TestPasswordNeverLeaks backs up and restores with a real password and
// proves it reaches the tools through their environment only: never in
// any process's argv, a log line, the BackupInfo or an artifact.
func TestPasswordNeverLeaks(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	// More than a pipe's buffer, so that pg_dump outlives the hook that
	// reads its environment.
	db.exec(ctx, t, "", `CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g`)
	w := watchProcs(db.password)
	e := New()
	e.started = w.started
	log, logs := captureLog(t)
	store := enginetest.NewStore()
	info, err := e.Backup(ctx, &engines.BackupJob{ID: "secret", Source: db.source(), Artifacts: store, Log: log})
	if err != nil {
		w.finish()
		t.Fatalf("Backup: %v", err)
	}
	job := store.RestoreJob(t, "secret", db.source(), *info, engines.RestoreOptions{DropPrevious: true})
	job.Log = log
	_, err = e.Restore(ctx, job)
	w.finish()
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}

	pw := []byte(db.password)
	if len(w.leaks) > 0 {
		t.Errorf("the password appeared in a process's argv: %v", w.leaks)
	}
	if w.scans < 10 {
		t.Errorf("only %d scans of /proc ran during backup and restore", w.scans)
	}
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		env, ok := w.envOf[tool]
		if !ok {
			t.Errorf("%s never started", tool)
			continue
		}
		var delivered bool
		for _, kv := range env {
			delivered = delivered || kv == "PGPASSWORD="+db.password
		}
		if !delivered {
			t.Errorf("%s's environment lacks the password in PGPASSWORD: the tools did not get it", tool)
		}
		t.Logf("%s argv: %s", tool, w.argv[tool])
	}
	if bytes.Contains(logs.Bytes(), pw) {
		t.Errorf("the password appeared in a log line")
	}
	if len(logs.Bytes()) == 0 {
		t.Errorf("no log line was captured: the log check proves nothing")
	}
	raw, _ := json.Marshal(info)
	if bytes.Contains(raw, pw) {
		t.Errorf("the password appeared in the BackupInfo: %s", raw)
	}
	for _, name := range store.Names() {
		if bytes.Contains(store.Bytes(name), pw) {
			t.Errorf("the password appeared in artifact %s", name)
		}
	}
}

// TestBackupIsOneSnapshot backs up a database while writers move money
// between accounts and log every transfer, each in one transaction. The
// restored database must hold exactly the row counts the backup recorded
// and satisfy the invariants, which two snapshots would break.
func TestBackupIsOneSnapshot(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "",
		`CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, sent bigint NOT NULL DEFAULT 0)`,
		`INSERT INTO accounts (id, balance) SELECT g, 1000 FROM generate_series(1, 1000) g`,
		`CREATE TABLE transfers (id bigserial PRIMARY KEY, src int, dst int, amount int)`,
		// Filler that makes the dump take a while.
		`CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS a, md5((g * 7)::text) AS b FROM generate_series(1, 300000) g`,
	)
	const total = 1000 * 1000

	var commits atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := adminConnect(ctx, t, db.name)
			defer conn.Close(ctx)
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for {
				select {
				case <-stop:
					return
				default:
				}
				src, dst, amount := 1+r.IntN(1000), 1+r.IntN(1000), 1+r.IntN(50)
				err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `INSERT INTO transfers (src, dst, amount) VALUES ($1, $2, $3)`, src, dst, amount); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - $2, sent = sent + 1 WHERE id = $1`, src, amount); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1`, dst, amount)
					return err
				})
				if err == nil {
					commits.Add(1)
				}
			}
		}()
	}
	// Let the writers get going, then back up while they write.
	for commits.Load() < 50 {
		time.Sleep(5 * time.Millisecond)
	}
	e := New()
	var atDumpStart atomic.Int64
	e.started = func(tool string, _ int) {
		if tool == "pg_dump" {
			atDumpStart.Store(commits.Load())
		}
	}
	store, info := enginetest.Backup(ctx, t, e, db.source())
	atDumpEnd := commits.Load()
	close(stop)
	wg.Wait()
	if atDumpEnd-atDumpStart.Load() < 10 {
		t.Fatalf("only %d transfers committed while pg_dump ran: the test proves nothing", atDumpEnd-atDumpStart.Load())
	}
	t.Logf("%d transfers committed while pg_dump ran, %d in all", atDumpEnd-atDumpStart.Load(), commits.Load())

	d, err := readDetails(info)
	if err != nil {
		t.Fatal(err)
	}
	if d.Databases[0].RowsFrom != "archive" {
		t.Errorf("row counts came from %q, want the archive itself", d.Databases[0].RowsFrom)
	}
	recorded := map[string]int64{}
	for _, tb := range d.Databases[0].Tables {
		recorded[tb.Schema+"."+tb.Name] = tb.Rows
	}
	if recorded["public.transfers"] == 0 || recorded["public.filler"] != 300000 || recorded["public.accounts"] != 1000 {
		t.Fatalf("recorded counts %v", recorded)
	}

	if _, err := e.Restore(ctx, store.RestoreJob(t, "snap", db.source(), info, engines.RestoreOptions{DropPrevious: true})); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for table, want := range recorded {
		if got := db.value(ctx, t, "", `SELECT count(*)::text FROM `+table); got != strconv.FormatInt(want, 10) {
			t.Errorf("restored %s has %s rows, the backup recorded %d", table, got, want)
		}
	}
	if got := db.value(ctx, t, "", `SELECT sum(balance)::text FROM accounts`); got != strconv.Itoa(total) {
		t.Errorf("restored balances sum to %s, want %d: accounts and transfers are not from one snapshot", got, total)
	}
	if sent, n := db.value(ctx, t, "", `SELECT sum(sent)::text FROM accounts`), db.value(ctx, t, "", `SELECT count(*)::text FROM transfers`); sent != n {
		t.Errorf("restored accounts count %s transfers sent, the transfers table holds %s: not one snapshot", sent, n)
	}
	if n := db.value(ctx, t, "", `SELECT count(*)::text FROM transfers`); n == strconv.FormatInt(commits.Load(), 10) {
		t.Errorf("the restore holds every transfer, also those after the backup")
	}
}

// TestRestoreWhileClientsConnected restores over a database that a
// client keeps querying: it sees the live data until the swap, then,
// after reconnecting, the restored data; the downtime is reported and
// short, and the replaced database is kept.
func TestRestoreWhileClientsConnected(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "",
		`CREATE TABLE info (v text)`, `INSERT INTO info VALUES ('backup')`,
		`CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS a FROM generate_series(1, 200000) g`)
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	db.exec(ctx, t, "", `UPDATE info SET v = 'live'`)

	type obs struct {
		at  time.Time
		v   string
		err error
	}
	var (
		mu   sync.Mutex
		seen []obs
	)
	stop := make(chan struct{})
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(ctx)
			}
		}()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var o obs
			if conn == nil {
				c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable", testHost, testPort, db.name))
				if err != nil {
					o.err = err
				} else {
					conn = c
				}
			}
			if conn != nil {
				o.err = conn.QueryRow(ctx, `SELECT v FROM info`).Scan(&o.v)
				if o.err != nil {
					conn.Close(ctx)
					conn = nil
				}
			}
			o.at = time.Now()
			mu.Lock()
			seen = append(seen, o)
			mu.Unlock()
			time.Sleep(3 * time.Millisecond)
		}
	}()

	var swapAt time.Time
	e.beforeSwap = func() {
		swapAt = time.Now()
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			t.Errorf("the client made no query before the swap")
		} else if last := seen[len(seen)-1]; last.v != "live" {
			t.Errorf("just before the swap the client does not see the live data: %q, %v", last.v, last.err)
		}
	}
	restoreStart := time.Now()
	job := store.RestoreJob(t, "live", db.source(), info, engines.RestoreOptions{})
	rinfo, err := e.Restore(ctx, job)
	if err != nil {
		close(stop)
		<-clientDone
		t.Fatalf("Restore: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		last := seen[len(seen)-1]
		mu.Unlock()
		if last.v == "backup" || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	<-clientDone

	var before, after int
	firstBackup := -1
	for i, o := range seen {
		switch {
		case o.at.Before(restoreStart):
		case o.at.Before(swapAt):
			before++
			if o.err != nil || o.v != "live" {
				t.Errorf("before the swap the client got %q, %v; want the live data", o.v, o.err)
			}
		case o.v == "backup":
			after++
			if firstBackup < 0 {
				firstBackup = i
			}
		case o.v == "live" && firstBackup >= 0:
			t.Errorf("the client saw the live data again after the restored data")
		}
	}
	if before < 20 {
		t.Errorf("the client ran only %d queries during the restore: the test proves little", before)
	}
	if after == 0 {
		t.Fatalf("the client never saw the restored data")
	}
	t.Logf("downtime %v; client: %d queries during the restore", rinfo.Downtime, before)
	if rinfo.Downtime <= 0 || rinfo.Downtime > 5*time.Second {
		t.Errorf("reported downtime %v, want in (0, 5s]", rinfo.Downtime)
	}
	wantPrev := sideName(db.name, "prev", job.ID, 1)
	if rinfo.Previous != wantPrev {
		t.Fatalf("Previous = %q, want %q", rinfo.Previous, wantPrev)
	}
	if v := db.value(ctx, t, wantPrev, `SELECT v FROM info`); v != "live" {
		t.Errorf("the previous database holds %q, want the replaced live data", v)
	}
}

// TestKilledRestoreLeavesTargetIntact kills pg_restore midway, in every
// restore mode: the target is untouched, and no side database or staged
// copy remains.
func TestKilledRestoreLeavesTargetIntact(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	svc := &service{db: db}
	svc.Seed(ctx, t)
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	svc.Damage(ctx, t)
	before := db.snapshot(ctx, t, "")
	for _, m := range restoreModes {
		t.Run(m.name, func(t *testing.T) {
			src, staging := m.source(t, db.source())
			defer m.engine(e)()
			// The streaming parallel restore runs pg_restore twice, each
			// briefly (schema, then indexes and constraints once every
			// row is in): it kills the second as it starts, midway
			// through the restore; the other modes run one pg_restore for
			// everything, killed once the server shows it loading rows
			// (a fixed delay lost the race on a quiet machine, where the
			// whole restore takes half a second).
			killed := make(chan error, 1)
			var runs atomic.Int32
			e.started = func(tool string, pid int) {
				if tool != "pg_restore" {
					return
				}
				n := runs.Add(1)
				switch {
				case m.name == "parallel" && n == 2:
					killed <- syscall.Kill(pid, syscall.SIGKILL)
				case m.name != "parallel":
					go func() { killed <- killWhenCopying(ctx, pid, db.name) }()
				}
			}
			defer func() { e.started = nil }()
			_, err := e.Restore(ctx, store.RestoreJob(t, "kill-"+m.name, src, info, engines.RestoreOptions{}))
			if kerr := <-killed; kerr != nil {
				t.Fatalf("kill pg_restore: %v (it finished before the kill: the test proves nothing)", kerr)
			}
			if err == nil {
				t.Fatalf("Restore with pg_restore killed returned no error")
			}
			t.Logf("Restore: %v", err)
			if diff := compareSnapshots(before, db.snapshot(ctx, t, "")); diff != "" {
				t.Errorf("the target changed: %s", diff)
			}
			if left := db.leftovers(ctx, t); len(left) > 0 {
				t.Errorf("side databases remain: %v", left)
			}
			emptyDir(t, staging)
		})
	}
}

// killWhenCopying SIGKILLs process pid once a session of a database whose
// name starts with prefix (the restore's side database) is in a COPY, so
// rows are going in, polling the server's activity; an error if pid exits
// first or no COPY is seen in 30 s.
func killWhenCopying(ctx context.Context, pid int, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for {
		var copying bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE starts_with(datname, $1) AND state = 'active' AND query ILIKE 'COPY %')`, prefix).Scan(&copying)
		if err != nil {
			return err
		}
		if copying {
			return syscall.Kill(pid, syscall.SIGKILL)
		}
		if err := syscall.Kill(pid, 0); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestCorruptArtifactFailsBeforeTarget flips one byte, in every restore
// mode: Restore and Verify fail with a ChecksumError naming the
// artifact, the target is untouched and no side or scratch database
// remains. Staged, the damage is found while the archive is copied:
// pg_restore never runs, and the partial copy is removed.
func TestCorruptArtifactFailsBeforeTarget(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", `CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g`)
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	db.exec(ctx, t, "", `DELETE FROM t WHERE id > 100`)
	before := db.snapshot(ctx, t, "")
	name := store.Names()[0]
	for _, m := range restoreModes {
		t.Run(m.name, func(t *testing.T) {
			src, staging := m.source(t, db.source())
			defer m.engine(e)()
			rec := &argvRecorder{}
			e.started = rec.started
			defer func() { e.started = nil }()
			// Flip a byte in the header too, where pg_restore fails at
			// once, long before the end of the stream.
			for _, at := range []string{"middle", "start"} {
				bad := store.Clone()
				if at == "middle" {
					bad.Flip(t, name)
				} else {
					bad.Bytes(name)[20] ^= 0x20
				}
				_, err := e.Restore(ctx, bad.RestoreJob(t, "corrupt-"+m.name, src, info, engines.RestoreOptions{}))
				var ce *engines.ChecksumError
				if !errors.As(err, &ce) || ce.Artifact != name {
					t.Errorf("Restore with a byte flipped at the %s: err = %v, want a ChecksumError naming %s", at, err, name)
				}
				rep, err := e.Verify(ctx, bad.RestoreJob(t, "corruptv-"+m.name, src, info, engines.RestoreOptions{}))
				if !errors.As(err, &ce) || ce.Artifact != name {
					t.Errorf("Verify with a byte flipped at the %s: err = %v, want a ChecksumError naming %s", at, err, name)
				}
				if rep == nil || rep.OK {
					t.Errorf("Verify with a byte flipped at the %s: report %+v, want not ok", at, rep)
				}
			}
			if m.staged && len(rec.argv) > 0 {
				t.Errorf("pg_restore ran (%q) on a damaged staged artifact", rec.argv)
			}
			emptyDir(t, staging)
			if diff := compareSnapshots(before, db.snapshot(ctx, t, "")); diff != "" {
				t.Errorf("the target changed: %s", diff)
			}
			if left := db.leftovers(ctx, t); len(left) > 0 {
				t.Errorf("side databases remain: %v", left)
			}
		})
	}
}

// TestVerifyChecksRowCounts verifies a good backup, then one whose
// recorded counts and tables disagree with its archive.
func TestVerifyChecksRowCounts(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", `CREATE SCHEMA s`,
		`CREATE TABLE s.a AS SELECT g AS id FROM generate_series(1, 1234) g`,
		`CREATE TABLE b (id int)`)
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	rep, err := e.Verify(ctx, store.RestoreJob(t, "v", db.source(), info, engines.RestoreOptions{}))
	if err != nil || !rep.OK {
		t.Fatalf("Verify of a good backup: %+v, %v", rep, err)
	}
	for _, c := range rep.Checks {
		t.Logf("check %s: ok=%v %s", c.Name, c.OK, c.Detail)
	}

	d, _ := readDetails(info)
	for i := range d.Databases[0].Tables {
		if d.Databases[0].Tables[i].Name == "a" {
			if d.Databases[0].Tables[i].Rows != 1234 {
				t.Fatalf("recorded %d rows for s.a, want 1234", d.Databases[0].Tables[i].Rows)
			}
			d.Databases[0].Tables[i].Rows = 1235
		}
	}
	d.Databases[0].Tables = append(d.Databases[0].Tables, tableInfo{Schema: "public", Name: "gone"})
	lying := info
	lying.Details, _ = toMap(d)
	rep, err = e.Verify(ctx, store.RestoreJob(t, "v2", db.source(), lying, engines.RestoreOptions{}))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.OK {
		t.Fatalf("Verify passed a backup whose recorded counts are wrong")
	}
	var details []string
	for _, c := range rep.Checks {
		if !c.OK {
			details = append(details, c.Detail)
		}
	}
	joined := strings.Join(details, " | ")
	if !strings.Contains(joined, "public.gone") || !strings.Contains(joined, "s.a has 1234 rows, the backup recorded 1235") {
		t.Errorf("failed checks do not name the problems: %s", joined)
	}
	if left := db.leftovers(ctx, t); len(left) > 0 {
		t.Errorf("scratch databases remain: %v", left)
	}
}

// TestAllDatabases backs up two databases and the roles of the server,
// loses one database and its owner role, and restores them all; then
// restores one database alone.
func TestAllDatabases(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	a, b, owner := db.name, db.name+"_b", db.name+"_owner"
	db.exec(ctx, t, "postgres",
		`CREATE ROLE `+ident(owner)+` NOLOGIN`,
		`COMMENT ON ROLE `+ident(owner)+` IS 'owns; things'`,
		`CREATE DATABASE `+ident(b))
	db.exec(ctx, t, a, `CREATE TABLE ta AS SELECT g AS id FROM generate_series(1, 1000) g`)
	db.exec(ctx, t, b, `CREATE TABLE tb AS SELECT g AS id, g * 2 AS v FROM generate_series(1, 2000) g`,
		`ALTER TABLE tb OWNER TO `+ident(owner))
	wantA, wantB := db.snapshot(ctx, t, a), db.snapshot(ctx, t, b)

	src := db.source()
	src.Config = map[string]any{
		"url":            fmt.Sprintf("postgres://%s@%s:%s/postgres", db.name, testHost, testPort),
		"sslmode":        "disable",
		"databases":      "all",
		"allowSuperuser": true,
	}
	e := New()
	// The server is shared: stay within this test's databases and roles.
	e.include = func(_, name string) bool { return strings.HasPrefix(name, db.name) }
	store, info := enginetest.Backup(ctx, t, e, src)
	names := store.Names()
	if want := []string{"globals.sql", "db-" + a + ".dump", "db-" + b + ".dump"}; strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("artifacts %v, want %v", names, want)
	}
	globals := string(store.Bytes("globals.sql"))
	if !strings.Contains(globals, "CREATE ROLE "+owner) {
		t.Errorf("globals.sql does not create role %s", owner)
	}
	if strings.Contains(globals, db.password) {
		t.Errorf("globals.sql holds the source's password")
	}

	// Disaster: database b and its owner are gone, a is damaged.
	db.exec(ctx, t, "postgres", `DROP DATABASE `+ident(b)+` WITH (FORCE)`, `DROP ROLE `+ident(owner))
	db.exec(ctx, t, a, `DELETE FROM ta WHERE id > 10`)

	// A corrupt artifact, whichever: nothing changes, and the role the
	// restore created before it met the damage is removed again.
	damaged := db.snapshot(ctx, t, a)
	for _, name := range names {
		bad := store.Clone()
		bad.Flip(t, name)
		_, err := e.Restore(ctx, bad.RestoreJob(t, "bad", src, info, engines.RestoreOptions{DropPrevious: true}))
		var ce *engines.ChecksumError
		if !errors.As(err, &ce) || ce.Artifact != name {
			t.Errorf("Restore with %s corrupt: err = %v, want a ChecksumError naming it", name, err)
		}
		if n := db.value(ctx, t, "postgres", `SELECT count(*)::text FROM pg_roles WHERE rolname = $1`, owner); n != "0" {
			t.Errorf("after a failed restore (%s corrupt) role %s exists", name, owner)
		}
		if n := db.value(ctx, t, "postgres", `SELECT count(*)::text FROM pg_database WHERE datname = $1`, b); n != "0" {
			t.Errorf("after a failed restore (%s corrupt) database %s exists", name, b)
		}
		if diff := compareSnapshots(damaged, db.snapshot(ctx, t, a)); diff != "" {
			t.Errorf("a failed restore (%s corrupt) changed %s: %s", name, a, diff)
		}
		if left := db.leftovers(ctx, t); len(left) > 0 {
			t.Errorf("side databases remain: %v", left)
		}
	}

	rinfo, err := e.Restore(ctx, store.RestoreJob(t, "all", src, info, engines.RestoreOptions{DropPrevious: true}))
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if rinfo.Previous != "" {
		t.Errorf("Previous = %q after DropPrevious", rinfo.Previous)
	}
	if diff := compareSnapshots(wantA, db.snapshot(ctx, t, a)); diff != "" {
		t.Errorf("database %s: %s", a, diff)
	}
	if diff := compareSnapshots(wantB, db.snapshot(ctx, t, b)); diff != "" {
		t.Errorf("database %s: %s", b, diff)
	}
	if c := db.value(ctx, t, "postgres", `SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1`, owner); c != "owns; things" {
		t.Errorf("restored role's comment = %q", c)
	}
	admin := adminConnect(ctx, t, "postgres")
	if dbs := db.databases(ctx, t, admin, ""); len(dbs) != 2 {
		t.Errorf("databases after restore with DropPrevious: %v, want %s and %s only", dbs, a, b)
	}
	admin.Close(ctx)

	// Restore b alone: a keeps its later change.
	db.exec(ctx, t, a, `INSERT INTO ta VALUES (-1)`)
	db.exec(ctx, t, b, `DELETE FROM tb`)
	rinfo, err = e.Restore(ctx, store.RestoreJob(t, "one", src, info, engines.RestoreOptions{Extra: map[string]string{OptDatabase: b}}))
	if err != nil {
		t.Fatalf("Restore of %s alone: %v", b, err)
	}
	if diff := compareSnapshots(wantB, db.snapshot(ctx, t, b)); diff != "" {
		t.Errorf("database %s: %s", b, diff)
	}
	if n := db.value(ctx, t, a, `SELECT count(*)::text FROM ta`); n != "1001" {
		t.Errorf("a restore of %s alone changed %s: %s rows", b, a, n)
	}
	if !strings.HasPrefix(rinfo.Previous, b+"_capsule_prev_") {
		t.Errorf("Previous = %q", rinfo.Previous)
	}

	rep, err := e.Verify(ctx, store.RestoreJob(t, "vall", src, info, engines.RestoreOptions{}))
	if err != nil || !rep.OK {
		t.Fatalf("Verify: %+v, %v", rep, err)
	}
	if len(rep.Checks) != 7 { // globals + 3 per database
		t.Errorf("Verify checks: %+v", rep.Checks)
	}
	if left := db.leftovers(ctx, t); len(left) > 0 {
		t.Errorf("side or scratch databases remain: %v", left)
	}

	// A one-database target restores the backed-up database of its name.
	one := db.source()
	if _, err := e.Restore(ctx, store.RestoreJob(t, "onesrc", one, info, engines.RestoreOptions{DropPrevious: true})); err != nil {
		t.Fatalf("Restore into a one-database source: %v", err)
	}
	if diff := compareSnapshots(wantA, db.snapshot(ctx, t, a)); diff != "" {
		t.Errorf("database %s: %s", a, diff)
	}
}

// TestRestoreIntoNewDatabase restores into a database that does not
// exist yet: the side database is renamed into place.
func TestRestoreIntoNewDatabase(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", `CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g`)
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	want := db.snapshot(ctx, t, "")
	fresh := db.name + "_copy"
	src := db.source()
	src.Config = map[string]any{"url": fmt.Sprintf("postgres://%s@%s:%s/%s", db.name, testHost, testPort, fresh), "sslmode": "disable", "allowSuperuser": true}
	rinfo, err := e.Restore(ctx, store.RestoreJob(t, "new", src, info, engines.RestoreOptions{}))
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if rinfo.Previous != "" {
		t.Errorf("Previous = %q for a database that did not exist", rinfo.Previous)
	}
	if diff := compareSnapshots(want, db.snapshot(ctx, t, fresh)); diff != "" {
		t.Errorf("restored copy differs: %s", diff)
	}
}

// TestNonSuperuser backs up and restores as a role that owns its
// database and may create databases, but is no superuser: objects come
// back owned by it (pg_restore --no-owner), and the swap works.
func TestNonSuperuser(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "postgres", `ALTER ROLE `+ident(db.name)+` NOSUPERUSER CREATEDB`)
	conn, err := connect(ctx, &conninfo{host: testHost, port: testPort, user: db.name, sslmode: "disable"}, db.password, db.name)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`CREATE EXTENSION pgcrypto`,
		`CREATE SCHEMA app`,
		`CREATE TABLE app.t AS SELECT g AS id, digest(g::text, 'sha1') AS h FROM generate_series(1, 5000) g`,
		`CREATE VIEW app.v AS SELECT count(*) FROM app.t`,
	} {
		mustExec(ctx, t, conn, s)
	}
	conn.Close(ctx)
	want := db.snapshot(ctx, t, "")
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	db.exec(ctx, t, "", `DROP SCHEMA app CASCADE`)
	rinfo, err := e.Restore(ctx, store.RestoreJob(t, "nosu", db.source(), info, engines.RestoreOptions{DropPrevious: true}))
	if err != nil {
		t.Fatalf("Restore as a non-superuser: %v", err)
	}
	if diff := compareSnapshots(want, db.snapshot(ctx, t, "")); diff != "" {
		t.Errorf("restored data differs: %s", diff)
	}
	if rinfo.Previous != "" {
		t.Errorf("Previous = %q after DropPrevious", rinfo.Previous)
	}
	if owner := db.value(ctx, t, "", `SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'app.t'::regclass`); owner != db.name {
		t.Errorf("restored table owned by %s, want %s", owner, db.name)
	}
}
