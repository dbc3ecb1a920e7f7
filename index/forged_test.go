package index_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// plant writes data at key as someone with write access to backups/ can:
// no checks, no create-only.
func plant(t *testing.T, b bucket.Bucket, key string, v any) {
	t.Helper()
	data, ok := v.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bucket.PutBytes(context.Background(), b, key, data, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// commit writes a real backup: its artifact, then its index.
func commit(t *testing.T, b bucket.Bucket, x *index.BackupIndex) {
	t.Helper()
	for _, a := range x.Artifacts {
		plant(t, b, a.Key, []byte("data of "+a.Key))
	}
	if err := index.Write(context.Background(), b, x); err != nil {
		t.Fatal(err)
	}
}

// forgery is an index planted at key whose content is not believed, and
// a word the reason must contain.
type forgery struct {
	name, key string
	content   any
	reason    string
}

// forgeries plants indexes that must not be believed next to the real
// backups a1 (tenant-a/pg) and b1 (tenant-b/pg), finished at t0.
func forgeries(t0 time.Time) []forgery {
	own := func(id string) *index.BackupIndex { return idx("tenant-a", "pg", id, t0.Add(time.Hour)) }
	wrongCluster := own("f-cluster")
	wrongCluster.Cluster = "tenant-b"
	wrongSource := own("f-source")
	wrongSource.Source = "redis"
	wrongID := own("f-id")
	wrongID.BackupID = "a1" // claims to be the victim
	intoVictim := own("f-victim")
	intoVictim.Artifacts[0].Key = requests.ArtifactKey("tenant-a", "pg", "a1", 1, "tree.tar")
	intoTenant := own("f-tenant")
	intoTenant.Artifacts[0].Key = requests.ArtifactKey("tenant-b", "pg", "b1", 1, "tree.tar")
	otherAttempt := own("f-attempt")
	otherAttempt.Artifacts[0].Key = requests.ArtifactKey("tenant-a", "pg", "f-attempt", 2, "tree.tar")
	badName := own("f-name")
	badName.Artifacts[0].Name = "../../../tenant-b/pg/b1/1/tree.tar"
	badName.Artifacts[0].Key = requests.ArtifactKey("tenant-a", "pg", "f-name", 1, badName.Artifacts[0].Name)
	future := own("f-future")
	future.FinishedAt = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	// A copy of the victim's index under tenant-b: same id, other key.
	copied := idx("tenant-a", "pg", "a1", t0.Add(2*time.Hour))
	escaped := own("f-escaped")
	// A real index padded past the read limit: never read whole.
	huge, err := json.Marshal(own("f-huge"))
	if err != nil {
		panic(err)
	}
	huge = append(huge, bytes.Repeat([]byte(" "), index.MaxIndexSize)...)
	return []forgery{
		{"wrong cluster", requests.IndexKey("tenant-a", "pg", "f-cluster"), wrongCluster, `cluster "tenant-b"`},
		{"wrong source", requests.IndexKey("tenant-a", "pg", "f-source"), wrongSource, `source "redis"`},
		{"wrong backup id", requests.IndexKey("tenant-a", "pg", "f-id"), wrongID, `backupId "a1"`},
		{"artifact in another backup", requests.IndexKey("tenant-a", "pg", "f-victim"), intoVictim, "artifacts[0]"},
		{"artifact in another cluster", requests.IndexKey("tenant-a", "pg", "f-tenant"), intoTenant, "artifacts[0]"},
		{"artifact in another attempt", requests.IndexKey("tenant-a", "pg", "f-attempt"), otherAttempt, "attempt 1"},
		{"bad artifact name", requests.IndexKey("tenant-a", "pg", "f-name"), badName, "not a valid artifact name"},
		{"finished in the future", requests.IndexKey("tenant-a", "pg", "f-future"), future, "finished in the future"},
		{"unparsable", requests.IndexKey("tenant-a", "pg", "f-json"), []byte("{not json"), "not a backup index"},
		{"copy under another cluster", requests.IndexKey("tenant-b", "pg", "a1"), copied, `cluster "tenant-a"`},
		{"key escaped differently", "backups/tenant%2Da/pg/f-escaped/backupIndex.json", escaped, "the key is not the one"},
		{"over the size limit", requests.IndexKey("tenant-a", "pg", "f-huge"), huge, "over the 16 MiB limit"},
	}
}

// TestForgedIndexesAreNotBelieved plants indexes whose content does not
// match their key (or that finished in the future) beside real backups:
// listings skip them and go on, Find refuses them naming the key and the
// reason, and the real backups stay listed and restorable.
func TestForgedIndexesAreNotBelieved(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-48 * time.Hour)
	commit(t, b, idx("tenant-a", "pg", "a1", t0))
	commit(t, b, idx("tenant-b", "pg", "b1", t0))
	forged := forgeries(t0)
	for _, f := range forged {
		plant(t, b, f.key, f.content)
	}

	for _, c := range []struct {
		f    index.Filter
		want []string
	}{
		{index.Filter{}, []string{"tenant-b/b1", "tenant-a/a1"}},
		{index.Filter{Cluster: "tenant-a"}, []string{"tenant-a/a1"}},
		{index.Filter{Cluster: "tenant-a", Source: "pg"}, []string{"tenant-a/a1"}},
		{index.Filter{Cluster: "tenant-b"}, []string{"tenant-b/b1"}},
	} {
		got, err := index.List(ctx, b, c.f)
		if err != nil {
			t.Errorf("List(%+v): %v", c.f, err)
			continue
		}
		var ids []string
		for _, e := range got {
			ids = append(ids, e.Cluster+"/"+e.BackupID)
		}
		if !slices.Equal(ids, c.want) {
			t.Errorf("List(%+v) = %v, want %v", c.f, ids, c.want)
		}
	}

	// The victims are still restorable: Find returns the real a1 although
	// a copy of its index sits under tenant-b.
	for _, id := range []string{"a1", "b1"} {
		e, err := index.Find(ctx, b, id)
		if err != nil {
			t.Errorf("Find(%s): %v", id, err)
			continue
		}
		if want := map[string]string{"a1": "tenant-a", "b1": "tenant-b"}[id]; e.Cluster != want || e.Artifacts[0].Key != requests.ArtifactKey(want, "pg", id, 1, "tree.tar") {
			t.Errorf("Find(%s) = %s/%s %s", id, e.Cluster, e.Source, e.Artifacts[0].Key)
		}
	}

	// A forged backup is never found for a restore: the error names the
	// key and the reason.
	for _, f := range forged {
		k, err := requests.ParseBackupKey(f.key)
		if err != nil {
			t.Fatal(err)
		}
		if k.BackupID == "a1" {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			e, err := index.Find(ctx, b, k.BackupID)
			if err == nil {
				t.Fatalf("Find(%s) = %s/%s/%s with artifacts %v, want an error", k.BackupID, e.Cluster, e.Source, e.BackupID, e.Artifacts)
			}
			if msg := err.Error(); !strings.Contains(msg, f.key) || !strings.Contains(msg, f.reason) || !strings.Contains(msg, "damaged") {
				t.Errorf("Find(%s) = %v, want it to name %s and say %q", k.BackupID, err, f.key, f.reason)
			}
		})
	}
}

// TestForgedVerificationsAreIgnored plants verification records that
// must not make a backup look verified (or failed): one for another
// backup id, one dated in the future by the bucket's clock, one whose key
// does not name its time.
func TestForgedVerificationsAreIgnored(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-48 * time.Hour)
	x := idx("c", "s", "b1", t0)
	commit(t, b, x)
	real := &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: "b1", RequestID: "v-real",
		OK: false, Error: "restore failed", VerifiedAt: t0.Add(time.Hour), Checks: []index.CheckResult{{Name: "restore", OK: false}}}
	if err := index.WriteVerification(ctx, b, x, real); err != nil {
		t.Fatal(err)
	}
	forged := func(id string, at time.Time) *index.Verification {
		return &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: id, RequestID: "v-forged",
			OK: true, VerifiedAt: at, Checks: []index.CheckResult{{Name: "restore", OK: true}}}
	}
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	plant(t, b, requests.VerifyKey("c", "s", "b1", t0.Add(2*time.Hour)), forged("other", t0.Add(2*time.Hour)))
	plant(t, b, requests.VerifyKey("c", "s", "b1", future), forged("b1", future))
	plant(t, b, requests.VerifyKey("c", "s", "b1", future.Add(time.Hour)), forged("b1", t0.Add(3*time.Hour)))
	e, err := index.Find(ctx, b, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if e.Verification == nil || e.Verification.RequestID != "v-real" || e.Verification.OK {
		t.Errorf("b1 shows verification %+v, want the real failed one (v-real)", e.Verification)
	}
	entries, err := index.List(ctx, b, index.Filter{})
	if err != nil || len(entries) != 1 || entries[0].Verification == nil || entries[0].Verification.RequestID != "v-real" {
		t.Errorf("List = %v, %v; want b1 with v-real", entries, err)
	}
}
