package watcher_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
)

// loseRequest is a bucket whose batch delete, while on, deletes every key
// but a request's and answers a per-key error for it (as DeleteObjects
// may: it promises no order, and a key can fail alone), and whose DELETE
// of a request then fails too: the lease is gone, the request stays.
type loseRequest struct {
	bucket.Bucket
	on atomic.Bool
}

func isRequest(key string) bool { return strings.Contains(key, requests.RequestsPrefix) }

func (l *loseRequest) Delete(ctx context.Context, key string) error {
	if l.on.Load() && isRequest(key) {
		return fmt.Errorf("delete %s: InternalError (injected)", key)
	}
	return l.Bucket.Delete(ctx, key)
}

func (l *loseRequest) DeleteBatch(ctx context.Context, keys []string) ([]error, error) {
	bd := l.Bucket.(bucket.BatchDeleter)
	if !l.on.Load() {
		return bd.DeleteBatch(ctx, keys)
	}
	perKey := make([]error, len(keys))
	var rest []string
	var at []int
	for i, k := range keys {
		if isRequest(k) {
			perKey[i] = fmt.Errorf("delete %s: InternalError (injected)", k)
			continue
		}
		rest, at = append(rest, k), append(at, i)
	}
	if len(rest) > 0 {
		got, err := bd.DeleteBatch(ctx, rest)
		if err != nil {
			return nil, err
		}
		for j, e := range got {
			perKey[at[j]] = e
		}
	}
	return perKey, nil
}

// A finish whose batch delete removed the lease but not the request (it
// failed alone, and again by itself) leaves a finished request without a
// lease. A later pass claims it afresh, as attempt 1, and changes
// nothing: a backup committed by attempt 1 finds its first artifact's key
// taken and its index committed by this request; one committed by a
// takeover (attempt 2) runs again into attempt 1's free folder and its
// create-only index finds the commit there; a restore looks for its
// result and does not run. Each keeps its index and its first result, and
// the request and the lease are gone after.
func TestLeaseDeletedWithoutItsRequestChangesNothing(t *testing.T) {
	srv := s3test.Shared(t)
	sb, err := s3.New(context.Background(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	c := &counting{Bucket: sb, counts: map[string]int{}}
	lr := &loseRequest{Bucket: c}
	e := newEnv(t, lr)
	ctx := context.Background()
	w1 := e.watcher("w1", nil)
	w2 := e.watcher("w2", nil)

	// finishLosingRequest runs id to its result with the request's
	// delete failing, checks that the lease went and the request stayed,
	// then lets w2 claim it afresh until the request is gone.
	finishLosingRequest := func(id string, run func()) (first *requests.Result, calls map[string]int) {
		t.Helper()
		lr.on.Store(true)
		first = e.waitResult(id, 20*time.Second, run)
		w1.Wait()
		lr.on.Store(false)
		if _, err := e.b.Head(ctx, requests.RequestKey(id)); err != nil {
			t.Fatalf("the request should have stayed: %v", err)
		}
		if _, err := e.b.Head(ctx, requests.LeaseKey(id)); !errors.Is(err, bucket.ErrNotFound) {
			t.Fatalf("the lease should be gone: %v", err)
		}
		c.take()
		passUntilGone(ctx, w2, e.b, requests.RequestKey(id))
		calls = c.take()
		for _, key := range []string{requests.RequestKey(id), requests.LeaseKey(id)} {
			if _, err := e.b.Head(ctx, key); !errors.Is(err, bucket.ErrNotFound) {
				t.Errorf("%s left behind: %v", key, err)
			}
		}
		again := e.result(id)
		if again == nil || again.Worker != first.Worker || !again.FinishedAt.Equal(first.FinishedAt) || again.Attempts != first.Attempts {
			t.Errorf("result changed: %+v, was %+v", again, first)
		}
		return first, calls
	}
	committed := func(id string) (x *index.BackupIndex, etags map[string]string) {
		t.Helper()
		x, err := index.Read(ctx, e.b, requests.IndexKey(requests.DefaultCluster, "data", id))
		if err != nil {
			t.Fatal(err)
		}
		etags = map[string]string{}
		for _, key := range []string{x.Key(), x.Artifacts[0].Key} {
			info, err := e.b.Head(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			etags[key] = info.ETag
		}
		return x, etags
	}
	unchanged := func(etags map[string]string) {
		t.Helper()
		for key, etag := range etags {
			if info, err := e.b.Head(ctx, key); err != nil || info.ETag != etag {
				t.Errorf("%s: %v, etag %q; want it as committed (%q)", key, err, info.ETag, etag)
			}
		}
	}

	t.Run("backup committed by attempt 1", func(t *testing.T) {
		id := e.submit(backupReq("data"))
		var etags map[string]string
		first, _ := finishLosingRequest(id, func() {
			w1.RunOnce(ctx)
			w1.Wait()
			if e.result(id) != nil && etags == nil {
				_, etags = committed(id)
			}
		})
		if first.Status != requests.StatusSucceeded {
			t.Fatalf("status %s: %s", first.Status, first.Error)
		}
		unchanged(etags)
	})

	t.Run("backup committed by a takeover", func(t *testing.T) {
		id := e.submit(backupReq("data"))
		e.writeLease(id, 1, 3*time.Second) // attempt 1 died before writing anything
		var etags map[string]string
		var x *index.BackupIndex
		first, _ := finishLosingRequest(id, func() {
			w1.RunOnce(ctx)
			w1.Wait()
			if e.result(id) != nil && etags == nil {
				x, etags = committed(id)
			}
		})
		if first.Status != requests.StatusSucceeded || first.Attempts != 2 || x.Attempt != 2 {
			t.Fatalf("status %s after %d attempts, index of attempt %d: want succeeded by attempt 2", first.Status, first.Attempts, x.Attempt)
		}
		unchanged(etags)
		if en, err := index.Find(ctx, e.b, id); err != nil || en.Attempt != 2 {
			t.Errorf("Find: %+v, %v: want attempt 2's backup", en, err)
		}
	})

	t.Run("restore", func(t *testing.T) {
		bid := e.submit(backupReq("data"))
		e.waitResult(bid, 15*time.Second, func() { w1.RunOnce(ctx); w1.Wait() })
		id := e.submit(&requests.Request{Kind: requests.KindRestore, BackupID: bid, Target: "data"})
		first, calls := finishLosingRequest(id, func() { w1.RunOnce(ctx); w1.Wait() })
		if first.Status != requests.StatusSucceeded {
			t.Fatalf("restore status %s: %s", first.Status, first.Error)
		}
		if calls["HEAD results"] != 1 || calls["GET backups"] != 0 {
			t.Errorf("the fresh claim of a finished restore made %v; want a look for its result and no read of the backup", calls)
		}
	})
}
