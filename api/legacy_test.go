package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/legacy"
)

// TestClustersListLegacyBackups: GET /v1/clusters lists the old
// cnvrg-capsule service's backups beside capsule's clusters (marked
// legacy, checksum and verification none), as the OpenAPI document
// says, and nothing of the state files' secrets; a Restore naming one
// as legacy:<id> is accepted.
func TestClustersListLegacyBackups(t *testing.T) {
	b := fsBucket(t)
	root, _ := bucket.Unprefixed(b)
	ctx := context.Background()
	const password = "legacy-api-pw-5d1c"
	state, _ := json.Marshal(map[string]any{
		"backupId": "postgresql-3WxuRkPVz3pKPmCH9ZDy5e", "requestType": "manualbackuprequest", "rotation": 3,
		"date": "2026-12-06T23:36:48.920491903Z", "serviceType": "postgresql", "status": "finished", "statefileVersion": "v1alpha1",
		"bucket":  map[string]any{"accessKey": "AKIAAPILEGACY", "secretKey": password},
		"service": map[string]any{"name": "cnvrg/pg-storage", "dumpfile": "x-pgdump.tar", "creds": map[string]any{"pass": password}},
	})
	for key, data := range map[string][]byte{
		"cnvrg-smart-backups/postgresql-3WxuRkPVz3pKPmCH9ZDy5e/statefile.json": state,
		"cnvrg-smart-backups/postgresql-3WxuRkPVz3pKPmCH9ZDy5e/x-pgdump.tar":   []byte("dump"),
	} {
		if _, err := bucket.PutBytes(ctx, root, key, data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeBackup(t, b, "prod", "pg", "b1", time.Now().Add(-time.Hour), 100)
	store, err := legacy.Open(root, "")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, b, func(c *api.Config) { c.Legacy = store })
	r := h.get("/v1/clusters")
	wantStatus(t, "clusters", r, 200, "")
	var l api.ClusterList
	r.decode(t, &l)
	if len(l.Clusters) != 1 || len(l.Legacy) != 1 {
		t.Fatalf("clusters %+v, legacy %+v: want prod and one old backup", l.Clusters, l.Legacy)
	}
	if old := l.Legacy[0]; !old.Legacy || old.BackupID != "postgresql-3WxuRkPVz3pKPmCH9ZDy5e" || old.Source != "cnvrg/pg-storage" ||
		old.Status != "finished" || old.Bytes != 4 || old.Checksum != "none" || old.Verification != "none" {
		t.Errorf("legacy entry %+v", old)
	}
	for _, s := range []string{password, "AKIAAPILEGACY"} {
		if strings.Contains(string(r.body), s) {
			t.Errorf("the listing holds %q", s)
		}
	}
	wantStatus(t, "restore of a legacy backup", h.post("/v1/requests", []byte(`{"kind":"Restore","backupId":"legacy:postgresql-3WxuRkPVz3pKPmCH9ZDy5e","target":"pg"}`)), 201, "")
	wantStatus(t, "restore of a mixed-case id without legacy:", h.post("/v1/requests", []byte(`{"kind":"Restore","backupId":"postgresql-3WxuRkPVz3pKPmCH9ZDy5e"}`)), 400, "")
}
