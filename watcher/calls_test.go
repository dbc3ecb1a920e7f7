package watcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

// counting counts the calls made on a real bucket by operation and by
// the kind of object (requests, leases, …), so that tests can show that a
// call the claim protocol no longer makes stays gone. stale, when set,
// adds keys to listings of requests/: a listing made just before another
// worker finished those requests.
type counting struct {
	bucket.Bucket
	mu     sync.Mutex
	counts map[string]int
	stale  []string
	// listed, when set, is called after each listing with its prefix.
	listed func(prefix string)
}

func (c *counting) add(op, key string) {
	key = strings.TrimPrefix(key, "capsule/")
	kind, _, _ := strings.Cut(key, "/")
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[op+" "+kind]++
}

// take returns the counts so far and starts again.
func (c *counting) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.counts
	c.counts = map[string]int{}
	return m
}

func (c *counting) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	c.add("GET", key)
	return c.Bucket.Get(ctx, key)
}

func (c *counting) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	c.add("HEAD", key)
	return c.Bucket.Head(ctx, key)
}

func (c *counting) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	c.add("LIST", prefix)
	p, err := c.Bucket.List(ctx, prefix, opts)
	if err == nil && strings.HasSuffix(prefix, requests.RequestsPrefix) && opts.StartAfter == "" {
		c.mu.Lock()
		for _, id := range c.stale {
			p.Objects = append([]bucket.ObjectInfo{{Key: prefix + id + ".json", Size: 100}}, p.Objects...)
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	listed := c.listed
	c.mu.Unlock()
	if listed != nil {
		listed(prefix)
	}
	return p, err
}

func (c *counting) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	c.add("PUT", key)
	return c.Bucket.Put(ctx, key, body, size, opts)
}

func (c *counting) Delete(ctx context.Context, key string) error {
	c.add("DELETE", key)
	return c.Bucket.Delete(ctx, key)
}

// DeleteBatch counts one DELETES call, by the kind of its first key, and
// each key it names as BATCHED by its kind (not a call).
func (c *counting) DeleteBatch(ctx context.Context, keys []string) ([]error, error) {
	c.add("DELETES", keys[0])
	for _, k := range keys {
		c.add("BATCHED", k)
	}
	return c.Bucket.(bucket.BatchDeleter).DeleteBatch(ctx, keys)
}

// countingEnv is an env on a fresh bucket of the S3 test server whose
// calls are counted.
func countingEnv(t *testing.T) (*env, *counting) {
	srv := s3test.Shared(t)
	sb, err := s3.New(context.Background(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	c := &counting{Bucket: sb, counts: map[string]int{}}
	return newEnv(t, c), c
}

// A claim of a request nobody holds reads no lease and no request
// metadata, a backup's looks for no result (its create-only writes are
// the guard) and finds cancel objects in the pass's listing of cancel/,
// not with a HEAD, and a short run writes its lease once, deletes no cancel
// object that was never there, and deletes its request and lease in one
// call (S3 DeleteObjects); the request still runs once and leaves no
// control object behind.
func TestClaimMakesNoNeedlessCalls(t *testing.T) {
	e, c := countingEnv(t)
	ctx := context.Background()
	id := e.submit(backupReq("data"))
	w := e.watcher("w1", nil)
	c.take()
	r := e.waitResult(id, 15*time.Second, func() { w.RunOnce(ctx); w.Wait() })
	got := c.take()
	if r.Status != requests.StatusSucceeded {
		t.Fatalf("status %s: %s", r.Status, r.Error)
	}
	for call, want := range map[string]int{
		"GET leases": 0, "HEAD requests": 0, "DELETE cancel": 0, "PUT leases": 1,
		"GET requests": 1, "HEAD results": 0, "DELETE requests": 0, "DELETE leases": 0,
		"DELETES requests": 1, "BATCHED requests": 1, "BATCHED leases": 1, "BATCHED cancel": 0,
		"HEAD cancel": 0, "LIST cancel": 1,
	} {
		if got[call] != want {
			t.Errorf("%s: %d calls, want %d (all: %v)", call, got[call], want, got)
		}
	}
	for _, key := range []string{requests.RequestKey(id), requests.LeaseKey(id), requests.CancelKey(id)} {
		if _, err := e.b.Head(ctx, key); !errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("%s left behind: %v", key, err)
		}
	}
}

// A request that another worker finished after this worker's listing
// (request and lease gone, result there) costs three calls and is not
// run or answered again: the fresh lease, the request's GET (gone), and
// the lease's removal. No result is looked for or written.
func TestStaleListingCostsThreeCallsAndRunsNothing(t *testing.T) {
	e, c := countingEnv(t)
	ctx := context.Background()
	id := e.submit(backupReq("data"))
	w1 := e.watcher("w1", nil)
	r := e.waitResult(id, 15*time.Second, func() { w1.RunOnce(ctx); w1.Wait() })
	w2 := e.watcher("w2", nil)
	c.mu.Lock()
	c.stale = []string{id}
	c.mu.Unlock()
	c.take()
	if n, err := w2.RunOnce(ctx); n != 0 || err != nil {
		t.Fatalf("RunOnce = %d, %v: want nothing started", n, err)
	}
	w2.Wait()
	got := c.take()
	for call, want := range map[string]int{
		"PUT leases": 1, "GET requests": 1, "DELETE leases": 1, "GET leases": 0,
		"HEAD results": 0, "PUT results": 0, "DELETE requests": 0, "DELETE cancel": 0,
	} {
		if got[call] != want {
			t.Errorf("%s: %d calls, want %d (all: %v)", call, got[call], want, got)
		}
	}
	if again := e.result(id); again == nil || again.Worker != r.Worker || again.FinishedAt != r.FinishedAt {
		t.Errorf("result changed: %+v, was %+v", again, r)
	}
	if _, err := e.b.Head(ctx, requests.LeaseKey(id)); !errors.Is(err, bucket.ErrNotFound) {
		t.Errorf("lease left behind: %v", err)
	}
}

// A request another worker finishes between a pass's listings of
// requests/ and leases/ is not claimed: the pass lists leases/ first (the
// queue was busy), so the finished request shows in neither listing,
// instead of showing unleased and costing a lease, a GET of the request
// and the lease's removal.
func TestRequestFinishedBetweenListingsIsNotClaimed(t *testing.T) {
	e, c := countingEnv(t)
	ctx := context.Background()
	id := e.submit(backupReq("data"))
	e.writeLease(id, 1, time.Minute) // another worker runs it
	w := e.watcher("w2", nil)
	if n, err := w.RunOnce(ctx); n != 0 || err != nil { // the start-up pass, which sweeps
		t.Fatalf("RunOnce = %d, %v while the lease is held", n, err)
	}
	other := bucket.Prefixed(c.Bucket, "capsule/") // the other worker's calls are not counted
	var once sync.Once
	finish := func(prefix string) {
		if !strings.HasSuffix(prefix, requests.RequestsPrefix) && !strings.HasSuffix(prefix, requests.LeasesPrefix) {
			return
		}
		once.Do(func() { // the other worker finishes, after this pass's first listing
			res := []byte(`{"apiVersion":"capsule/v1","kind":"Result","id":"` + id + `","status":"succeeded"}`)
			if _, err := bucket.PutBytes(ctx, other, requests.ResultKey(id), res, bucket.PutOptions{}); err != nil {
				t.Error(err)
			}
			for _, key := range []string{requests.RequestKey(id), requests.LeaseKey(id)} {
				if err := other.Delete(ctx, key); err != nil {
					t.Error(err)
				}
			}
		})
	}
	c.mu.Lock()
	c.listed = finish
	c.mu.Unlock()
	c.take()
	if n, err := w.RunOnce(ctx); n != 0 || err != nil {
		t.Fatalf("RunOnce = %d, %v: want nothing started", n, err)
	}
	w.Wait()
	got := c.take()
	for call, want := range map[string]int{"PUT leases": 0, "GET requests": 0, "DELETE leases": 0, "LIST leases": 1, "LIST requests": 1} {
		if got[call] != want {
			t.Errorf("%s: %d calls, want %d (all: %v)", call, got[call], want, got)
		}
	}
	if _, err := e.b.Head(ctx, requests.LeaseKey(id)); !errors.Is(err, bucket.ErrNotFound) {
		t.Errorf("lease left behind: %v", err)
	}
}

// A lease another worker holds is read once per write, not once per
// pass; once it expires it is still taken over, as the next attempt.
func TestHeldLeaseIsReadOncePerWriteAndStillTakenOver(t *testing.T) {
	e, c := countingEnv(t)
	ctx := context.Background()
	id := e.submit(backupReq("data"))
	e.writeLease(id, 1, 3*time.Second) // a holder that then died
	w := e.watcher("w2", nil)
	c.take()
	for range 5 {
		if n, err := w.RunOnce(ctx); n != 0 || err != nil {
			t.Fatalf("RunOnce = %d, %v while the lease is held", n, err)
		}
	}
	if got := c.take(); got["GET leases"] != 1 || got["PUT leases"] != 0 {
		t.Errorf("five passes over a held lease: %v; want one GET of it and no write", got)
	}
	r := e.waitResult(id, 20*time.Second, func() { w.RunOnce(ctx); w.Wait() })
	if r.Status != requests.StatusSucceeded || r.Attempts != 2 {
		t.Fatalf("after expiry: status %s, attempts %d; want succeeded as attempt 2", r.Status, r.Attempts)
	}
}

// An idle worker makes one LIST per pass, the sweep's included (it
// replaces a listing of requests/ once per lease length), and the sweeps
// still remove a late cancel object whose request is gone.
func TestIdleWorkerListsOncePerPass(t *testing.T) {
	e, c := countingEnv(t)
	ctx := context.Background()
	w := e.watcher("w1", func(cfg *watcher.Config) { cfg.Lease = 3 * time.Second })
	if _, err := w.RunOnce(ctx); err != nil { // the start-up pass also sweeps
		t.Fatal(err)
	}
	e.putRaw(requests.CancelKey("gone"), []byte(`{"apiVersion":"capsule/v1","kind":"Cancel","id":"gone"}`))
	c.take()
	passes := 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := w.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		passes++
		if _, err := e.b.Head(ctx, requests.CancelKey("gone")); errors.Is(err, bucket.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the late cancel object was never swept")
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := c.take()
	lists := got["LIST requests"] + got["LIST leases"] + got["LIST cancel"]
	if lists != passes || got["LIST cancel"] == 0 {
		t.Errorf("%d idle passes made %v; want one LIST each, a sweep of cancel/ among them", passes, got)
	}
}

// A job that finishes within a poll interval of the last listing claims
// the next request from that listing instead of listing again: a busy
// worker lists requests/ far less than once per request, and every
// request still runs once.
func TestFinishedJobClaimsFromTheLastListing(t *testing.T) {
	e, c := countingEnv(t)
	const n = 12
	var ids []string
	for range n {
		ids = append(ids, e.submit(backupReq("data")))
	}
	w := e.watcher("w1", func(cfg *watcher.Config) { cfg.Concurrency, cfg.Poll = 1, 2*time.Second })
	c.take()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for _, id := range ids {
		if r := e.waitResult(id, 30*time.Second, func() {}); r.Status != requests.StatusSucceeded || r.Attempts != 1 {
			t.Errorf("%s: status %s, attempts %d", id, r.Status, r.Attempts)
		}
	}
	got := c.take()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got["LIST requests"] > n/2 || got["PUT leases"] != n || got["GET requests"] != n {
		t.Errorf("%d requests made %v; want at most %d listings of requests/, one lease and one read of each request", n, got, n/2)
	}
	for _, id := range ids {
		for _, key := range []string{requests.RequestKey(id), requests.LeaseKey(id)} {
			if _, err := e.b.Head(context.Background(), key); !errors.Is(err, bucket.ErrNotFound) {
				t.Errorf("%s left behind: %v", key, err)
			}
		}
	}
}

// A finished backup whose request is written again (a finished id
// submitted again in the race client.Submit cannot refuse) is claimed
// fresh without a look for its result: its first attempt's create-only
// artifact finds the key taken, the index shows the backup committed by
// this request, and nothing is overwritten: the index and the artifact
// keep their bytes, the result stays the first one, and no control
// object is left. A restore of a finished id submitted again looks for
// the result and does not run again.
func TestFinishedIDSubmittedAgainChangesNothing(t *testing.T) {
	e, c := countingEnv(t)
	ctx := context.Background()
	req := backupReq("data")
	id := e.submit(req)
	w := e.watcher("w1", nil)
	first := e.waitResult(id, 15*time.Second, func() { w.RunOnce(ctx); w.Wait() })
	if first.Status != requests.StatusSucceeded {
		t.Fatalf("status %s: %s", first.Status, first.Error)
	}
	x, err := index.Read(ctx, e.b, requests.IndexKey(req.ClusterOrDefault(), "data", id))
	if err != nil {
		t.Fatal(err)
	}
	etags := map[string]string{}
	for _, key := range []string{x.Key(), x.Artifacts[0].Key} {
		info, err := e.b.Head(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		etags[key] = info.ETag
	}
	raw, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	e.putRaw(requests.RequestKey(id), raw)
	c.take()
	passUntilGone(ctx, w, e.b, requests.RequestKey(id))
	got := c.take()
	if got["HEAD results"] != 0 || got["PUT leases"] != 1 {
		t.Errorf("the claim made %v; want one lease and no look for the result", got)
	}
	for key, etag := range etags {
		if info, err := e.b.Head(ctx, key); err != nil || info.ETag != etag {
			t.Errorf("%s: %v, etag %q; want it as committed (%q)", key, err, info.ETag, etag)
		}
	}
	if again := e.result(id); again == nil || again.Worker != first.Worker || !again.FinishedAt.Equal(first.FinishedAt) {
		t.Errorf("result changed: %+v, was %+v", again, first)
	}
	for _, key := range []string{requests.RequestKey(id), requests.LeaseKey(id)} {
		if _, err := e.b.Head(ctx, key); !errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("%s left behind: %v", key, err)
		}
	}

	// A restore of that backup, finished, then submitted again.
	rreq := &requests.Request{Kind: requests.KindRestore, BackupID: id, Target: "data"}
	rid := e.submit(rreq)
	r1 := e.waitResult(rid, 15*time.Second, func() { w.RunOnce(ctx); w.Wait() })
	raw, err = json.Marshal(rreq)
	if err != nil {
		t.Fatal(err)
	}
	e.putRaw(requests.RequestKey(rid), raw)
	c.take()
	passUntilGone(ctx, w, e.b, requests.RequestKey(rid))
	got = c.take()
	if got["HEAD results"] != 1 || got["GET backups"] != 0 {
		t.Errorf("a restore submitted again made %v; want a look for its result and no read of the backup", got)
	}
	if again := e.result(rid); again == nil || !again.FinishedAt.Equal(r1.FinishedAt) {
		t.Errorf("restore result changed: %+v, was %+v", again, r1)
	}
}

// Cancel objects are looked up in one listing of cancel/ per pass, not
// with a HEAD per claim: a request canceled before it started still ends
// canceled, and the others of the pass run.
func TestPassListsCancelsOnce(t *testing.T) {
	e, c := countingEnv(t)
	ctx := context.Background()
	var ids []string
	for range 3 {
		ids = append(ids, e.submit(backupReq("data")))
	}
	if err := client.Cancel(ctx, e.b, ids[1], "test"); err != nil {
		t.Fatal(err)
	}
	w := e.watcher("w1", nil)
	c.take()
	if n, err := w.RunOnce(ctx); err != nil || n != 2 {
		t.Fatalf("RunOnce = %d, %v; want the two requests not canceled started", n, err)
	}
	w.Wait()
	got := c.take()
	if got["HEAD cancel"] != 0 || got["LIST cancel"] != 1 {
		t.Errorf("a pass claiming 3 requests made %v; want one LIST of cancel/ and no HEAD of it", got)
	}
	for i, id := range ids {
		want := requests.StatusSucceeded
		if i == 1 {
			want = requests.StatusCanceled
		}
		if r := e.result(id); r == nil || r.Status != want {
			t.Errorf("%s: result %+v, want %s", id, r, want)
		}
	}
	if _, err := e.b.Head(ctx, requests.CancelKey(ids[1])); !errors.Is(err, bucket.ErrNotFound) {
		t.Errorf("cancel object left behind: %v", err)
	}
}

// A pass while every slot is busy lists nothing (it could claim nothing;
// the job that frees a slot wakes the next pass).
func TestBusyWorkerListsNothing(t *testing.T) {
	e, c := countingEnv(t)
	ctx := context.Background()
	e.submit(backupReq("gate"))
	e.submit(backupReq("gate"))
	w := e.watcher("w1", func(cfg *watcher.Config) { cfg.Concurrency = 1 })
	if n, err := w.RunOnce(ctx); n != 1 || err != nil {
		t.Fatalf("RunOnce = %d, %v; want one started", n, err)
	}
	<-e.gate.started
	c.take()
	for range 3 {
		if n, err := w.RunOnce(ctx); n != 0 || err != nil {
			t.Fatalf("RunOnce = %d, %v while busy", n, err)
		}
	}
	got := c.take()
	if lists := got["LIST requests"] + got["LIST leases"] + got["LIST cancel"]; lists != 0 {
		t.Errorf("three passes of a busy worker made %v; want no listing", got)
	}
	close(e.gate.release)
	w.Wait()
}

// passUntilGone runs passes of w (waiting for their jobs) until key is
// gone from b, for about a second at the most.
func passUntilGone(ctx context.Context, w *watcher.Watcher, b bucket.Bucket, key string) {
	for range 50 {
		w.RunOnce(ctx)
		w.Wait()
		if _, err := b.Head(ctx, key); errors.Is(err, bucket.ErrNotFound) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
