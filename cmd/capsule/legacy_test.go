package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
)

const cliSecret = "cli-legacy-pw-81f0a2"

func plantLegacy(t *testing.T, root bucket.Bucket, dir, id, file, status string) {
	t.Helper()
	state, _ := json.Marshal(map[string]any{
		"backupId": id, "rotation": 5, "date": "2026-12-06T23:36:48.920491903Z", "serviceType": "postgresql", "status": status,
		"bucket":  map[string]any{"accessKey": "AKIACLI", "secretKey": cliSecret},
		"service": map[string]any{"name": "cnvrg/pg-storage", "dumpfile": "d-pgdump.tar", "creds": map[string]any{"pass": cliSecret}},
	})
	ctx := context.Background()
	if _, err := bucket.PutBytes(ctx, root, dir+"/"+id+"/"+file, state, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if status == "finished" {
		if _, err := bucket.PutBytes(ctx, root, dir+"/"+id+"/d-pgdump.tar", []byte("a pg_dump archive of "+id), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLegacyCommands: capsule ls lists the old service's backups after
// capsule's own; capsule legacy lists them with the warning about their
// state files; restore and verify name them legacy:<id>, from the
// mixed-case id alone too; describe shows one; legacy import converts
// them and, with --delete-statefiles, removes the state files, after
// which no warning remains. No output holds a secret of the state files.
func TestLegacyCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bucket")
	root, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	plantLegacy(t, root, "cnvrg-smart-backups", "postgresql-3WxuRkPVz3pKPmCH9ZDy5e", "statefile.json", "finished")
	plantLegacy(t, root, "cnvrg-smart-backups", "postgresql-abc123", "indexfile.json", "finished")
	plantLegacy(t, root, "cnvrg-smart-backups", "postgresql-Failed1", "statefile.json", "failed")
	bucketFlag := []string{"--bucket", "file://" + dir}
	var all strings.Builder
	cli := func(args ...string) string {
		t.Helper()
		out, errOut, err := run(t, append(args, bucketFlag...)...)
		all.WriteString(out + errOut)
		if err != nil {
			t.Fatalf("capsule %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}

	out := cli("ls")
	for _, want := range []string{"LEGACY", "postgresql-3WxuRkPVz3pKPmCH9ZDy5e", "postgresql-abc123", "cnvrg/pg-storage", "finished", "failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("ls:\n%s\nwant %q", out, want)
		}
	}
	if out := cli("ls", "--legacy=false"); strings.Contains(out, "postgresql-") {
		t.Errorf("ls --legacy=false lists old backups:\n%s", out)
	}
	var rows []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(cli("ls", "-o", "json")), &rows); err != nil || len(rows) != 3 || rows[0]["legacy"] == nil {
		t.Errorf("ls -o json: %v, %d rows: want 3 {\"legacy\": ...}", err, len(rows))
	}

	out = cli("legacy")
	for _, want := range []string{"postgresql-3WxuRkPVz3pKPmCH9ZDy5e", "1.0.3", "1.0.2", "WARNING", "password", "capsule legacy import --delete-statefiles",
		"cnvrg-smart-backups/postgresql-abc123/indexfile.json"} {
		if !strings.Contains(out, want) {
			t.Errorf("capsule legacy:\n%s\nwant %q", out, want)
		}
	}
	if out := cli("describe", "postgresql-3WxuRkPVz3pKPmCH9ZDy5e", "-o", "json"); !strings.Contains(out, `"checksum": "none"`) {
		t.Errorf("describe of an old backup:\n%s", out)
	}

	// restore and verify write requests naming legacy:<id>.
	b := bucket.Prefixed(root, "capsule/")
	for _, tc := range []struct{ args []string }{
		// No source pg here: the check at the prompt would refuse it.
		{[]string{"restore", "postgresql-3WxuRkPVz3pKPmCH9ZDy5e", "--to", "pg", "--no-check"}},
		{[]string{"restore", "legacy:postgresql-3WxuRkPVz3pKPmCH9ZDy5e", "--to", "pg", "--no-check"}},
		{[]string{"verify", "postgresql-abc123"}}, // lower case: the bucket decides
	} {
		id := strings.TrimSpace(cli(tc.args...))
		st, err := client.GetStatus(context.Background(), b, id)
		if err != nil || st.Request == nil {
			t.Fatalf("%v: status %v, %v", tc.args, st, err)
		}
		if _, ok := requests.LegacyBackupID(st.Request.BackupID); !ok {
			t.Errorf("%v: request names %q, want legacy:<id>", tc.args, st.Request.BackupID)
		}
	}

	out = cli("legacy", "import", "--delete-statefiles")
	if strings.Count(out, "imported") < 2 || strings.Contains(out, "WARNING") {
		t.Errorf("legacy import --delete-statefiles:\n%s", out)
	}
	out = cli("legacy", "ls")
	if strings.Contains(out, "WARNING") || strings.Contains(out, "postgresql-") {
		t.Errorf("capsule legacy after the import:\n%s", out)
	}
	out = cli("ls")
	if !strings.Contains(out, "legacy-postgresql-3wxurkpvz3pkpmch9zdy5e-") || !strings.Contains(out, "legacy-postgresql-abc123-") {
		t.Errorf("ls after the import:\n%s", out)
	}
	for _, s := range []string{cliSecret, "AKIACLI"} {
		if strings.Contains(all.String(), s) {
			t.Errorf("the CLI's output holds %q", s)
		}
	}
}
