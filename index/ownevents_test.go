package index_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// eventReads counts the GETs of catalog events (catalog/clusters/…/new/…).
type eventReads struct {
	bucket.Bucket
	n atomic.Int64
}

func (e *eventReads) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	if strings.HasPrefix(key, requests.CatalogClustersPrefix) && strings.Contains(key, "/new/") {
		e.n.Add(1)
	}
	return e.Bucket.Get(ctx, key)
}

// A writer's compactions copy the commit events it wrote itself from
// memory, not with a GET each, and the snapshots they write list what
// the walk lists. An event written over since (here by a forger, with
// another cluster's index) is read again and judged as any other: it is
// reported damaged, not listed from the bytes this writer remembers.
func TestCompactionDoesNotReadItsOwnEventsBack(t *testing.T) {
	raw := s3Bucket(t)
	ctx := context.Background()
	sameAsWalk(t, raw, index.Catalog{Bucket: raw, Writer: raw}, index.Filter{}) // an empty bucket is migrated at once
	w := &eventReads{Bucket: raw}
	t0 := time.Now().Add(-time.Hour).UTC()
	const n = 2*index.CompactAfter + 2
	for i := range n {
		if err := index.Write(ctx, w, idx("c1", "s", fmt.Sprintf("b%03d", i), t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	snapshots := 0
	if err := bucket.Walk(ctx, raw, requests.CatalogClusterDir("c1"), func(o bucket.ObjectInfo) error {
		if strings.HasPrefix(o.Key, requests.CatalogClusterDir("c1")+"snapshot-") {
			snapshots++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if snapshots == 0 {
		t.Fatalf("%d commits wrote no snapshot", n)
	}
	if got := w.n.Load(); got != 0 {
		t.Errorf("%d commits and %d compactions read %d of their own events back, want 0", n, snapshots, got)
	}
	sameAsWalk(t, raw, index.Catalog{Bucket: raw}, index.Filter{Cluster: "c1"})

	// One more commit, then its event is written over.
	last := idx("c1", "s", "b999", t0.Add(time.Hour))
	if err := index.Write(ctx, w, last); err != nil {
		t.Fatal(err)
	}
	key := requests.CatalogEventDir("c1", "b999") + "index.json"
	forged, _ := json.Marshal(idx("c2", "s", "b999", t0))
	put(t, raw, key, forged)
	w.n.Store(0)
	l, err := index.Catalog{Bucket: w}.List(ctx, index.Filter{Cluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.n.Load(); got != 1 {
		t.Errorf("the listing read %d events, want the one written over", got)
	}
	damaged := false
	for _, d := range l.Damaged {
		damaged = damaged || (d.BackupID == "b999" && strings.Contains(d.Reason, key))
	}
	for _, e := range l.Entries {
		if e.BackupID == "b999" {
			t.Errorf("b999 is listed (from the remembered bytes?): %+v", e)
		}
	}
	if !damaged {
		t.Errorf("the event written over is not reported damaged: %+v", l.Damaged)
	}
}

// aged is a bucket whose listings date every object CatalogGrace and a
// minute back, so that a compaction finds what it folds old enough to
// delete; it counts DELETEs of catalog objects and batch deletes.
type aged struct {
	bucket.Bucket
	deletes, batches atomic.Int64
}

func (a *aged) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	p, err := a.Bucket.List(ctx, prefix, opts)
	for i := range p.Objects {
		p.Objects[i].LastModified = p.Objects[i].LastModified.Add(-index.CatalogGrace - time.Minute)
	}
	return p, err
}

func (a *aged) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, requests.CatalogClustersPrefix) {
		a.deletes.Add(1)
	}
	return a.Bucket.Delete(ctx, key)
}

func (a *aged) DeleteBatch(ctx context.Context, keys []string) ([]error, error) {
	a.batches.Add(1)
	return a.Bucket.(bucket.BatchDeleter).DeleteBatch(ctx, keys)
}

// A compaction deletes the events it folded (once CatalogGrace old) in
// one batch call where the bucket has one, not with a DELETE each; they
// are gone after, and the listing is still the walk's.
func TestCompactionDeletesFoldedEventsInOneCall(t *testing.T) {
	raw := s3Bucket(t)
	ctx := context.Background()
	sameAsWalk(t, raw, index.Catalog{Bucket: raw, Writer: raw}, index.Filter{}) // an empty bucket is migrated at once
	a := &aged{Bucket: raw}
	t0 := time.Now().Add(-time.Hour).UTC()
	const n = index.CompactAfter + 2
	for i := range n {
		if err := index.Write(ctx, a, idx("c1", "s", fmt.Sprintf("b%03d", i), t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	events := 0
	if err := bucket.Walk(ctx, raw, requests.CatalogClusterDir("c1"), func(o bucket.ObjectInfo) error {
		if strings.Contains(o.Key, "/new/") {
			events++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if events >= n {
		t.Fatalf("%d of %d events left: no compaction deleted any", events, n)
	}
	if d, b := a.deletes.Load(), a.batches.Load(); d != 0 || b != 1 {
		t.Errorf("the compaction deleted %d events with %d DELETEs and %d batch calls; want one batch call", n-events, d, b)
	}
	sameAsWalk(t, raw, index.Catalog{Bucket: raw}, index.Filter{Cluster: "c1"})
}
