package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/index"
	"github.com/klauspost/compress/zstd"
)

func psql(t *testing.T, db, sql string) string {
	t.Helper()
	out, err := exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestPostgresThroughTheWorkerLeaksNoSecret runs a PostgreSQL backup and
// restore through the real worker binary with a real password, and looks
// for the password everywhere it must never be: every object in the
// bucket (decompressed too), the worker's log, the CLI's output, and the
// argv of every process on the machine while the work runs.
func TestPostgresThroughTheWorkerLeaksNoSecret(t *testing.T) {
	if _, err := exec.LookPath("pg_dump"); err != nil {
		t.Skip("pg_dump not installed: run scripts/services.sh")
	}
	if err := exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atc", "select 1").Run(); err != nil {
		t.Skipf("no PostgreSQL on 127.0.0.1:5432 with trust auth for postgres (run scripts/services.sh): %v", err)
	}
	suffix := randHex(4)
	role, db, password := "capsule_e2e_"+suffix, "capsule_e2e_"+suffix, "pw-"+randHex(12)
	psql(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'", role, password))
	psql(t, "postgres", fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, role))
	t.Cleanup(func() {
		_ = exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atc",
			fmt.Sprintf("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname LIKE '%s%%'", db)).Run()
		out, _ := exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atc",
			fmt.Sprintf("SELECT datname FROM pg_database WHERE datname LIKE '%s%%'", db)).Output()
		for _, name := range strings.Fields(string(out)) {
			_ = exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", "DROP DATABASE IF EXISTS "+name).Run()
		}
		_ = exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", "DROP ROLE IF EXISTS "+role).Run()
	})
	psql(t, db, fmt.Sprintf("SET ROLE %s; CREATE TABLE accounts(id int primary key, owner text, balance numeric); INSERT INTO accounts SELECT g, md5(g::text), g*1.5 FROM generate_series(1, 20000) g", role))

	c := newCluster(t, 1024)
	cfg := fmt.Sprintf(`cluster: e2e
worker:
  poll: 200ms
  lease: 3s
sources:
  pg:
    engine: postgres
    url: postgres://%s@127.0.0.1:5432/%s
    passwordEnv: CAPSULE_E2E_PG_PASSWORD
`, role, db)
	mustDo(t, os.WriteFile(c.config, []byte(cfg), 0o600))
	c.env = append(c.env, "CAPSULE_E2E_PG_PASSWORD="+password)

	// Watch every process's argv while the work runs.
	stopWatch := enginetest.WatchArgv(t, password, 2*time.Millisecond)
	w := c.startWorker("w1")
	out := c.capsule(0, "backup", "pg", "--wait", "-o", "json")
	psql(t, db, "DELETE FROM accounts WHERE id % 2 = 0")
	var entries []index.Entry
	mustDo(t, json.Unmarshal([]byte(c.capsule(0, "ls", "--source", "pg", "-o", "json")), &entries))
	if len(entries) != 1 {
		t.Fatalf("ls: %d backups, want 1", len(entries))
	}
	id := entries[0].BackupID
	out += c.capsule(0, "restore", id, "--drop-previous", "--wait", "-o", "json")
	stopWatch()
	if got := psql(t, db, "SELECT count(*) FROM accounts"); got != "20000" {
		t.Fatalf("after restore: %s rows, want 20000", got)
	}
	if strings.Contains(out, password) {
		t.Errorf("the password is in the CLI's output")
	}
	c.stopAll()
	if logData, _ := os.ReadFile(w.log); bytes.Contains(logData, []byte(password)) {
		t.Errorf("the password is in the worker's log")
	} else if !bytes.Contains(logData, []byte("request finished")) {
		t.Errorf("the worker's log shows no finished request: the check proves nothing")
	}
	ctx := context.Background()
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	objects := 0
	mustDo(t, bucket.Walk(ctx, c.b, "", func(o bucket.ObjectInfo) error {
		data, _, err := bucket.GetBytes(ctx, c.b, o.Key)
		if err != nil {
			return err
		}
		objects++
		if bytes.Contains(data, []byte(password)) {
			t.Errorf("object %s holds the password", o.Key)
		}
		if plain, err := dec.DecodeAll(data, nil); err == nil && bytes.Contains(plain, []byte(password)) {
			t.Errorf("object %s holds the password once decompressed", o.Key)
		}
		return nil
	}))
	if objects < 3 {
		t.Errorf("only %d objects in the bucket: the check proves nothing", objects)
	}
}
