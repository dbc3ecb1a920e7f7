package mysql

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

const serverAddr = "127.0.0.1:3306"

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func connect(t testing.TB, user, pw, db string) *sql.DB {
	t.Helper()
	c := driver.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, pw, "tcp", serverAddr, db
	c.Collation = "utf8mb4_general_ci"
	c.Timeout = 5 * time.Second
	conn, err := driver.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	d := sql.OpenDB(conn)
	if err := d.Ping(); err != nil {
		d.Close()
		var ne net.Error
		if errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused") {
			t.Skipf("no MariaDB at %s: %v", serverAddr, err)
		}
		t.Fatalf("connect as %s: %v", user, err)
	}
	return d
}

// fixture is a fresh user with a password and a fresh database prefix,
// dropped when the test ends.
type fixture struct {
	prefix   string // every database of the test starts with it
	user     string
	password string
	admin    *sql.DB
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	admin := connect(t, "root", "", "")
	id := randHex(5)
	f := &fixture{prefix: "capsule_test_" + id, user: "capsule_t_" + id, password: "Pw!" + randHex(12) + "'\"\\", admin: admin}
	mustExec(t, admin, fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", f.user, strings.NewReplacer(`\`, `\\`, "'", "''").Replace(f.password)))
	// A restore loads the dump as a temporary account that it creates
	// and grants the side schemas: CREATE USER, and GRANT OPTION there.
	mustExec(t, admin, fmt.Sprintf("GRANT ALL PRIVILEGES ON `%s%%`.* TO '%s'@'%%' WITH GRANT OPTION", strings.ReplaceAll(f.prefix, "_", `\_`), f.user))
	mustExec(t, admin, fmt.Sprintf("GRANT CREATE USER ON *.* TO '%s'@'%%'", f.user))
	mustExec(t, admin, fmt.Sprintf("GRANT SELECT ON mysql.proc TO '%s'@'%%'", f.user))
	t.Cleanup(func() {
		rows, err := admin.Query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?", strings.ReplaceAll(f.prefix, "_", `\_`)+"%")
		if err == nil {
			var names []string
			for rows.Next() {
				var n string
				rows.Scan(&n)
				names = append(names, n)
			}
			rows.Close()
			for _, n := range names {
				admin.Exec("DROP DATABASE " + quoteName(n))
			}
		}
		admin.Exec(fmt.Sprintf("DROP USER '%s'@'%%'", f.user))
		admin.Close()
	})
	return f
}

func mustExec(t testing.TB, db interface {
	Exec(string, ...any) (sql.Result, error)
}, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func (f *fixture) source(settings map[string]any) engines.Source {
	cfg := map[string]any{"url": fmt.Sprintf("mysql://%s@%s/%s", f.user, serverAddr, f.prefix)}
	for k, v := range settings {
		cfg[k] = v
	}
	return engines.Source{Name: "test/mysql", Engine: "mysql", Config: cfg,
		Password: func(context.Context) (string, error) { return f.password, nil }}
}

// seed creates db (as the test user, who is then the definer) with
// tables of many types, a foreign key, a trigger, a view, a procedure
// and a function.
func (f *fixture) seed(t testing.TB, db string) {
	t.Helper()
	mustExec(t, f.admin, "DROP DATABASE IF EXISTS "+quoteName(db))
	mustExec(t, f.admin, "CREATE DATABASE "+quoteName(db)+" CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
	c := connect(t, f.user, f.password, db)
	defer c.Close()
	for _, q := range []string{
		`CREATE TABLE accounts (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, balance DECIMAL(20,6) NOT NULL,
			meta JSON, created DATETIME(6), avatar BLOB, note TEXT) ENGINE=InnoDB`,
		`CREATE TABLE orders (id BIGINT PRIMARY KEY, account_id INT NOT NULL, amount DECIMAL(10,2), ts TIMESTAMP(3) NULL,
			CONSTRAINT fk_acc FOREIGN KEY (account_id) REFERENCES accounts(id)) ENGINE=InnoDB`,
		`CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(200))`,
		`CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit(msg) VALUES (CONCAT('order ', NEW.id))`,
		`CREATE VIEW totals AS SELECT a.name, SUM(o.amount) AS total FROM accounts a JOIN orders o ON o.account_id = a.id GROUP BY a.name`,
		`CREATE VIEW big_totals AS SELECT name FROM totals WHERE total > 10`,
		`CREATE PROCEDURE add_order(IN oid BIGINT, IN acc INT, IN amt DECIMAL(10,2)) INSERT INTO orders(id, account_id, amount, ts) VALUES (oid, acc, amt, '2024-05-06 07:08:09.123')`,
		`CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2`,
	} {
		mustExec(t, c, q)
	}
	blob := make([]byte, 256)
	for i := range blob {
		blob[i] = byte(i)
	}
	mustExec(t, c, `INSERT INTO accounts(name, balance, meta, created, avatar, note) VALUES
		('héllo 🚀 世界', 12345678901234.123456, '{"a": [1, 2, {"b": null}], "s": "ü"}', '2024-01-02 03:04:05.123456', ?, 'line1\nline2\ttab ''quote'' \\ back'),
		('zero', 0, NULL, NULL, NULL, NULL),
		('neg', -0.000001, '[]', '1999-12-31 23:59:59.999999', '', '')`, blob)
	mustExec(t, c, "CALL add_order(1, 1, 10.50)")
	mustExec(t, c, "CALL add_order(2, 1, 20.25)")
	mustExec(t, c, "CALL add_order(3, 3, 0.01)")
}

// snapshot is every table's rows and definition, and every other
// object's definition, of one database.
func (f *fixture) snapshot(t testing.TB, db string) map[string]any {
	t.Helper()
	snap := map[string]any{}
	rows, err := f.admin.Query("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME", db)
	if err != nil {
		t.Fatal(err)
	}
	type tbl struct{ name, typ string }
	var tables []tbl
	for rows.Next() {
		var x tbl
		rows.Scan(&x.name, &x.typ)
		tables = append(tables, x)
	}
	rows.Close()
	for _, x := range tables {
		q := fmt.Sprintf("%s.%s", quoteName(db), quoteName(x.name))
		if x.typ == "VIEW" {
			var n, def, cs, coll string
			if err := f.admin.QueryRow("SHOW CREATE VIEW "+q).Scan(&n, &def, &cs, &coll); err != nil {
				t.Fatal(err)
			}
			snap["view "+x.name] = def
			snap["view rows "+x.name] = queryAll(t, f.admin, "SELECT * FROM "+q+" ORDER BY 1")
			continue
		}
		var n, def string
		if err := f.admin.QueryRow("SHOW CREATE TABLE "+q).Scan(&n, &def); err != nil {
			t.Fatal(err)
		}
		snap["table "+x.name] = def
		snap["rows "+x.name] = queryAll(t, f.admin, "SELECT * FROM "+q+" ORDER BY 1")
	}
	snap["triggers"] = queryAll(t, f.admin, "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER, ACTION_STATEMENT, SQL_MODE, DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY 1", db)
	snap["routines"] = queryAll(t, f.admin, "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION, SQL_MODE, DEFINER, IS_DETERMINISTIC FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY 1", db)
	return snap
}

func queryAll(t testing.TB, db *sql.DB, q string, args ...any) [][]string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]string
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(cols))
		for i, v := range vals {
			if v == nil {
				row[i] = "NULL"
			} else {
				row[i] = fmt.Sprintf("%q", v)
			}
		}
		out = append(out, row)
	}
	return out
}

// service is the enginetest.Service for one database of the fixture.
type service struct {
	f  *fixture
	db string
}

func (s *service) Source(t *testing.T) engines.Source             { return s.f.source(nil) }
func (s *service) Seed(ctx context.Context, t *testing.T)         { s.f.seed(t, s.db) }
func (s *service) Snapshot(ctx context.Context, t *testing.T) any { return s.f.snapshot(t, s.db) }
func (s *service) Damage(ctx context.Context, t *testing.T) {
	c := connect(t, s.f.user, s.f.password, s.db)
	defer c.Close()
	mustExec(t, c, "DROP VIEW big_totals")
	mustExec(t, c, "DROP TRIGGER orders_ai")
	mustExec(t, c, "DROP PROCEDURE add_order")
	mustExec(t, c, "UPDATE accounts SET balance = 0, note = 'damaged'")
	mustExec(t, c, "DELETE FROM orders WHERE id = 2")
	mustExec(t, c, "CREATE TABLE junk (x INT)")
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	enginetest.Run(t, New(), &service{f: f, db: f.prefix}, enginetest.Options{})
}

// TestObjectsWorkAfterRestore restores over a damaged database and uses
// the trigger, the procedure, the function and the views in their final
// place; the replaced tables are kept in the prev schema, or dropped.
func TestObjectsWorkAfterRestore(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.seed(t, f.prefix)
	svc := &service{f: f, db: f.prefix}
	store, info := enginetest.Backup(ctx, t, New(), f.source(nil))
	svc.Damage(ctx, t)
	rinfo, err := New().Restore(ctx, store.RestoreJob(t, "objs", f.source(nil), info, engines.RestoreOptions{}))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !strings.HasPrefix(rinfo.Previous, f.prefix+"_capsule_prev_") {
		t.Errorf("Previous = %q", rinfo.Previous)
	}
	prev := queryAll(t, f.admin, "SELECT note FROM "+quoteName(rinfo.Previous)+".accounts ORDER BY id")
	if len(prev) != 3 || prev[0][0] != `"damaged"` {
		t.Errorf("the previous tables are not kept: %v", prev)
	}
	if got := queryAll(t, f.admin, "SHOW TRIGGERS FROM "+quoteName(rinfo.Previous)); len(got) != 0 {
		t.Errorf("prev kept a trigger the damaged database no longer had: %v", got)
	}
	c := connect(t, f.user, f.password, f.prefix)
	defer c.Close()
	mustExec(t, c, "CALL add_order(4, 3, 99.99)")
	if got := queryAll(t, c, "SELECT msg FROM audit ORDER BY id"); len(got) != 4 || got[3][0] != `"order 4"` {
		t.Errorf("the trigger does not fire in the restored database: %v", got)
	}
	var two int
	if err := c.QueryRow("SELECT twice(21)").Scan(&two); err != nil || two != 42 {
		t.Errorf("twice(21) = %d, %v", two, err)
	}
	if got := queryAll(t, c, "SELECT * FROM big_totals"); len(got) != 2 {
		t.Errorf("big_totals = %v", got)
	}
	left := queryAll(t, f.admin, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?", f.prefix+"\\_capsule\\_restore%")
	if len(left) != 0 {
		t.Errorf("side schemas left behind: %v", left)
	}

	// Again: the replaced tables keep their trigger in prev.
	rinfo, err = New().Restore(ctx, store.RestoreJob(t, "again", f.source(nil), info, engines.RestoreOptions{}))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := queryAll(t, f.admin, "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?", rinfo.Previous); len(got) != 1 || got[0][0] != `"orders_ai"` {
		t.Errorf("prev triggers = %v, want orders_ai", got)
	}

	// Again with DropPrevious: nothing is kept.
	rinfo, err = New().Restore(ctx, store.RestoreJob(t, "drop", f.source(nil), info, engines.RestoreOptions{DropPrevious: true}))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if rinfo.Previous != "" {
		t.Errorf("Previous = %q with DropPrevious", rinfo.Previous)
	}
	if got := queryAll(t, f.admin, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?", f.prefix+"\\_capsule\\_prev%"); len(got) != 2 {
		t.Errorf("prev schemas after a DropPrevious restore: %v (want only the two earlier restores')", got)
	}
}

// TestConsistentDuringWrites backs up two databases while transactions
// write to both; the restore holds one point in time: every transaction
// wholly or not at all.
func TestConsistentDuringWrites(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	a, b := f.prefix+"_a", f.prefix+"_b"
	for _, db := range []string{a, b} {
		mustExec(t, f.admin, "CREATE DATABASE "+quoteName(db))
	}
	c := connect(t, f.user, f.password, "")
	defer c.Close()
	mustExec(t, c, "CREATE TABLE "+quoteName(a)+".acct (id INT PRIMARY KEY, bal BIGINT)")
	mustExec(t, c, "INSERT INTO "+quoteName(a)+".acct VALUES (1, 1000000), (2, 0)")
	mustExec(t, c, "CREATE TABLE "+quoteName(a)+".pa (id INT PRIMARY KEY)")
	mustExec(t, c, "CREATE TABLE "+quoteName(b)+".pb (id INT PRIMARY KEY)")
	mustExec(t, c, "CREATE TABLE "+quoteName(b)+".filler (id INT PRIMARY KEY, pad VARCHAR(200))")
	for i := 0; i < 40; i++ {
		var vals []string
		for j := 0; j < 1000; j++ {
			vals = append(vals, fmt.Sprintf("(%d, REPEAT('x', 150))", i*1000+j))
		}
		mustExec(t, c, "INSERT INTO "+quoteName(b)+".filler VALUES "+strings.Join(vals, ","))
	}
	var n atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			tx, err := c.Begin()
			if err != nil {
				t.Error(err)
				return
			}
			for _, q := range []string{
				fmt.Sprintf("INSERT INTO %s.pa VALUES (%d)", quoteName(a), i),
				fmt.Sprintf("INSERT INTO %s.pb VALUES (%d)", quoteName(b), i),
				fmt.Sprintf("UPDATE %s.acct SET bal = bal - 1 WHERE id = 1", quoteName(a)),
				fmt.Sprintf("UPDATE %s.acct SET bal = bal + 1 WHERE id = 2", quoteName(a)),
			} {
				if _, err := tx.Exec(q); err != nil {
					t.Error(err)
					tx.Rollback()
					return
				}
			}
			if err := tx.Commit(); err != nil {
				t.Error(err)
				return
			}
			n.Store(int64(i))
		}
	}()
	for n.Load() < 50 {
		time.Sleep(time.Millisecond)
	}
	src := f.source(map[string]any{"databases": []string{a, b}})
	store, info := enginetest.Backup(ctx, t, New(), src)
	close(stop)
	wg.Wait()
	final := n.Load()
	if _, err := New().Restore(ctx, store.RestoreJob(t, "cons", src, info, engines.RestoreOptions{DropPrevious: true})); err != nil {
		t.Fatalf("restore: %v", err)
	}
	var na, nb, sum, maxA int64
	f.admin.QueryRow("SELECT COUNT(*), COALESCE(MAX(id),0) FROM "+quoteName(a)+".pa").Scan(&na, &maxA)
	f.admin.QueryRow("SELECT COUNT(*) FROM " + quoteName(b) + ".pb").Scan(&nb)
	f.admin.QueryRow("SELECT SUM(bal) FROM " + quoteName(a) + ".acct").Scan(&sum)
	var bal2 int64
	f.admin.QueryRow("SELECT bal FROM " + quoteName(a) + ".acct WHERE id = 2").Scan(&bal2)
	t.Logf("restored %d transactions of %d", na, final)
	if na != nb || na != maxA || bal2 != na || sum != 1000000 {
		t.Fatalf("not one point in time: %d rows in a, %d in b, max id %d, balance 2 = %d, sum %d", na, nb, maxA, bal2, sum)
	}
	if na < 50 || na > final {
		t.Fatalf("restored %d transactions; the backup started after 50 and ended by %d", na, final)
	}
	if got := queryAll(t, f.admin, "SELECT COUNT(*) FROM "+quoteName(b)+".filler"); got[0][0] != `"40000"` {
		t.Errorf("filler rows %v", got)
	}
}

// TestNoSecretLeaks watches every process's argv while the tools run, and
// the logs, the BackupInfo, errors and the option file.
func TestNoSecretLeaks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.seed(t, f.prefix)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	// A secret of the worker's own environment, which no tool may see.
	canary := "canary-" + randHex(8)
	t.Setenv("AWS_SECRET_ACCESS_KEY", canary)
	var envLeak atomic.Value
	var sawEnv atomic.Bool
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)
	log.SetLevel(logrus.DebugLevel)

	var sawTool, sawCnf atomic.Bool
	private := filepath.Join(tmp, fmt.Sprintf("capsule-%d", os.Getuid()))
	var leak atomic.Value
	var badMode atomic.Value
	watch := func() func() {
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
				for _, p := range files {
					b, err := os.ReadFile(p)
					if err != nil {
						continue
					}
					if bytes.Contains(b, []byte("--defaults-file=")) {
						sawTool.Store(true)
						if env, err := os.ReadFile(filepath.Join(filepath.Dir(p), "environ")); err == nil && len(env) > 0 {
							sawEnv.Store(true)
							if bytes.Contains(env, []byte(canary)) {
								envLeak.Store(string(bytes.ReplaceAll(env, []byte{0}, []byte{' '})))
							}
						}
					}
					if bytes.Contains(b, []byte(f.password)) {
						leak.Store(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
					}
				}
				// Option files live in a private directory of their own.
				cnfs, _ := filepath.Glob(filepath.Join(private, "run-*", "*.cnf"))
				for _, c := range cnfs {
					sawCnf.Store(true)
					if st, err := os.Stat(c); err == nil && st.Mode().Perm() != 0o600 {
						badMode.Store(c + " " + st.Mode().String())
					}
					if st, err := os.Stat(filepath.Dir(c)); err == nil && st.Mode().Perm() != 0o700 {
						badMode.Store(filepath.Dir(c) + " " + st.Mode().String())
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		return func() { close(done); wg.Wait() }
	}

	stop := watch()
	var (
		store *enginetest.Store
		info  *engines.BackupInfo
		rinfo *engines.RestoreInfo
	)
	// The watcher polls /proc; on a quiet machine the tools can start and
	// end between two polls (seen in CI), so the backup and restore run
	// again, up to five times, until it has seen a tool and read its
	// environment. Every run's processes are checked for leaks.
	for try := 0; try == 0 || try < 5 && !(sawTool.Load() && sawEnv.Load()); try++ {
		store = enginetest.NewStore()
		var err error
		info, err = New().Backup(ctx, &engines.BackupJob{ID: "leak", Source: f.source(nil), Artifacts: store, Log: log})
		if err != nil {
			stop()
			t.Fatalf("backup: %v", err)
		}
		job := store.RestoreJob(t, "leak", f.source(nil), *info, engines.RestoreOptions{DropPrevious: true})
		job.Log = log
		rinfo, err = New().Restore(ctx, job)
		if err != nil {
			stop()
			t.Fatalf("restore: %v", err)
		}
	}
	stop()
	_, badErr := New().Backup(ctx, &engines.BackupJob{ID: "bad", Source: engines.Source{Name: "x", Engine: "mysql", Config: f.source(nil).Config,
		Password: func(context.Context) (string, error) { return f.password + "nope", nil }}, Artifacts: enginetest.NewStore(), Log: log})
	if badErr == nil {
		t.Errorf("backup with a wrong password succeeded")
	}
	if !sawTool.Load() {
		t.Errorf("the argv watcher never saw a tool run: the check proved nothing")
	}
	if v := leak.Load(); v != nil {
		t.Errorf("the password is in a process's argv: %s", v)
	}
	if !sawEnv.Load() {
		t.Errorf("the watcher never read a tool's environment: the check proved nothing")
	}
	if v := envLeak.Load(); v != nil {
		t.Errorf("a tool sees the worker's AWS_SECRET_ACCESS_KEY: %s", v)
	}
	if v := badMode.Load(); v != nil {
		t.Errorf("an option file or its directory had mode %s", v)
	}
	if !sawCnf.Load() {
		t.Errorf("the watcher never saw an option file in %s: the mode check proved nothing", private)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) != 1 || left[0] != private {
		t.Errorf("files left in TMPDIR: %v, want only %s", left, private)
	}
	if left, _ := filepath.Glob(filepath.Join(private, "*")); len(left) != 0 {
		t.Errorf("files left in the private directory: %v", left)
	}
	ij, _ := json.Marshal(info)
	rj, _ := json.Marshal(rinfo)
	for what, text := range map[string]string{"logs": logs.String(), "BackupInfo": string(ij), "RestoreInfo": string(rj), "error": fmt.Sprint(badErr), "artifact": string(store.Bytes(artifactDump))} {
		if strings.Contains(text, f.password) {
			t.Errorf("the password is in the %s", what)
		}
	}
}

func TestSideName(t *testing.T) {
	long := strings.Repeat("d", 64)
	a, b := sideName(long, "restore", "01hzzzzzzzzzzzzzzzzzzzzzzz", 1), sideName(long[:63]+"e", "restore", "01hzzzzzzzzzzzzzzzzzzzzzzz", 1)
	if len(a)+strings.Count(a, "_") > 64 || a == b {
		t.Errorf("side names %q %q", a, b)
	}
	if got := sideName("db", "prev", "req1x", 2); got != "db_capsule_prev_req1x_a2" {
		t.Errorf("sideName = %q", got)
	}
	// Ids that clean to the same text, or share a long prefix, keep
	// different names; attempts never share one, however long the names.
	seen := map[string]string{}
	for _, id := range []string{"req.1-x", "req-1.x", "req_1_x", strings.Repeat("r", 60) + "1", strings.Repeat("r", 60) + "2"} {
		for _, db := range []string{"db", long} {
			for _, attempt := range []int{1, 2, 11, 100} {
				n := sideName(db, "restore", id, attempt)
				key := fmt.Sprintf("%s %s %d", db, id, attempt)
				if len(n)+strings.Count(n, "_") > 64 || !strings.HasSuffix(n, fmt.Sprintf("_a%d", attempt)) {
					t.Errorf("sideName(%s) = %q", key, n)
				}
				if other, dup := seen[n]; dup {
					t.Errorf("sideName(%s) = sideName(%s) = %q", key, other, n)
				}
				seen[n] = key
			}
		}
	}
}

func TestValidate(t *testing.T) {
	e := New()
	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"url": "mysql://u@h:3306/db"}, ""},
		{map[string]any{"url": "mysql://u@h/db", "databases": []string{"a", "b"}, "passwordEnv": "X"}, ""},
		{map[string]any{"url": "mysql://u@h", "databases": "all", "passwordFile": "/f"}, ""},
		{map[string]any{"url": "mysql://u@h"}, "databases"},
		{map[string]any{"url": "mysql://u:secretpw@h/db"}, "password"},
		{map[string]any{"url": "mysql://h/db"}, "user"},
		{map[string]any{"url": "postgres://u@h/db"}, "scheme"},
		{map[string]any{"url": "mysql://u@h/db", "databases": []string{"mysql"}}, "system"},
		{map[string]any{"url": "mysql://u@h/db", "databases": []string{"a`b"}}, "databases"},
		{map[string]any{"url": "mysql://u@h/db", "databases": "some"}, "databases"},
		{map[string]any{"url": "mysql://u@h/db", "nope": 1}, "nope"},
	} {
		err := e.Validate(engines.Source{Name: "s", Engine: "mysql", Config: tc.cfg})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Validate(%v) = %v, want nil", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Validate(%v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

// TestRoutinesOfAnotherCharset: when a database's default character set
// is not the one its routines were made under, mariadb-dump switches the
// database's character set around each routine (ALTER DATABASE `db` …).
// The restore points those lines at the side schema: the live database
// keeps its character set, and the routines come back.
func TestRoutinesOfAnotherCharset(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.seed(t, f.prefix)
	mustExec(t, f.admin, "ALTER DATABASE "+quoteName(f.prefix)+" CHARACTER SET latin1 COLLATE latin1_swedish_ci")
	store, info := enginetest.Backup(ctx, t, New(), f.source(nil))
	if !strings.Contains(string(store.Bytes(artifactDump)), "ALTER DATABASE "+quoteName(f.prefix)+" CHARACTER SET") {
		t.Fatalf("the dump does not switch the database's character set: the test proves nothing")
	}
	want := f.snapshot(t, f.prefix)
	mustExec(t, f.admin, "DROP PROCEDURE "+quoteName(f.prefix)+".add_order")
	if _, err := New().Restore(ctx, store.RestoreJob(t, "cs", f.source(nil), info, engines.RestoreOptions{DropPrevious: true})); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if d := enginetest.DeepCompare(want, f.snapshot(t, f.prefix)); d != "" {
		t.Errorf("restored database differs: %s", d)
	}
	if got := queryAll(t, f.admin, "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", f.prefix); len(got) != 1 || got[0][0] != `"latin1"` {
		t.Errorf("the database's character set is %v, want latin1", got)
	}
}

// Staging lists the side schemas of the test's databases
// (enginetest.StagingLister).
func (s *service) Staging(ctx context.Context, t *testing.T) []string {
	t.Helper()
	c := connect(t, "root", "", "")
	defer c.Close()
	rows, err := c.QueryContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ? AND (SCHEMA_NAME LIKE '%\\_capsule\\_restore\\_%' OR SCHEMA_NAME LIKE '%\\_capsule\\_verify\\_%')", s.f.prefix+"%")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var left []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		left = append(left, n)
	}
	return left
}
