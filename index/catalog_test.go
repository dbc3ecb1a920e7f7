package index_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/reqcount"
	"github.com/cnvrg/capsule/requests"
)

// ids returns the listing's backup ids in order.
func ids(l *index.Listing) []string {
	var out []string
	for _, e := range l.Entries {
		v := ""
		if e.Verification != nil {
			v = "+v"
		}
		out = append(out, e.Cluster+"/"+e.BackupID+v)
	}
	return out
}

// writeOld writes an index the way capsule did before the catalog: no
// pointer, no event.
func writeOld(t *testing.T, b bucket.Bucket, x *index.BackupIndex) {
	t.Helper()
	data, _ := json.Marshal(x)
	if _, err := bucket.PutBytes(context.Background(), b, x.Key(), data, bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
}

func sameAsWalk(t *testing.T, b bucket.Bucket, c index.Catalog, f index.Filter) *index.Listing {
	t.Helper()
	ctx := context.Background()
	got, err := c.List(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	want, err := index.ListAll(ctx, b, f)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := ids(got), ids(want); !slices.Equal(g, w) {
		t.Fatalf("catalog listing %v, walk %v", g, w)
	}
	if g, w := states(got), states(want); !maps.Equal(g, w) {
		t.Fatalf("catalog listing states %v, walk %v", g, w)
	}
	return got
}

func TestCatalogOldBucketThenBoundedListing(t *testing.T) {
	raw := newBucket(t)
	b := &reqcount.Bucket{B: raw}
	ctx := context.Background()
	t0 := time.Now().Add(-48 * time.Hour).UTC()
	// A bucket written before the catalog: 60 backups in two clusters.
	for i := range 60 {
		cluster := []string{"cnvrg/app", "other"}[i%2]
		writeOld(t, raw, idx(cluster, "cnvrg/pg", fmt.Sprintf("old%03d", i), t0.Add(time.Duration(i)*time.Minute)))
	}
	c := index.Catalog{Bucket: b, Writer: b}
	// The first listing walks and writes the snapshots.
	sameAsWalk(t, raw, c, index.Filter{})
	// New backups come with their catalog events.
	for i := range 5 {
		x := idx("cnvrg/app", "cnvrg/pg", fmt.Sprintf("new%03d", i), t0.Add(24*time.Hour+time.Duration(i)*time.Minute))
		if err := index.Write(ctx, raw, x); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			v := &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: x.BackupID, RequestID: "v1", OK: true, VerifiedAt: time.Now().UTC(), Checks: []index.CheckResult{}}
			if err := index.WriteVerification(ctx, raw, x, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.Reset()
	l := sameAsWalk(t, raw, c, index.Filter{Cluster: "cnvrg/app"})
	if len(l.Entries) != 35 {
		t.Fatalf("listed %d backups of cnvrg/app, want 35", len(l.Entries))
	}
	// One LIST of the cluster's catalog, one GET of its snapshot, one
	// GET per event (5 commits and a verification): no index is read.
	if n := b.Counts(); n.Total() > 10 || n.Get > 8 {
		t.Fatalf("a listing of 35 backups made %+v requests, want at most 10", n)
	}
	b.Reset()
	sameAsWalk(t, raw, c, index.Filter{})
	if n := b.Counts(); n.Total() > 12 {
		t.Fatalf("a listing of every cluster made %+v requests, want at most 12", n)
	}
	// A backup made before the catalog got its pointer at migration:
	// describe costs a handful of requests.
	b.Reset()
	e, err := index.Find(ctx, b, "old007")
	if err != nil || e.Cluster != "other" {
		t.Fatalf("find old007: %v %+v", err, e)
	}
	if n := b.Counts(); n.Total() > 4 {
		t.Fatalf("find by id made %+v requests, want at most 4", n)
	}
	b.Reset()
	if e, err := index.Find(ctx, b, "new000"); err != nil || e.Verification == nil {
		t.Fatalf("find new000: %v %+v", err, e)
	}
	if n := b.Counts(); n.Total() > 4 {
		t.Fatalf("find by id made %+v requests, want at most 4", n)
	}
}

func TestCatalogCompactsEvents(t *testing.T) {
	raw := newBucket(t)
	b := &reqcount.Bucket{B: raw}
	ctx := context.Background()
	c := index.Catalog{Bucket: b, Writer: b}
	sameAsWalk(t, raw, c, index.Filter{}) // an empty bucket is migrated at once
	t0 := time.Now().Add(-time.Hour).UTC()
	// Commits compact as they go: however many there were since the last
	// listing, the next one reads at most CompactAfter events.
	for i := range 5*index.CompactAfter + 3 {
		if err := index.Write(ctx, raw, idx("c1", "s", fmt.Sprintf("b%03d", i), t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	b.Reset()
	sameAsWalk(t, raw, c, index.Filter{Cluster: "c1"})
	if n := b.Counts(); n.Total() > index.CompactAfter+3 {
		t.Fatalf("a listing after %d commits made %+v requests, want at most %d", 5*index.CompactAfter+3, n, index.CompactAfter+3)
	}
}

// A commit compacts only when CompactAfter events were written since the
// newest snapshot, and of commits that settle at once only the newest
// compacts: the events a snapshot folded stay beside it for a while, and
// counting them made every later commit read them all again.
func TestCommitsCompactOncePerCompactAfter(t *testing.T) {
	for _, writers := range []int{1, 4} {
		t.Run(fmt.Sprintf("%d writers", writers), func(t *testing.T) {
			raw := newBucket(t)
			b := &reqcount.Bucket{B: raw}
			ctx := context.Background()
			sameAsWalk(t, raw, index.Catalog{Bucket: b, Writer: b}, index.Filter{}) // an empty bucket is migrated at once
			t0 := time.Now().Add(-time.Hour).UTC()
			b.Reset()
			const n = 4 * index.CompactAfter
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < n; i += writers {
						if err := index.Write(ctx, b, idx("c1", "s", fmt.Sprintf("b%03d", i), t0.Add(time.Duration(i)*time.Second))); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			// Each compaction reads the snapshot and the events since it
			// (more of them when commits go on meanwhile).
			if got, most := b.Counts().Get, int64(n/index.CompactAfter*2*(index.CompactAfter+2)); got > most {
				t.Fatalf("%d commits made %d GETs, want at most %d (one compaction per %d commits)", n, got, most, index.CompactAfter)
			}
			sameAsWalk(t, raw, index.Catalog{Bucket: raw, Writer: raw}, index.Filter{Cluster: "c1"})
		})
	}
}

func TestCatalogForgetRemovesDeletedBackup(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	c := index.Catalog{Bucket: b, Writer: b}
	t0 := time.Now().Add(-time.Hour).UTC()
	for _, id := range []string{"a1", "a2"} {
		if err := index.Write(ctx, b, idx("c1", "s", id, t0)); err != nil {
			t.Fatal(err)
		}
	}
	sameAsWalk(t, b, c, index.Filter{})
	e, err := index.Find(ctx, b, "a1")
	if err != nil {
		t.Fatal(err)
	}
	// What retention does: delete the folder, then tell the catalog.
	if err := bucket.Walk(ctx, b, requests.BackupDir("c1", "s", "a1"), func(o bucket.ObjectInfo) error { return b.Delete(ctx, o.Key) }); err != nil {
		t.Fatal(err)
	}
	if err := index.Forget(ctx, b, e); err != nil {
		t.Fatal(err)
	}
	if l := sameAsWalk(t, b, c, index.Filter{Cluster: "c1"}); len(l.Entries) != 1 {
		t.Fatalf("listed %v after a1 was deleted", ids(l))
	}
	if _, err := index.Find(ctx, b, "a1"); !errors.Is(err, index.ErrBackupNotFound) {
		t.Fatalf("find a deleted backup: %v", err)
	}
}

// A snapshot or event that is not believed counts as absent: the listing
// is the walk's, never the forgery's.
func TestCatalogForgedObjectsAreNotBelieved(t *testing.T) {
	t0 := time.Now().Add(-time.Hour).UTC()
	forge := map[string]func(t *testing.T, b bucket.Bucket){
		"snapshot with a backup dated in the future": func(t *testing.T, b bucket.Bucket) {
			x := idx("c1", "s", "zz-forged", time.Now().Add(365*24*time.Hour))
			putSnapshot(t, b, "c1", x, time.Now().Add(365*24*time.Hour))
		},
		"snapshot with an entry of another cluster": func(t *testing.T, b bucket.Bucket) {
			putSnapshot(t, b, "c1", idx("c2", "s", "zz-other", t0), t0)
		},
		"snapshot that is not JSON": func(t *testing.T, b bucket.Bucket) {
			put(t, b, requests.CatalogClusterDir("c1")+"snapshot-99999999-x.json", []byte("{"))
		},
		"commit event of another cluster's index": func(t *testing.T, b bucket.Bucket) {
			data, _ := json.Marshal(idx("c2", "s", "zz-moved", t0))
			put(t, b, requests.CatalogEventDir("c1", "zz-moved")+"index.json", data)
		},
		"commit event pointing into another backup's folder": func(t *testing.T, b bucket.Bucket) {
			x := idx("c1", "s", "zz-steal", t0)
			x.Artifacts[0].Key = requests.ArtifactKey("c1", "s", "a1", 1, "tree.tar")
			data, _ := json.Marshal(x)
			put(t, b, requests.CatalogEventDir("c1", "zz-steal")+"index.json", data)
		},
		"pointer to another cluster": func(t *testing.T, b bucket.Bucket) {
			// The real pointer exists; a forged one cannot replace it
			// (create-only), so forge one for an id whose pointer was
			// removed.
			_ = b.Delete(context.Background(), requests.CatalogPointerKey("a1"))
			put(t, b, requests.CatalogPointerKey("a1"), []byte(`{"apiVersion":"capsule/v1","kind":"CatalogPointer","backupId":"a1","cluster":"c2","source":"s"}`))
		},
	}
	for name, f := range forge {
		t.Run(name, func(t *testing.T) {
			b := newBucket(t)
			ctx := context.Background()
			c := index.Catalog{Bucket: b, Writer: b}
			for _, id := range []string{"a1", "a2"} {
				if err := index.Write(ctx, b, idx("c1", "s", id, t0)); err != nil {
					t.Fatal(err)
				}
			}
			sameAsWalk(t, b, c, index.Filter{})
			f(t, b)
			l := sameAsWalk(t, b, c, index.Filter{Cluster: "c1"})
			for _, e := range l.Entries {
				if strings.HasPrefix(e.BackupID, "zz-") {
					t.Fatalf("a forged backup is listed: %v", ids(l))
				}
			}
			if e, err := index.Find(ctx, b, "a1"); err != nil || e.Cluster != "c1" {
				t.Fatalf("find a1: %v %+v", err, e)
			}
		})
	}
}

func put(t *testing.T, b bucket.Bucket, key string, data []byte) {
	t.Helper()
	if _, err := bucket.PutBytes(context.Background(), b, key, data, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// putSnapshot writes a snapshot of cluster holding x, claimed written at
// written, newer than any other.
func putSnapshot(t *testing.T, b bucket.Bucket, cluster string, x *index.BackupIndex, written time.Time) {
	t.Helper()
	s := map[string]any{"apiVersion": requests.APIVersion, "kind": index.KindCatalogSnapshot, "cluster": cluster,
		"entries": []map[string]any{{"index": x, "written": written}}}
	data, _ := json.Marshal(s)
	put(t, b, requests.CatalogClusterDir(cluster)+"snapshot-99999999T000000Z-forged.json", data)
}
