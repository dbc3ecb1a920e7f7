package executor_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/requests"
)

// pgAdmin runs SQL on the local test server as postgres.
func pgAdmin(t *testing.T, db, sql string) string {
	t.Helper()
	out, err := exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// legacyPG is a database owned by a CREATEDB role (no superuser), and a
// bucket holding its pg_dump --format=tar archive as the old
// cnvrg-capsule service left it.
type legacyPG struct {
	role, db string
	root     bucket.Bucket
	store    *legacy.Store
	x        *executor.Executor
}

func newLegacyPG(t *testing.T) *legacyPG {
	t.Helper()
	if _, err := exec.LookPath("pg_dump"); err != nil {
		t.Skip("pg_dump not installed")
	}
	if err := exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atc", "select 1").Run(); err != nil {
		t.Skipf("no PostgreSQL on 127.0.0.1:5432: %v", err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	p := &legacyPG{role: "capsule_xl_" + hex.EncodeToString(rnd[:])}
	p.db = p.role
	pgAdmin(t, "postgres", "CREATE ROLE "+p.role+" LOGIN CREATEDB PASSWORD 'pw-xl'")
	pgAdmin(t, "postgres", "CREATE DATABASE "+p.db+" OWNER "+p.role)
	t.Cleanup(func() {
		out, _ := exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atc",
			fmt.Sprintf("SELECT datname FROM pg_database WHERE datname LIKE '%s%%'", p.db)).Output()
		for _, name := range strings.Fields(string(out)) {
			_ = exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)").Run()
		}
		_ = exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", "DROP ROLE IF EXISTS "+p.role).Run()
	})
	pgAdmin(t, p.db, "SET ROLE "+p.role+"; CREATE TABLE accounts(id int PRIMARY KEY, owner text); INSERT INTO accounts SELECT g, 'o' || g FROM generate_series(1, 5000) g; CREATE TABLE empty(x int)")
	dump, err := exec.Command("pg_dump", "-h", "127.0.0.1", "-U", p.role, "--format=t", p.db).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	root, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	p.root = root
	ctx := context.Background()
	put := func(key string, data []byte) {
		if _, err := bucket.PutBytes(ctx, root, key, data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	state := func(id, status string) []byte {
		data, _ := json.Marshal(map[string]any{
			"backupId": id, "rotation": 5, "date": "2026-12-06T23:36:48.920491903Z", "serviceType": "postgresql",
			"bucket":  map[string]any{"accessKey": "AKIAXL", "secretKey": "xl-secret"},
			"service": map[string]any{"name": "cnvrg/pg-storage", "dumpfile": "Jq8h-pgdump.tar", "creds": map[string]any{"pass": "xl-pass"}},
			"status":  status,
		})
		return data
	}
	put("cnvrg-smart-backups/postgresql-Good1/indexfile.json", state("postgresql-Good1", "finished"))
	put("cnvrg-smart-backups/postgresql-Good1/Jq8h-pgdump.tar", dump)
	put("cnvrg-smart-backups/postgresql-Failed1/indexfile.json", state("postgresql-Failed1", "failed"))
	if p.store, err = legacy.Open(root, ""); err != nil {
		t.Fatal(err)
	}
	p.x = p.executor(t, p.store)
	return p
}

func (p *legacyPG) executor(t *testing.T, store *legacy.Store, opts ...func(*executor.Config)) *executor.Executor {
	t.Helper()
	cfg := executor.Config{
		Bucket: bucket.Prefixed(p.root, "capsule/"), Engines: engines.NewRegistry(postgres.New()), Worker: "test", Version: "test",
		Sources: sources{"pg": {Name: "pg", Engine: "postgres", Config: map[string]any{
			"url": "postgres://" + p.role + "@127.0.0.1:5432/" + p.db, "sslmode": "disable",
		}}},
		Legacy: store, Log: enginetest.TestLog(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	x, err := executor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func (p *legacyPG) run(t *testing.T, x *executor.Executor, req requests.Request) *executor.Outcome {
	t.Helper()
	req.APIVersion = requests.APIVersion
	if req.ID == "" {
		req.ID = requests.NewID()
	}
	if err := req.Validate(); err != nil {
		t.Fatalf("request: %v", err)
	}
	out := x.Run(context.Background(), &req, 1, executor.NewTracker())
	if err := x.Commit(context.Background(), out); err != nil {
		t.Fatalf("commit: %v", err)
	}
	return out
}

// TestLegacyRestoreAndVerify restores a backup of the old service (a real
// pg_dump --format=tar with an indexfile.json beside it) through the
// executor into a PostgreSQL source, with the side database and swap of
// capsule's own restores, and verifies it; the results say there was no
// checksum, and nothing is written beside capsule's backups or into the
// old service's folder. Requests that cannot succeed are rejected.
func TestLegacyRestoreAndVerify(t *testing.T) {
	p := newLegacyPG(t)
	pgAdmin(t, p.db, "DELETE FROM accounts WHERE id > 10")

	out := p.run(t, p.x, requests.Request{Kind: requests.KindRestore, BackupID: "legacy:postgresql-Good1", Target: "pg", DropPrevious: true})
	if out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("restore: %s: %s", out.Result.Status, out.Result.Error)
	}
	if n := pgAdmin(t, p.db, "SELECT count(*) FROM accounts"); n != "5000" {
		t.Errorf("after the restore: %s rows, want 5000", n)
	}
	if out.Result.Source != "cnvrg/pg-storage" || out.Result.BackupID != "legacy:postgresql-Good1" || out.Result.Details["checksum"] != executor.NoChecksum {
		t.Errorf("result: %+v", out.Result)
	}
	if dt := out.Result.Details["databases"]; dt == nil {
		t.Errorf("result details %v: no swap recorded", out.Result.Details)
	}

	out = p.run(t, p.x, requests.Request{Kind: requests.KindVerify, BackupID: "legacy:postgresql-Good1", Target: "pg"})
	if out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("verify: %s: %s", out.Result.Status, out.Result.Error)
	}
	checks, _ := json.Marshal(out.Result.Details["checks"])
	if !strings.Contains(string(checks), "row counts of all 2 tables") || out.Result.Details["checksum"] != executor.NoChecksum {
		t.Errorf("verify details: %v", out.Result.Details)
	}
	var written []string
	_ = bucket.Walk(context.Background(), p.root, "", func(o bucket.ObjectInfo) error {
		written = append(written, o.Key)
		return nil
	})
	if len(written) != 3 {
		t.Errorf("bucket holds %v: want the old service's three objects only", written)
	}

	for _, tc := range []struct {
		name string
		x    *executor.Executor
		req  requests.Request
		want string
	}{
		{"unknown id", p.x, requests.Request{Kind: requests.KindRestore, BackupID: "legacy:postgresql-Nope1", Target: "pg"}, "no backup of the old service"},
		{"failed backup", p.x, requests.Request{Kind: requests.KindRestore, BackupID: "legacy:postgresql-Failed1", Target: "pg"}, "ended failed"},
		{"no target", p.x, requests.Request{Kind: requests.KindRestore, BackupID: "legacy:postgresql-Good1"}, "capsule restore --to SOURCE"},
		{"no legacy folder", p.executor(t, nil), requests.Request{Kind: requests.KindVerify, BackupID: "legacy:postgresql-Good1", Target: "pg"}, "reads none"},
		// Where signatures are checked, an old backup (signed by nobody)
		// needs allowUnsigned.
		{"unsigned where signatures are checked", p.executor(t, p.store, signing(index.NewSigner(sshsigtest.Key(t)))),
			requests.Request{Kind: requests.KindRestore, BackupID: "legacy:postgresql-Good1", Target: "pg"}, "has no signature"},
	} {
		out := p.run(t, tc.x, tc.req)
		if out.Result.Status != requests.StatusRejected || !strings.Contains(out.Result.Error, tc.want) {
			t.Errorf("%s: %s: %q, want rejected saying %q", tc.name, out.Result.Status, out.Result.Error, tc.want)
		}
	}
	for _, r := range []string{"xl-pass", "xl-secret", "AKIAXL"} {
		if data, _ := json.Marshal(out.Result); strings.Contains(string(data), r) {
			t.Errorf("a result holds %q", r)
		}
	}
}
