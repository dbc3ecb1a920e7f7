package api_test

import (
	"encoding/json"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/cnvrg/capsule/requests"
)

// TestUntrustedBackupsAreMarked: beside a backup the worker signed, a
// newer forged one (well-formed, unsigned) and one signed by another key
// are listed, each marked untrusted with the reason, and neither is the
// source's newest success on the overview.
func TestUntrustedBackupsAreMarked(t *testing.T) {
	b := fsBucket(t)
	worker := index.NewSigner(sshsigtest.Key(t))
	trust := index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false)
	h := newHarness(t, b, func(c *api.Config) { c.Trust = trust })
	real := writeBackup(t, b, "default", "pg", "b1", base, 100)
	if err := index.SignStored(t.Context(), b, real.Key(), worker); err != nil {
		t.Fatal(err)
	}
	writeBackup(t, b, "default", "pg", "b2", base.Add(time.Minute), 100)
	other := writeBackup(t, b, "default", "pg", "b3", base.Add(2*time.Minute), 100)
	if err := index.SignStored(t.Context(), b, other.Key(), index.NewSigner(sshsigtest.Key(t))); err != nil {
		t.Fatal(err)
	}

	r := h.get("/v1/clusters/default/backups")
	wantStatus(t, "backups", r, 200, "")
	var page api.BackupPage
	r.decode(t, &page)
	want := map[string]string{"b1": index.SigSigned, "b2": index.SigUntrusted, "b3": index.SigUntrusted}
	if len(page.Backups) != 3 {
		t.Fatalf("listed %v, want b3 b2 b1", ids(page.Backups))
	}
	for _, e := range page.Backups {
		if s := e.Signature; s.State != want[e.Index.BackupID] || (s.State == index.SigUntrusted && s.Reason == "") {
			t.Errorf("%s: signature %+v, want %s (with a reason when untrusted)", e.Index.BackupID, s, want[e.Index.BackupID])
		}
	}
	r = h.get("/v1/clusters/default/backups/b2")
	wantStatus(t, "one backup", r, 200, "")
	var one api.BackupEntry
	r.decode(t, &one)
	if one.Signature.State != index.SigUntrusted {
		t.Errorf("b2 alone: signature %+v", one.Signature)
	}

	r = h.get("/v1/clusters")
	wantStatus(t, "clusters", r, 200, "")
	var list api.ClusterList
	r.decode(t, &list)
	if len(list.Clusters) != 1 || len(list.Clusters[0].Sources) != 1 {
		t.Fatalf("clusters: %s", r.body)
	}
	if n := list.Clusters[0].Sources[0].NewestSuccessful; n == nil || n.BackupID != "b1" {
		t.Errorf("newest success %+v, want the signed b1", n)
	}
}

// TestAForgedCatalogSnapshotTrustsNothing: someone who can write the
// bucket plants a catalog snapshot (unsigned) that lists a backup that
// does not exist and records the unsigned one as signed by the worker's
// key. The API, which checks signatures, does not believe it: the planted
// backup is not listed, the unsigned one stays untrusted.
func TestAForgedCatalogSnapshotTrustsNothing(t *testing.T) {
	b := fsBucket(t)
	worker := index.NewSigner(sshsigtest.Key(t))
	trust := index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false)
	real := writeBackup(t, b, "default", "pg", "b1", base, 100)
	if err := index.SignStored(t.Context(), b, real.Key(), worker); err != nil {
		t.Fatal(err)
	}
	forged := writeBackup(t, b, "default", "pg", "b2", base.Add(time.Minute), 100)
	planted := *forged
	planted.BackupID, planted.RequestID = "b3", "b3"
	planted.FinishedAt = base.Add(2 * time.Minute)
	planted.Artifacts = []index.Artifact{forged.Artifacts[0]}
	planted.Artifacts[0].Key = requests.ArtifactKey("default", "pg", "b3", 1, "tree.tar")
	signed := map[string]any{"validBy": worker.Fingerprint()}
	var entries []any
	for _, x := range []*index.BackupIndex{real, forged, &planted} {
		entries = append(entries, map[string]any{"index": x, "written": time.Now().UTC().Add(-time.Minute), "signature": signed})
	}
	snap, _ := json.Marshal(map[string]any{"apiVersion": requests.APIVersion, "kind": index.KindCatalogSnapshot, "cluster": "default", "entries": entries})
	key := requests.CatalogClusterDir("default") + "snapshot-29991231T000000.000000000Z-forged.json"
	if _, err := bucket.PutBytes(t.Context(), b, key, snap, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t, b, func(c *api.Config) { c.Trust = trust })
	r := h.get("/v1/clusters/default/backups")
	wantStatus(t, "backups", r, 200, "")
	var page api.BackupPage
	r.decode(t, &page)
	want := map[string]string{"b1": index.SigSigned, "b2": index.SigUntrusted}
	if len(page.Backups) != 2 {
		t.Fatalf("listed %v, want b2 b1 (not the planted b3)", ids(page.Backups))
	}
	for _, e := range page.Backups {
		if s := e.Signature; s.State != want[e.Index.BackupID] {
			t.Errorf("%s: signature %+v, want %s", e.Index.BackupID, s, want[e.Index.BackupID])
		}
	}
}
