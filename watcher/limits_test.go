package watcher_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/buckettest"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

// huge is the size of the oversized control objects below: 64 times the
// default limit, written as a stream of zeros.
const huge = 64 << 20

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// putHuge writes huge zeros at key as a stream (a multipart upload on
// S3), never holding it in memory.
func (e *env) putHuge(key string) {
	e.t.Helper()
	u, err := e.b.Upload(context.Background(), key, bucket.PutOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := io.Copy(u, io.LimitReader(zeros{}, huge)); err != nil {
		_ = u.Abort()
		e.t.Fatal(err)
	}
	if _, err := u.Commit(); err != nil {
		e.t.Fatal(err)
	}
}

// counted returns a watcher whose reads of the bucket are counted.
func (e *env) counted(name string, mod func(*watcher.Config)) (*watcher.Watcher, *buckettest.Counted) {
	e.t.Helper()
	cb := buckettest.Count(e.b)
	w := e.watcher(name, func(c *watcher.Config) {
		c.Bucket = cb
		if mod != nil {
			mod(c)
		}
	})
	return w, cb
}

func TestHugeRequestIsRejectedWithoutBeingRead(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		w, cb := e.counted("w1", nil)
		pass := func() { w.RunOnce(ctx); w.Wait() }
		const id = "huge-request"
		e.putHuge(requests.RequestKey(id))
		after := e.submit(backupReq("data"))
		r := e.waitResult(id, 15*time.Second, pass)
		want := fmt.Sprintf("request object %s is %d bytes, over the 1 MiB limit", requests.RequestKey(id), huge)
		if r.Status != requests.StatusRejected || !strings.Contains(r.Error, want) || r.Attempts != 1 {
			t.Errorf("result %s after %d attempts: %q; want rejected after 1 naming %q", r.Status, r.Attempts, r.Error, want)
		}
		if n := cb.Read(requests.RequestKey(id)); n != 0 {
			t.Errorf("the worker read %d bytes of the oversized request", n)
		}
		if _, err := e.b.Head(ctx, requests.RequestKey(id)); !errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("the rejected request is still there: %v", err)
		}
		if r := e.waitResult(after, 15*time.Second, pass); r.Status != requests.StatusSucceeded {
			t.Errorf("a good request after the huge one: %s %q", r.Status, r.Error)
		}
	})
}

// With worker.maxControlObject at 64 KiB, a valid request padded to just
// under it runs and one just over it is rejected unread.
func TestConfiguredRequestLimit(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		const limit = 64 << 10
		w, cb := e.counted("w1", func(c *watcher.Config) { c.MaxControlObject = limit })
		pass := func() { w.RunOnce(ctx); w.Wait() }
		padded := func(id string, size int) {
			body := fmt.Sprintf(`{"apiVersion":"capsule/v1","kind":"Backup","id":%q,"source":"data"`, id)
			e.putRaw(requests.RequestKey(id), []byte(body+strings.Repeat(" ", size-len(body)-1)+"}"))
		}
		padded("at-limit", limit)
		padded("over-limit", limit+1)
		if r := e.waitResult("at-limit", 15*time.Second, pass); r.Status != requests.StatusSucceeded {
			t.Errorf("a request of exactly the limit: %s %q", r.Status, r.Error)
		}
		r := e.waitResult("over-limit", 15*time.Second, pass)
		if r.Status != requests.StatusRejected || !strings.Contains(r.Error, fmt.Sprintf("is %d bytes, over the 64 KiB limit", limit+1)) {
			t.Errorf("a request one byte over the limit: %s %q", r.Status, r.Error)
		}
		if n := cb.Read(requests.RequestKey("over-limit")); n != 0 {
			t.Errorf("the worker read %d bytes of the request over the limit", n)
		}
		x, _ := executor.New(executor.Config{Bucket: e.b, Engines: e.reg, Sources: e.srcs})
		for _, n := range []int64{1024, 1 << 30} {
			if _, err := watcher.New(watcher.Config{Bucket: e.b, Runner: x, MaxControlObject: n}); err == nil || !strings.HasPrefix(err.Error(), "max-control-object:") {
				t.Errorf("a limit of %d bytes: %v, want an error naming max-control-object", n, err)
			}
		}
	})
}

// The attempt limit is checked before the request's body is read: a
// request whose reading killed every earlier attempt ends failed without
// another read.
func TestAttemptLimitIsCheckedBeforeTheRequestIsRead(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := e.submit(backupReq("gate"))
		e.writeLease(id, 3, 3*time.Second)
		w, cb := e.counted("w1", nil)
		r := e.waitResult(id, 15*time.Second, func() { w.RunOnce(ctx); w.Wait() })
		if r.Status != requests.StatusFailed || !strings.Contains(r.Error, "abandoned after 3 attempts") {
			t.Fatalf("result %s %q, want failed: abandoned after 3 attempts", r.Status, r.Error)
		}
		if n := cb.Read(requests.RequestKey(id)); n != 0 {
			t.Errorf("the worker read %d bytes of a request out of attempts", n)
		}
	})
}

// An oversized lease is a damaged one: held until it expires by the
// worker's own lease length, then taken over; an orphaned one is swept.
// Neither is read.
func TestHugeLeaseCountsAsDamaged(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		w, cb := e.counted("w1", nil)
		id := e.submit(backupReq("data"))
		const orphan = "orphaned-lease"
		e.putHuge(requests.LeaseKey(orphan))
		e.putHuge(requests.LeaseKey(id))
		// Fresh, the damaged lease holds (it expires after the worker's
		// 3s); a slow upload may leave too little of that to tell.
		info, err := e.b.Head(ctx, requests.LeaseKey(id))
		if err != nil {
			t.Fatal(err)
		}
		age := info.ServerTime.Sub(info.LastModified)
		if n, _ := w.RunOnce(ctx); n != 0 && age < 2*time.Second {
			t.Fatalf("claimed a request whose damaged lease was %s old", age)
		} else if age >= 2*time.Second {
			t.Logf("the oversized lease was %s old when first seen: not checking that it holds", age)
		}
		if _, err := e.b.Head(ctx, requests.LeaseKey(orphan)); !errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("the oversized lease of no request was not swept: %v", err)
		}
		r := e.waitResult(id, 15*time.Second, func() { w.RunOnce(ctx); w.Wait() })
		if r.Status != requests.StatusSucceeded || r.Attempts != 1 {
			t.Errorf("result %s after %d attempts (%q), want succeeded after 1", r.Status, r.Attempts, r.Error)
		}
		// Once taken over, the lease is the worker's own small one.
		if n := cb.ReadUnder(requests.LeasesPrefix); n > requests.DefaultMaxControlObject {
			t.Errorf("the worker read %d bytes of leases", n)
		}
	})
}

// A cancel object is only ever looked at (HEAD), never read: a huge one
// cancels like any other, before the start and during a run.
func TestHugeCancelObjectCancelsUnread(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		w, cb := e.counted("w1", nil)
		early := e.submit(backupReq("gate"))
		e.putHuge(requests.CancelKey(early))
		if r := e.waitResult(early, 10*time.Second, func() { w.RunOnce(ctx); w.Wait() }); r.Status != requests.StatusCanceled {
			t.Errorf("canceled before the start: %s %q", r.Status, r.Error)
		}
		running := e.submit(backupReq("gate"))
		if n, err := w.RunOnce(ctx); n != 1 || err != nil {
			t.Fatalf("RunOnce = %d, %v", n, err)
		}
		<-e.gate.started
		e.putHuge(requests.CancelKey(running))
		if r := e.waitResult(running, 15*time.Second, nil); r.Status != requests.StatusCanceled {
			t.Errorf("canceled while running: %s %q", r.Status, r.Error)
		}
		w.Wait()
		if n := cb.ReadUnder(requests.CancelPrefix); n != 0 {
			t.Errorf("the worker read %d bytes of cancel objects", n)
		}
		if e.gate.calls.Load() != 1 {
			t.Errorf("the engine ran %d times, want once", e.gate.calls.Load())
		}
	})
}
