package retention_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
)

// plantIndex writes x at key as anyone with write access to backups/
// can: no checks, not create-only.
func plantIndex(t *testing.T, b bucket.Bucket, key string, x *index.BackupIndex) {
	t.Helper()
	data, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(t.Context(), b, key, data, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// forge returns a copy of real's index that claims what mod makes it
// claim, finished hour hours after base.
func forge(real *index.BackupIndex, hour int, mod func(x *index.BackupIndex)) *index.BackupIndex {
	x := *real
	x.Artifacts = slices.Clone(real.Artifacts)
	x.FinishedAt = base.Add(time.Duration(hour) * time.Hour)
	x.StartedAt = x.FinishedAt.Add(-time.Minute)
	mod(&x)
	return &x
}

// snapshot returns every key under backups/ (what a retention run may
// touch).
func snapshot(t *testing.T, b bucket.Reader) []string {
	t.Helper()
	return keysUnder(t, b, requests.BackupsPrefix)
}

// damagedKeys returns the keys Report.damaged names (read through JSON,
// as the scanner prints a report).
func damagedKeys(t *testing.T, rep *retention.Report) []string {
	t.Helper()
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Damaged []struct{ Key, Reason string }
	}
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, d := range v.Damaged {
		if d.Reason == "" {
			t.Errorf("damaged %s without a reason", d.Key)
		}
		keys = append(keys, d.Key)
	}
	slices.Sort(keys)
	return keys
}

// TestForgedIndexesDeleteNothingElse plants, in the folder of a plan's
// source, old indexes whose content names another cluster's backup, a
// real backup of the plan, or whose artifacts point at a real backup's
// keys. Retention must count none of them, delete nothing (the real
// backups are all kept), and report them.
func TestForgedIndexesDeleteNothingElse(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		writeAll(t, b, scheduled(3))
		tenant := writeBackupIn(t, b, "tenant-b", source, spec{id: "victim-b", plan: plan, hour: 0})
		forged := map[string]*index.BackupIndex{
			// Another tenant's backup, claimed from prod's folder.
			"forged-tenant": forge(tenant, -10, func(x *index.BackupIndex) {}),
			// A real backup of this plan, claimed by an older index.
			"forged-twin": forge(readIndex(t, b, "nightly-00"), -9, func(x *index.BackupIndex) {}),
			// Its own folder, but artifacts at nightly-01's keys.
			"forged-artifacts": forge(readIndex(t, b, "nightly-01"), -8, func(x *index.BackupIndex) {
				x.BackupID, x.RequestID = "forged-artifacts", "forged-artifacts"
			}),
		}
		var wantDamaged []string
		for id, x := range forged {
			key := requests.IndexKey(cluster, source, id)
			plantIndex(t, b, key, x)
			wantDamaged = append(wantDamaged, key)
		}
		slices.Sort(wantDamaged)
		before := snapshot(t, b)

		rep := apply(t, newRunner(t, b, "a"), policy(3))
		wantIDs(t, "deleted", rep.Deleted, nil)
		wantIDs(t, "kept", rep.Kept, []string{"nightly-02", "nightly-01", "nightly-00"})
		if after := snapshot(t, b); !slices.Equal(after, before) {
			t.Errorf("retention changed backups/:\n gone %q\n new %q", minus(before, after), minus(after, before))
		}
		wantIDs(t, "listed", listed(t, b), []string{"nightly-02", "nightly-01", "nightly-00"})
		if got := damagedKeys(t, rep); !slices.Equal(got, wantDamaged) {
			t.Errorf("report's damaged %q, want %q", got, wantDamaged)
		}
		// The victims stay restorable.
		for _, id := range []string{"nightly-00", "nightly-01", "victim-b"} {
			if _, err := index.Find(t.Context(), b, id); err != nil {
				t.Errorf("Find(%s): %v", id, err)
			}
		}
	})
}

// readIndex reads back the index of a test backup of the plan.
func readIndex(t *testing.T, b bucket.Reader, id string) *index.BackupIndex {
	t.Helper()
	data, _, err := bucket.GetBytes(t.Context(), b, requests.IndexKey(cluster, source, id))
	if err != nil {
		t.Fatal(err)
	}
	var x index.BackupIndex
	if err := json.Unmarshal(data, &x); err != nil {
		t.Fatal(err)
	}
	return &x
}

func minus(a, b []string) []string {
	var out []string
	for _, k := range a {
		if !slices.Contains(b, k) {
			out = append(out, k)
		}
	}
	return out
}

// TestIndexFinishedInTheFuture plants a well-formed index of the plan in
// its own folder that claims to have finished in 2099. It is not the
// newest backup: it neither pushes real backups out nor counts as the
// newest good one, and retention does not delete it either (a damaged
// index is for a person to look at).
func TestIndexFinishedInTheFuture(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		writeAll(t, b, scheduled(2))
		future := forge(readIndex(t, b, "nightly-01"), 0, func(x *index.BackupIndex) {
			x.BackupID, x.RequestID = "nightly-99", "nightly-99"
			x.FinishedAt = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
			x.StartedAt = x.FinishedAt.Add(-time.Minute)
			for i := range x.Artifacts {
				x.Artifacts[i].Key = requests.ArtifactKey(cluster, source, x.BackupID, x.Attempt, x.Artifacts[i].Name)
			}
		})
		key := requests.IndexKey(cluster, source, "nightly-99")
		plantIndex(t, b, key, future)
		before := snapshot(t, b)

		for _, keep := range []int{2, 1} {
			rep := apply(t, newRunner(t, b, "a"), policy(keep))
			want := []string{"nightly-01", "nightly-00"}[:keep]
			wantIDs(t, "kept", rep.Kept, want)
			if keep == 2 {
				wantIDs(t, "deleted with keep 2", rep.Deleted, nil)
				if after := snapshot(t, b); !slices.Equal(after, before) {
					t.Errorf("keep 2 changed backups/:\n gone %q\n new %q", minus(before, after), minus(after, before))
				}
			} else {
				wantIDs(t, "deleted with keep 1", rep.Deleted, []string{"nightly-00"})
			}
			if got := damagedKeys(t, rep); !slices.Equal(got, []string{key}) {
				t.Errorf("keep %d: report's damaged %q, want %q", keep, got, key)
			}
		}
		if keys := keysUnder(t, b, dir("nightly-99")); !slices.Contains(keys, key) {
			t.Errorf("the future index was deleted: %q left", keys)
		}
		wantIDs(t, "listed", listed(t, b), []string{"nightly-01"})
	})
}

// TestGarbageCollectionLeavesDamagedBackupsAlone: an index that is not
// believed is no reason to delete an attempt folder it does not name.
func TestGarbageCollectionLeavesDamagedBackupsAlone(t *testing.T) {
	b := newFS(t)
	writeBackup(t, b, spec{id: "nightly-00", plan: plan, attempt: 2})
	// The first attempt's folder, which the real index does not name, and
	// an index that names it but claims another cluster.
	if _, err := bucket.PutBytes(t.Context(), b, requests.ArtifactKey(cluster, source, "nightly-05", 1, "tree.tar.zst"), []byte("x"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(t.Context(), b, requests.ArtifactKey(cluster, source, "nightly-05", 2, "tree.tar.zst"), []byte("x"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := forge(readIndex(t, b, "nightly-00"), 5, func(x *index.BackupIndex) {
		x.BackupID, x.Cluster, x.Attempt = "nightly-05", "tenant-b", 1
	})
	plantIndex(t, b, requests.IndexKey(cluster, source, "nightly-05"), bad)
	before := keysUnder(t, b, dir("nightly-05"))
	rep, err := newRunner(t, b, "a").CollectGarbage(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if after := keysUnder(t, b, dir("nightly-05")); !slices.Equal(after, before) {
		t.Errorf("garbage collection removed %q of a backup with a damaged index", minus(before, after))
	}
	if why := rep.Left[dir("nightly-05")]; !strings.Contains(why, "damaged") {
		t.Errorf("left %v, want %s left as damaged", rep.Left, dir("nightly-05"))
	}
}
