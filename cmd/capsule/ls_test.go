package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// run runs one capsule command in-process and returns its output.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	a := newApp(&out, &errOut, func(string) string { return "" })
	cmd := a.root()
	cmd.SetArgs(append(args, "--log-level", "error"))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// TestLsShowsDamagedIndexes plants, beside a real backup, an index whose
// content claims another cluster and points at the real backup's data,
// and one dated 2099. `capsule ls` lists the real backup only and says
// that damaged indexes were skipped; `ls --all` names them with their key
// and reason, in the table and in JSON; `describe` refuses them.
func TestLsShowsDamagedIndexes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bucket")
	fb, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	ctx := context.Background()
	finished := time.Now().UTC().Add(-time.Hour)
	real := &index.BackupIndex{
		APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: "real-1", RequestID: "real-1",
		Cluster: "default", Source: "data", Engine: "files", Format: "files/tar-v1", CapsuleVersion: "test",
		Status: requests.StatusSucceeded, Attempt: 1, StartedAt: finished.Add(-time.Minute), FinishedAt: finished,
		Artifacts: []index.Artifact{{Name: "tree.tar", Key: requests.ArtifactKey("default", "data", "real-1", 1, "tree.tar"),
			Size: 1, StoredSize: 1, SHA256: strings.Repeat("ab", 32), Compression: "zstd"}},
	}
	if err := index.Write(ctx, b, real); err != nil {
		t.Fatal(err)
	}
	plant := func(id string, mod func(x *index.BackupIndex)) string {
		x := *real
		x.BackupID, x.RequestID = id, id
		mod(&x)
		data, err := json.Marshal(&x)
		if err != nil {
			t.Fatal(err)
		}
		key := requests.IndexKey("default", "data", id)
		if _, err := bucket.PutBytes(ctx, b, key, data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		return key
	}
	tenantKey := plant("forged-tenant", func(x *index.BackupIndex) { x.Cluster = "tenant-b" })
	futureKey := plant("forged-future", func(x *index.BackupIndex) {
		x.FinishedAt = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
		x.Artifacts = []index.Artifact{x.Artifacts[0]}
		x.Artifacts[0].Key = requests.ArtifactKey("default", "data", "forged-future", 1, "tree.tar")
	})
	bucketFlag := []string{"--bucket", "file://" + dir}

	out, errOut, err := run(t, append([]string{"ls"}, bucketFlag...)...)
	if err != nil {
		t.Fatalf("ls: %v (%s)", err, errOut)
	}
	if !strings.Contains(out, "real-1") || strings.Contains(out, "forged") || strings.Contains(out, "tenant-b") {
		t.Errorf("ls lists:\n%s\nwant real-1 only", out)
	}
	if !strings.Contains(errOut, "2 damaged") || !strings.Contains(errOut, "ls --all") {
		t.Errorf("ls says %q, want it to tell that 2 damaged indexes were skipped", errOut)
	}

	out, errOut, err = run(t, append([]string{"ls", "--all"}, bucketFlag...)...)
	if err != nil {
		t.Fatalf("ls --all: %v (%s)", err, errOut)
	}
	for _, want := range []string{"real-1", "DAMAGED", tenantKey, `its cluster "tenant-b" is not the key's "default"`, futureKey, "finished in the future"} {
		if !strings.Contains(out, want) {
			t.Errorf("ls --all:\n%s\nwant it to say %q", out, want)
		}
	}

	out, errOut, err = run(t, append([]string{"ls", "--all", "-o", "json"}, bucketFlag...)...)
	if err != nil {
		t.Fatalf("ls --all -o json: %v (%s)", err, errOut)
	}
	var rows []struct {
		BackupID string `json:"backupId"`
		Damaged  *struct {
			Key, Cluster, Source, BackupID, Reason string
		} `json:"damaged"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("ls --all -o json: %v\n%s", err, out)
	}
	var ids, damaged []string
	for _, r := range rows {
		if r.Damaged != nil {
			damaged = append(damaged, r.Damaged.Key+" "+r.Damaged.BackupID)
		} else {
			ids = append(ids, r.BackupID)
		}
	}
	if strings.Join(ids, ",") != "real-1" || strings.Join(damaged, ",") != futureKey+" forged-future,"+tenantKey+" forged-tenant" {
		t.Errorf("ls --all -o json: backups %v, damaged %v", ids, damaged)
	}

	_, _, err = run(t, append([]string{"describe", "forged-tenant"}, bucketFlag...)...)
	if err == nil || !strings.Contains(err.Error(), tenantKey) || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("describe forged-tenant: %v, want an error naming %s as damaged", err, tenantKey)
	}
	out, _, err = run(t, append([]string{"describe", "real-1", "-o", "json"}, bucketFlag...)...)
	if err != nil || !strings.Contains(out, `"backupId": "real-1"`) {
		t.Errorf("describe real-1 -o json: %v\n%s", err, out)
	}
}
