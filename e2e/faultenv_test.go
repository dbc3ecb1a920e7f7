package e2e

// Helpers of the fault suite (fault_test.go): workers behind fault
// proxies in process groups of their own, sources with distinct content,
// PostgreSQL and MariaDB databases of the test's own, and the checks that
// every request ended exactly once and nothing was left behind.

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
)

// faultLong says whether the long version of the fault suite runs
// (CAPSULE_FAULT_LONG=1): more requests, both fault rates in full, more
// kills and pauses.
func faultLong() bool { return os.Getenv("CAPSULE_FAULT_LONG") == "1" }

// faultSeed is the proxies' seed: CAPSULE_FAULT_SEED, else def. A failing
// run is repeated with the seed it logs.
func faultSeed(t *testing.T, def uint64) uint64 {
	t.Helper()
	seed := def
	if s := os.Getenv("CAPSULE_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CAPSULE_FAULT_SEED=%q: want a number", s)
		}
		seed = v
	}
	t.Logf("fault proxy seed %d (set CAPSULE_FAULT_SEED to change it)", seed)
	return seed
}

// urlVia is the cluster's bucket URL with the proxy as its endpoint.
func (c *cluster) urlVia(p *faultproxy.Proxy) string {
	return strings.Replace(c.url, "endpoint="+c.srv.Endpoint, "endpoint="+p.URL(), 1)
}

// startWorkerVia starts a worker whose bucket is bucketURL, in a process
// group of its own, so that SIGSTOP and SIGKILL reach the tools it runs
// (pg_restore, mariadb) as they reach everything in a frozen or lost pod.
func (c *cluster) startWorkerVia(name, bucketURL string) *workerProc {
	c.t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(binary, "--config", c.config, "--log-format", "json", "worker", "--name", name, "--concurrency", "2")
	cmd.Env = append(append([]string{}, c.env...), "CAPSULE_BUCKET="+bucketURL)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	w := &workerProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(w.done) }()
	c.mu.Lock()
	c.workers = append(c.workers, w)
	c.mu.Unlock()
	// A worker paused when the test ends would not stop on SIGTERM.
	c.t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT) })
	return w
}

// signalGroup sends sig to the worker and every process it started.
func signalGroup(t *testing.T, w *workerProc, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-w.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("%s to %s: %v", sig, w.name, err)
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leases reads every lease in the bucket, by request id.
func (c *cluster) leases() map[string]requests.Lease {
	ctx := context.Background()
	out := map[string]requests.Lease{}
	_ = bucket.Walk(ctx, c.b, requests.LeasesPrefix, func(o bucket.ObjectInfo) error {
		data, _, err := bucket.GetBytes(ctx, c.b, o.Key)
		if err != nil {
			return nil // finished meanwhile
		}
		var l requests.Lease
		if json.Unmarshal(data, &l) == nil {
			out[l.ID] = l
		}
		return nil
	})
	return out
}

// result reads a request's result; nil when it has none yet.
func (c *cluster) result(id string) *requests.Result {
	data, _, err := bucket.GetBytes(context.Background(), c.b, requests.ResultKey(id))
	if err != nil {
		return nil
	}
	var r requests.Result
	if err := json.Unmarshal(data, &r); err != nil {
		c.t.Fatalf("result %s: %v", id, err)
	}
	return &r
}

// logLine is one line of a worker's JSON log.
type logLine map[string]any

func (l logLine) str(k string) string {
	if v, ok := l[k]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// logLines reads a worker's log.
func logLines(t *testing.T, w *workerProc) []logLine {
	t.Helper()
	f, err := os.Open(w.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			lines = append(lines, l)
		}
	}
	return lines
}

// logged says whether w's log has a line with message msg about request id.
func logged(t *testing.T, w *workerProc, id, msg string) bool {
	t.Helper()
	for _, l := range logLines(t, w) {
		if l.str("msg") == msg && l.str("request_id") == id {
			return true
		}
	}
	return false
}

// finishedBy counts, per request id and worker, the "request finished"
// lines of every worker's log.
func (c *cluster) finishedBy() map[string]map[string]int {
	c.t.Helper()
	out := map[string]map[string]int{}
	for _, w := range c.workers {
		for _, l := range logLines(c.t, w) {
			if l.str("msg") != "request finished" {
				continue
			}
			id := l.str("request_id")
			if out[id] == nil {
				out[id] = map[string]int{}
			}
			out[id][w.name]++
		}
	}
	return out
}

// checkExactlyOnce checks that each request ended once: its result was
// written by the worker that logged finishing it, and no other worker
// logged finishing it. A worker killed between writing a result and
// logging it shows no finish: allowed for the workers in killed.
func (c *cluster) checkExactlyOnce(results map[string]*requests.Result, killed map[string]bool) {
	c.t.Helper()
	// A worker logs "request finished" just after writing the result:
	// give a live one a moment to say it.
	var fin map[string]map[string]int
	deadline := time.Now().Add(10 * time.Second)
	for {
		fin = c.finishedBy()
		silent := false
		for id, r := range results {
			silent = silent || (len(fin[id]) == 0 && !killed[r.Worker])
		}
		if !silent || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for id, r := range results {
		total := 0
		for _, n := range fin[id] {
			total += n
		}
		switch {
		case total > 1:
			c.t.Errorf("request %s was finished %d times: %v; the workers' lines about it:\n%s", id, total, fin[id], c.linesAbout(id))
		case total == 1 && fin[id][r.Worker] != 1:
			c.t.Errorf("request %s: result written by %s, but %v logged finishing it; the workers' lines about it:\n%s", id, r.Worker, fin[id], c.linesAbout(id))
		case total == 0 && !killed[r.Worker]:
			c.t.Errorf("request %s: result by %s, which is alive and never logged finishing it; the workers' lines about it:\n%s", id, r.Worker, c.linesAbout(id))
		default:
			continue
		}
	}
}

// linesAbout collects every worker's log lines that name request id.
func (c *cluster) linesAbout(id string) string {
	var b strings.Builder
	for _, w := range c.workers {
		data, _ := os.ReadFile(w.log)
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, id) {
				fmt.Fprintf(&b, "%s: %s\n", w.name, line)
			}
		}
	}
	return b.String()
}

// collectGarbage runs the bucket's garbage collector (retention's GC, any
// age) as a maintenance replica would.
func (c *cluster) collectGarbage() *retention.GCReport {
	c.t.Helper()
	log := logrus.New()
	log.Out = c.t.Output()
	r, err := retention.New(retention.Config{Bucket: c.b, Holder: "e2e-gc", Lease: 30 * time.Second, Log: log})
	if err != nil {
		c.t.Fatal(err)
	}
	rep, err := r.CollectGarbage(context.Background(), 0)
	if err != nil {
		c.t.Fatalf("garbage collection: %v", err)
	}
	return rep
}

// stagingLeft lists the restore staging and kept-previous directories
// under dir (recursively): .<target>.capsule-restore-*, .capsule-prev-*.
func stagingLeft(t *testing.T, dir string) []string {
	t.Helper()
	var left []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if strings.Contains(d.Name(), ".capsule-restore-") || strings.Contains(d.Name(), ".capsule-prev-") {
			left = append(left, p)
			return filepath.SkipDir
		}
		return nil
	})
	return left
}

// dirEntries lists what is in dir (nothing when it is missing).
func dirEntries(dir string) []string {
	es, _ := os.ReadDir(dir)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// makeTree fills dir with a small tree of random content: files of
// different sizes and modes, a nested directory and a symlink.
func makeTree(t *testing.T, dir string, size int) {
	t.Helper()
	mustDo(t, os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o750))
	for i, n := range []int{size, size / 3, 1} {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		mustDo(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("file%d.bin", i)), b, 0o640))
	}
	mustDo(t, os.WriteFile(filepath.Join(dir, "sub", "deeper", "notes.txt"), []byte(strings.Repeat(randHex(8)+"\n", 200)), 0o600))
	mustDo(t, os.Symlink("sub/deeper/notes.txt", filepath.Join(dir, "link")))
	old := time.Date(2021, 3, 4, 5, 6, 7, 891011, time.UTC)
	mustDo(t, os.Chtimes(filepath.Join(dir, "file0.bin"), old, old))
}

// pgServer is the local PostgreSQL, with databases named <prefix>_* that
// the test creates and drops, owned by the role <prefix>_owner (CREATEDB,
// not a superuser: the least privilege a restore accepts), as which
// capsule connects.
type pgServer struct {
	t      *testing.T
	prefix string
}

// role is the login role capsule's sources use.
func (pg *pgServer) role() string { return pg.prefix + "_owner" }

// url is a source's url for database db.
func (pg *pgServer) url(db string) string {
	return "postgres://" + pg.role() + "@127.0.0.1:5432/" + db
}

const pgURL = "postgres://postgres@127.0.0.1:5432/"

// needPostgres skips the test when the local PostgreSQL or its tools are
// missing (scripts/services.sh installs and starts them).
func needPostgres(t *testing.T) *pgServer {
	t.Helper()
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: run scripts/services.sh", tool)
		}
	}
	conn, err := pgx.Connect(context.Background(), pgURL+"postgres")
	if err != nil {
		t.Skipf("no PostgreSQL on 127.0.0.1:5432 with trust auth for postgres (run scripts/services.sh): %v", err)
	}
	_ = conn.Close(context.Background())
	pg := &pgServer{t: t, prefix: "cf_" + randHex(4)}
	pg.exec("postgres", "CREATE ROLE "+pg.role()+" LOGIN CREATEDB")
	t.Cleanup(pg.dropAll)
	return pg
}

func (pg *pgServer) exec(db, q string, args ...any) {
	pg.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL+db)
	if err != nil {
		pg.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, q, args...); err != nil {
		pg.t.Fatalf("postgres %s: %s: %v", db, q, err)
	}
}

// databases lists this test's databases whose names contain infix.
func (pg *pgServer) databases(infix string) []string {
	pg.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL+"postgres")
	if err != nil {
		pg.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1) AND strpos(datname, $2) > 0 ORDER BY 1`, pg.prefix+"_", infix)
	if err != nil {
		pg.t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		pg.t.Fatal(err)
	}
	return names
}

func (pg *pgServer) dropAll() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL+"postgres")
	if err != nil {
		pg.t.Logf("drop the test's databases: %v", err)
		return
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, pg.prefix+"_")
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, n := range names {
		if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{n}.Sanitize()+` WITH (FORCE)`); err != nil {
			pg.t.Logf("drop database %s: %v", n, err)
		}
	}
	if _, err := conn.Exec(ctx, `DROP ROLE IF EXISTS `+pg.role()); err != nil {
		pg.t.Logf("drop role %s: %v", pg.role(), err)
	}
}

// createSource creates database name with two tables of random rows.
func (pg *pgServer) createSource(name string, rows int) {
	pg.t.Helper()
	pg.exec("postgres", "CREATE DATABASE "+name+" OWNER "+pg.role())
	pg.exec(name, `SET ROLE `+pg.role()+`;
CREATE TABLE accounts(id int PRIMARY KEY, owner text NOT NULL, balance numeric);
CREATE TABLE events(id bigserial PRIMARY KEY, account int REFERENCES accounts(id), payload jsonb, at timestamptz);
CREATE INDEX ON events(account)`)
	pg.exec(name, `INSERT INTO accounts SELECT g, md5(random()::text), round((random()*1e6)::numeric, 2) FROM generate_series(1, $1) g`, rows)
	pg.exec(name, `INSERT INTO events(account, payload, at) SELECT 1 + (g % $1), jsonb_build_object('n', g, 'r', md5(random()::text)), now() - g * interval '1 minute' FROM generate_series(1, $1 * 2) g`, rows)
}

// digest is the content of every table of database db: names, row
// counts and an md5 of the rows in order.
func (pg *pgServer) digest(db string) string {
	pg.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL+db)
	if err != nil {
		pg.t.Fatalf("connect to %s: %v", db, err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`)
	if err != nil {
		pg.t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		pg.t.Fatal(err)
	}
	var b strings.Builder
	for _, tb := range tables {
		var n int64
		var sum string
		q := fmt.Sprintf(`SELECT count(*), md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '')) FROM public.%s t`, pgx.Identifier{tb}.Sanitize())
		if err := conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
			pg.t.Fatalf("digest %s.%s: %v", db, tb, err)
		}
		fmt.Fprintf(&b, "%s:%d:%s;", tb, n, sum)
	}
	return b.String()
}

// mariaServer is the local MariaDB, with schemas named <prefix>_* that
// the test creates and drops.
type mariaServer struct {
	t      *testing.T
	db     *sql.DB
	prefix string
}

func needMariaDB(t *testing.T) *mariaServer {
	t.Helper()
	if _, err := exec.LookPath("mariadb-dump"); err != nil {
		if _, err := exec.LookPath("mysqldump"); err != nil {
			t.Skip("mariadb-dump not installed: run scripts/services.sh")
		}
	}
	db, err := sql.Open("mysql", "root@tcp(127.0.0.1:3306)/")
	if err == nil {
		err = db.Ping()
	}
	if err != nil {
		t.Skipf("no MariaDB on 127.0.0.1:3306 for root without a password (run scripts/services.sh): %v", err)
	}
	m := &mariaServer{t: t, db: db, prefix: "cf_" + randHex(4)}
	t.Cleanup(func() {
		for _, s := range m.schemas("") {
			if _, err := db.Exec("DROP DATABASE IF EXISTS `" + s + "`"); err != nil {
				t.Logf("drop schema %s: %v", s, err)
			}
		}
		db.Close()
	})
	return m
}

func (m *mariaServer) exec(q string) {
	m.t.Helper()
	if _, err := m.db.Exec(q); err != nil {
		m.t.Fatalf("mariadb: %s: %v", q, err)
	}
}

// schemas lists this test's schemas whose names contain infix.
func (m *mariaServer) schemas(infix string) []string {
	m.t.Helper()
	rows, err := m.db.Query(`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE CONCAT(?, '\_%') AND INSTR(SCHEMA_NAME, ?) > 0 ORDER BY 1`, m.prefix, infix)
	if err != nil {
		m.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			m.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// digest is the content of every table of schema s.
func (m *mariaServer) digest(s string) string {
	m.t.Helper()
	rows, err := m.db.Query(`SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1`, s)
	if err != nil {
		m.t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			m.t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	sort.Strings(tables)
	var b strings.Builder
	for _, tb := range tables {
		var n int64
		var sum sql.NullString
		// Order-free: CRC32 of every row, summed and xored.
		q := fmt.Sprintf("SELECT COUNT(*), CONCAT(COALESCE(SUM(CRC32(CONCAT_WS('|', id, name, amount))), 0), '/', COALESCE(BIT_XOR(CRC32(CONCAT_WS('|', id, name, amount))), 0)) FROM `%s`.`%s`", s, tb)
		if err := m.db.QueryRow(q).Scan(&n, &sum); err != nil {
			m.t.Fatalf("digest %s.%s: %v", s, tb, err)
		}
		fmt.Fprintf(&b, "%s:%d:%s;", tb, n, sum.String)
	}
	return b.String()
}
