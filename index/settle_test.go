package index_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/reqcount"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
)

// s3Bucket is a fresh bucket of the S3 test server.
func s3Bucket(t *testing.T) bucket.Bucket {
	t.Helper()
	srv := s3test.Shared(t)
	b, err := s3.New(t.Context(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	return bucket.Prefixed(b, "capsule/")
}

// Commits list the catalog only when its events may have passed
// CompactAfter, not once each: a single writer lists about once per
// compaction, several writers about once per CompactAfter of their
// cluster's commits between them; of several that would compact at once,
// one does. The listings after them still read at
// most about CompactAfter events, and see every backup.
func TestCommitsListTheCatalogOncePerCompaction(t *testing.T) {
	for _, writers := range []int{1, 4} {
		t.Run(fmt.Sprintf("%d writers", writers), func(t *testing.T) {
			raw := s3Bucket(t)
			ctx := context.Background()
			sameAsWalk(t, raw, index.Catalog{Bucket: raw, Writer: raw}, index.Filter{}) // an empty bucket is migrated at once
			t0 := time.Now().Add(-time.Hour).UTC()
			const n = 6 * index.CompactAfter
			counted := make([]*reqcount.Bucket, writers)
			var wg sync.WaitGroup
			for w := range writers {
				counted[w] = &reqcount.Bucket{B: raw} // a worker of its own
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < n; i += writers {
						if err := index.Write(ctx, counted[w], idx("c1", "s", fmt.Sprintf("b%03d", i), t0.Add(time.Duration(i)*time.Second))); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			var lists, gets int64
			for _, c := range counted {
				lists += c.Counts().List
				gets += c.Counts().Get
			}
			// Each writer's first commit lists; then about one LIST per
			// CompactAfter commits, a few more around each compaction.
			if most := int64(writers + 3*n/index.CompactAfter*writers); lists > most {
				t.Errorf("%d commits by %d writers made %d LISTs, want at most %d", n, writers, lists, most)
			}
			// Each event is read by one compaction (with the snapshot it
			// starts from): of commits that find their own event the
			// newest at once, one compacts (its marker); one more may
			// where a minute turns (the marker is per minute).
			if most := int64(n + 2*n/index.CompactAfter + index.CompactAfter); gets > most {
				t.Errorf("%d commits by %d writers made %d GETs, want at most %d (each event read once)", n, writers, gets, most)
			}
			// A listing reads the events since the newest snapshot, and
			// those of the snapshot's own second (Last-Modified is to the
			// second on S3), which no commit counts.
			same := sameSecond(t, raw, "c1")
			b := &reqcount.Bucket{B: raw}
			sameAsWalk(t, raw, index.Catalog{Bucket: b}, index.Filter{Cluster: "c1"})
			if c, most := b.Counts(), int64(index.CompactAfter+3+4*writers+same); c.Total() > most {
				t.Errorf("a listing after the commits made %+v requests, want at most %d", c, most)
			}
			t.Logf("%d writers: %d LISTs and %d GETs for %d commits; %d events of the snapshot's second", writers, lists, gets, n, same)
		})
	}
}

// sameSecond counts cluster's catalog events written in the second of
// its newest snapshot, or after it in the same second.
func sameSecond(t *testing.T, b bucket.Bucket, cluster string) int {
	t.Helper()
	var snap time.Time
	var events []time.Time
	err := bucket.Walk(context.Background(), b, requests.CatalogClusterDir(cluster), func(o bucket.ObjectInfo) error {
		rest := strings.TrimPrefix(o.Key, requests.CatalogClusterDir(cluster))
		switch {
		case strings.HasPrefix(rest, "snapshot-") && !strings.HasSuffix(rest, index.SignatureSuffix):
			if o.LastModified.After(snap) {
				snap = o.LastModified
			}
		case strings.HasPrefix(rest, "new/"):
			events = append(events, o.LastModified)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range events {
		if !snap.IsZero() && e.Truncate(time.Second).Equal(snap.Truncate(time.Second)) {
			n++
		}
	}
	return n
}
