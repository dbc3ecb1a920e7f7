package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/legacy"
	"github.com/klauspost/compress/zstd"
)

// legacyState is a state file as the old cnvrg-capsule service wrote
// it: 1.0.3's statefile.json, or (old) 1.0.0-1.0.2's indexfile.json,
// holding the bucket's keys, the database password and the commands it
// ran, as the real ones do.
func legacyState(old bool, id, dump, status, db, password, accessKey, secretKey string, date time.Time) []byte {
	conn := "postgresql://" + db + ":" + password + "@postgres.cnvrg:5432/"
	m := map[string]any{
		"backupId": id, "rotation": 5, "date": date.Format(time.RFC3339Nano), "period": 86400.0, "bucketType": "minio",
		"bucket": map[string]any{
			"id": "minio-127.0.0.1-cnvrg-storage", "endpoint": "127.0.0.1:9000", "region": "eastus",
			"accessKey": accessKey, "secretKey": secretKey, "useSSL": false, "bucket": "cnvrg-storage", "dstDir": "cnvrg-smart-backups",
		},
		"serviceType": "postgresql",
		"service": map[string]any{
			"name":       "cnvrg/pg-storage",
			"creds":      map[string]any{"host": "postgres.cnvrg", "db": db, "user": db, "pass": password},
			"backupCmd":  []string{"2>&1", "pg_dump", "--dbname=" + conn + db, "--file=/tmp/capsule-data/" + dump, "--format=t", "--verbose"},
			"restoreCmd": []string{"psql --dbname=" + conn + "postgres -c \"ALTER DATABASE " + db + " WITH ALLOW_CONNECTIONS false\"", "&&", "pg_restore", "--dbname=" + conn + "postgres", "--clean", "--create", "--exit-on-error", "--format=t", "--verbose", "/tmp/capsule-data/" + dump},
			"dumpfile":   dump,
		},
		"status": status,
	}
	if !old {
		m["requestType"], m["restores"], m["description"], m["statefileVersion"] = "periodicbackuprequest", []any{}, "", "v1alpha1"
	}
	data, _ := json.Marshal(m)
	return data
}

// TestLegacyBackupsThroughTheBinary: a bucket holds what the old
// service left: real pg_dump --format=t archives of a real database,
// with state files in the 1.0.3 and the 1.0.2 shape (and a failed
// backup), holding the database's real password and the bucket's real
// keys. Through the real binary and a real worker, capsule lists them,
// restores one (into a side database, swapped), verifies the other,
// imports both from three processes at once and again with
// --delete-statefiles, and restores and verifies the imports. Then
// every object in the bucket (raw and decompressed), every line of the
// worker's log, every result and everything the CLI printed is searched
// for the password and the keys: none holds them, where the state files
// did at the start.
func TestLegacyBackupsThroughTheBinary(t *testing.T) {
	pg := needPostgres(t)
	ctx := context.Background()
	password := "legacy-e2e-pw-" + randHex(8)
	pg.exec("postgres", "ALTER ROLE "+pg.role()+" PASSWORD '"+password+"'")
	db := pg.prefix + "_app"
	pg.createSource(db, 3000)

	c := newCluster(t, 1024)
	var accessKey, secretKey string
	for _, kv := range c.srv.Env() {
		if k, v, _ := strings.Cut(kv, "="); k == "AWS_ACCESS_KEY_ID" {
			accessKey = v
		} else if k == "AWS_SECRET_ACCESS_KEY" {
			secretKey = v
		}
	}
	if accessKey == "" || secretKey == "" {
		t.Fatal("the S3 server's keys are not in its environment")
	}
	secrets := map[string]string{"the database password": password, "the bucket's access key": accessKey, "the bucket's secret key": secretKey}

	// The old service's two backups, dumped as it dumped them.
	dump := func() []byte {
		cmd := exec.Command("pg_dump", "--dbname=postgresql://"+pg.role()+"@127.0.0.1:5432/"+db, "--format=t")
		cmd.Env = append(os.Environ(), "PGPASSWORD="+password)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("pg_dump --format=t: %v", err)
		}
		return out
	}
	dumpA, digestA := dump(), pg.digest(db)
	pg.exec(db, "DELETE FROM events WHERE id % 3 = 0")
	pg.exec(db, "UPDATE accounts SET owner = 'changed' WHERE id < 100")
	dumpB, digestB := dump(), pg.digest(db)
	if digestA == digestB {
		t.Fatal("the two dumps hold the same data: the test proves nothing")
	}
	root, _ := bucket.Unprefixed(c.b)
	put := func(key string, data []byte) {
		if _, err := bucket.PutBytes(ctx, root, key, data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	const idA, idB, idC = "postgresql-3WxuRkPVz3pKPmCH9ZDy5e", "postgresql-Gk2mP9qTzX7cVb4nL8sR1w", "postgresql-Hh7Failed0d"
	day := time.Now().UTC().Add(-72 * time.Hour).Truncate(time.Second)
	put("cnvrg-smart-backups/ping", []byte("x8Kq2"))
	put("cnvrg-smart-backups/"+idA+"/statefile.json", legacyState(false, idA, "Jq8hRZPWd6BzK3kFfVnH2c-pgdump.tar", "finished", db, password, accessKey, secretKey, day))
	put("cnvrg-smart-backups/"+idA+"/Jq8hRZPWd6BzK3kFfVnH2c-pgdump.tar", dumpA)
	put("cnvrg-smart-backups/"+idB+"/indexfile.json", legacyState(true, idB, "Tn4vWc8xYz2aBcDeFgHiJk-pgdump.tar", "finished", db, password, accessKey, secretKey, day.Add(24*time.Hour)))
	put("cnvrg-smart-backups/"+idB+"/Tn4vWc8xYz2aBcDeFgHiJk-pgdump.tar", dumpB)
	put("cnvrg-smart-backups/"+idC+"/statefile.json", legacyState(false, idC, "Zz9-pgdump.tar", "failed", db, password, accessKey, secretKey, day.Add(-24*time.Hour)))

	// scan searches every object in the bucket for the secrets.
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	scan := func() (objects int, found []string) {
		mustDo(t, bucket.Walk(ctx, root, "", func(o bucket.ObjectInfo) error {
			data, _, err := bucket.GetBytes(ctx, root, o.Key)
			if err != nil {
				return err
			}
			objects++
			plain, _ := dec.DecodeAll(data, nil)
			for what, s := range secrets {
				if bytes.Contains(data, []byte(s)) || bytes.Contains(plain, []byte(s)) {
					found = append(found, o.Key+" holds "+what)
				}
			}
			return nil
		}))
		return objects, found
	}
	// The search finds what the old service left: it can see a leak.
	if _, found := scan(); len(found) != 9 {
		t.Fatalf("before: the search finds %d secrets in the state files, want 9 (3 files × 3): %v", len(found), found)
	}

	cfg := fmt.Sprintf(`cluster: e2e
worker:
  poll: 200ms
  lease: 5s
sources:
  pg:
    engine: postgres
    url: postgres://%s@127.0.0.1:5432/%s
    passwordEnv: CAPSULE_E2E_PG_PASSWORD
`, pg.role(), db)
	mustDo(t, os.WriteFile(c.config, []byte(cfg), 0o600))
	c.env = append(c.env, "CAPSULE_E2E_PG_PASSWORD="+password)

	var printed strings.Builder // everything the CLI printed, both streams
	var mu sync.Mutex
	cli := func(want int, args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"--config", c.config, "--log-format", "json"}, args...)...)
		cmd.Env = c.env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		mu.Lock()
		printed.WriteString(out.String() + errb.String())
		mu.Unlock()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Error(err)
			return ""
		}
		if code != want {
			t.Errorf("capsule %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return out.String()
	}

	// Listed, marked legacy, with the secrets' warning.
	var rows []map[string]json.RawMessage
	mustDo(t, json.Unmarshal([]byte(cli(0, "ls", "-o", "json")), &rows))
	var listed []string
	for _, r := range rows {
		var b legacy.Backup
		if r["legacy"] != nil && json.Unmarshal(r["legacy"], &b) == nil && b.Legacy {
			listed = append(listed, b.BackupID+" "+b.Status+" "+b.Shape)
		}
	}
	if got, want := strings.Join(listed, ","), idB+" finished 1.0.2,"+idA+" finished 1.0.3,"+idC+" failed 1.0.3"; got != want {
		t.Errorf("ls lists the old backups as %s, want %s", got, want)
	}
	if out := cli(0, "legacy"); !strings.Contains(out, "WARNING") || !strings.Contains(out, idA+"/statefile.json") || !strings.Contains(out, idB+"/indexfile.json") {
		t.Errorf("capsule legacy:\n%s\nwant the warning naming every state file", out)
	}

	stopWatch := enginetest.WatchArgv(t, password, 2*time.Millisecond)
	w := c.startWorker("w1")
	// Restore the 1.0.3 backup by its id as listed, into a side database.
	pg.exec(db, "DELETE FROM accounts WHERE id > 1000 AND id NOT IN (SELECT account FROM events)")
	var st struct {
		Status string `json:"status"`
		Result struct {
			Error   string         `json:"error"`
			Details map[string]any `json:"details"`
		} `json:"result"`
	}
	mustDo(t, json.Unmarshal([]byte(cli(0, "restore", idA, "--to", "pg", "--drop-previous", "--wait", "-o", "json")), &st))
	if got := pg.digest(db); got != digestA {
		t.Errorf("after restoring %s the database differs from its dump", idA)
	}
	if st.Status != "succeeded" || !strings.Contains(fmt.Sprint(st.Result.Details["checksum"]), "no checksum") {
		t.Errorf("restore of %s: %s, details %v: want it to say there was no checksum", idA, st.Status, st.Result.Details)
	}
	// Verify the 1.0.2 one.
	mustDo(t, json.Unmarshal([]byte(cli(0, "verify", "legacy:"+idB, "--into", "pg", "--wait", "-o", "json")), &st))
	if st.Status != "succeeded" || !strings.Contains(fmt.Sprint(st.Result.Details["checks"]), "counted in the archive") {
		t.Errorf("verify of %s: %s, %v", idB, st.Status, st.Result.Details)
	}
	// The failed one cannot be restored.
	mustDo(t, json.Unmarshal([]byte(cli(2, "restore", idC, "--to", "pg", "--wait", "-o", "json")), &st))
	if st.Status != "rejected" || !strings.Contains(st.Result.Error, "ended failed") {
		t.Errorf("restore of the failed %s: %s %q", idC, st.Status, st.Result.Error)
	}

	// Three replicas import at once; then one more, deleting the state files.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); cli(0, "legacy", "import", "-o", "json") }()
	}
	wg.Wait()
	all, err := index.ListAll(ctx, c.b, index.Filter{})
	mustDo(t, err)
	imported := map[string]string{}
	for _, e := range all.Entries {
		imported[e.Labels[legacy.LabelID]] = e.BackupID
	}
	if len(all.Entries) != 2 || imported[idA] != legacy.ImportedID(idA) || imported[idB] != legacy.ImportedID(idB) {
		t.Fatalf("after three concurrent imports: %v, want one import each of %s and %s", imported, idA, idB)
	}
	var rep legacy.ImportReport
	mustDo(t, json.Unmarshal([]byte(cli(0, "legacy", "import", "--delete-statefiles", "-o", "json")), &rep))
	if len(rep.StateFilesLeft) != 0 {
		t.Errorf("state files left after --delete-statefiles: %v", rep.StateFilesLeft)
	}
	if all, _ := index.ListAll(ctx, c.b, index.Filter{}); len(all.Entries) != 2 {
		t.Errorf("%d backups after importing again, want 2", len(all.Entries))
	}
	if out := cli(0, "legacy"); strings.Contains(out, "WARNING") {
		t.Errorf("capsule legacy still warns after the state files were deleted:\n%s", out)
	}

	// The imports restore and verify like any capsule backup, checksummed.
	cli(0, "restore", imported[idB], "--to", "pg", "--drop-previous", "--wait")
	if got := pg.digest(db); got != digestB {
		t.Errorf("after restoring the import of %s the database differs from its dump", idB)
	}
	cli(0, "verify", imported[idA], "--into", "pg", "--wait")
	cli(0, "describe", imported[idA])
	cli(0, "tail", "-o", "json")
	stopWatch()
	c.stopAll()

	logData, err := os.ReadFile(w.log)
	mustDo(t, err)
	if !bytes.Contains(logData, []byte("request succeeded")) || !bytes.Contains(logData, []byte(idA)) {
		t.Errorf("the worker's log shows no finished legacy request: the search proves nothing")
	}
	objects, found := scan()
	for _, f := range found {
		t.Errorf("after: %s", f)
	}
	if objects < 12 {
		t.Errorf("only %d objects in the bucket: the search proves little", objects)
	}
	for what, s := range secrets {
		if bytes.Contains(logData, []byte(s)) {
			t.Errorf("the worker's log holds %s", what)
		}
		if strings.Contains(printed.String(), s) {
			t.Errorf("the CLI printed %s", what)
		}
	}
}
