package watcher_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/azblob"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/azuritetest"
	"github.com/cnvrg/capsule/internal/gcstest"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/schemas"
	"github.com/cnvrg/capsule/watcher"
)

// gateEngine is a controllable engine for the protocol's timing cases (a
// run that lasts until the test says so, or panics). The data path is
// proven with the real files engine; this one only holds a run open.
type gateEngine struct {
	started chan string   // receives the backup id when a run starts
	release chan struct{} // closed to let runs finish
	panics  bool
	calls   atomic.Int32
}

func newGate() *gateEngine {
	return &gateEngine{started: make(chan string, 100), release: make(chan struct{})}
}

func (g *gateEngine) Name() string                  { return "gate" }
func (g *gateEngine) Validate(engines.Source) error { return nil }
func (g *gateEngine) Backup(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	g.calls.Add(1)
	if g.panics {
		panic("gate engine told to panic")
	}
	w, err := job.Artifacts.Create("data.bin")
	if err != nil {
		return nil, err
	}
	if _, err := w.Write([]byte("gate data for " + job.ID)); err != nil {
		return nil, err
	}
	g.started <- job.ID
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return &engines.BackupInfo{Format: "gate/v1"}, nil
}
func (g *gateEngine) Restore(context.Context, *engines.RestoreJob) (*engines.RestoreInfo, error) {
	return nil, errors.New("gate engine does not restore")
}

type sources map[string]engines.Source

func (s sources) Lookup(name string) (engines.Source, error) {
	src, ok := s[name]
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
	}
	return src, nil
}

type env struct {
	t      *testing.T
	b      bucket.Bucket
	dir    string
	srcs   sources
	gate   *gateEngine
	reg    *engines.Registry
	events chan watcher.Event
}

// forEachBucket runs a test against the local-directory bucket, a real
// S3 server (versitygw), a GCS emulator (fake-gcs-server) and Azure Blob
// Storage's emulator (Azurite).
func forEachBucket(t *testing.T, test func(t *testing.T, e *env)) {
	t.Run("fs", func(t *testing.T) {
		dir := t.TempDir()
		fb, err := fs.New(filepath.Join(dir, "bucket"))
		if err != nil {
			t.Fatal(err)
		}
		test(t, newEnv(t, fb))
	})
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Shared(t)
		sb, err := s3.New(context.Background(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
		if err != nil {
			t.Fatal(err)
		}
		test(t, newEnv(t, sb))
	})
	t.Run("gcs", func(t *testing.T) {
		srv := gcstest.Shared(t)
		gb, err := gcs.New(context.Background(), gcs.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint})
		if err != nil {
			t.Fatal(err)
		}
		test(t, newEnv(t, gb))
	})
	t.Run("azblob", func(t *testing.T) {
		srv := azuritetest.Shared(t)
		ab, err := azblob.New(azblob.Options{Container: srv.NewContainer(t), ServiceURL: srv.ServiceURL, Account: srv.Account, AccountKey: srv.Key})
		if err != nil {
			t.Fatal(err)
		}
		test(t, newEnv(t, ab))
	})
}

func newEnv(t *testing.T, fb bucket.Bucket) *env {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(data, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(data, "sub", fmt.Sprintf("f%d.txt", i)), bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g := newGate()
	return &env{
		t: t, b: bucket.Prefixed(fb, "capsule/"), dir: dir, gate: g,
		srcs: sources{
			"data": {Name: "data", Engine: "files", Config: map[string]any{"path": data}},
			"gate": {Name: "gate", Engine: "gate"},
		},
		reg:    engines.NewRegistry(files.New(), g),
		events: make(chan watcher.Event, 1000),
	}
}

func (e *env) watcher(name string, mod func(*watcher.Config)) *watcher.Watcher {
	e.t.Helper()
	x, err := executor.New(executor.Config{Bucket: e.b, Engines: e.reg, Sources: e.srcs, Worker: name, Log: enginetest.TestLog(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := watcher.Config{
		Bucket: e.b, Runner: x, Worker: name, Concurrency: 4, Poll: 50 * time.Millisecond,
		Lease: 3 * time.Second, MaxAttempts: 3, Grace: time.Second, Log: enginetest.TestLog(e.t),
		Events: func(ev watcher.Event) {
			select {
			case e.events <- ev:
			default:
			}
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := watcher.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

func (e *env) submit(req *requests.Request) string {
	e.t.Helper()
	if err := client.Submit(context.Background(), e.b, req); err != nil {
		e.t.Fatal(err)
	}
	return req.ID
}

func (e *env) putRaw(key string, data []byte) {
	e.t.Helper()
	if _, err := bucket.PutBytes(context.Background(), e.b, key, data, bucket.PutOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) result(id string) *requests.Result {
	e.t.Helper()
	data, _, err := bucket.GetBytes(context.Background(), e.b, requests.ResultKey(id))
	if errors.Is(err, bucket.ErrNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var r requests.Result
	if err := json.Unmarshal(data, &r); err != nil {
		e.t.Fatal(err)
	}
	return &r
}

// waitResult waits for a result, running pass() between looks.
func (e *env) waitResult(id string, timeout time.Duration, pass func()) *requests.Result {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if pass != nil {
			pass()
		}
		if r := e.result(id); r != nil {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("no result for %s after %s", id, timeout)
	return nil
}

func (e *env) waitEvent(typ watcher.EventType, id string, timeout time.Duration) watcher.Event {
	e.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-e.events:
			if ev.Type == typ && ev.ID == id {
				return ev
			}
		case <-deadline:
			e.t.Fatalf("no %s event for %s after %s", typ, id, timeout)
		}
	}
}

func backupReq(source string) *requests.Request {
	return &requests.Request{Kind: requests.KindBackup, Source: source}
}

var validator schemas.Validator

func TestManyWorkersRunEachRequestExactlyOnce(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		const n = 40
		ids := make([]string, n)
		for i := range ids {
			ids[i] = e.submit(backupReq("data"))
		}
		ctx := context.Background()
		ws := []*watcher.Watcher{e.watcher("w1", nil), e.watcher("w2", nil), e.watcher("w3", nil)}
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 200 {
					if _, err := w.RunOnce(ctx); err != nil {
						t.Errorf("RunOnce: %v", err)
					}
					w.Wait()
					page, _ := e.b.List(ctx, requests.RequestsPrefix, bucket.ListOptions{Limit: 1})
					if len(page.Objects) == 0 {
						return
					}
				}
			}()
		}
		wg.Wait()
		claims, finishes := map[string]int{}, map[string]int{}
		close(e.events)
		for ev := range e.events {
			switch ev.Type {
			case watcher.EventClaimed, watcher.EventTakeover:
				claims[ev.ID]++
			case watcher.EventFinished:
				finishes[ev.ID]++
			}
		}
		entries, err := index.List(ctx, e.b, index.Filter{Cluster: "default", Source: "data"})
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != n {
			t.Fatalf("%d indexes, want %d", len(entries), n)
		}
		for _, id := range ids {
			r := e.result(id)
			if r == nil || r.Status != requests.StatusSucceeded {
				t.Fatalf("request %s: result %+v", id, r)
			}
			if claims[id] != 1 || finishes[id] != 1 {
				t.Errorf("request %s run %d times and finished %d times, want once", id, claims[id], finishes[id])
			}
			raw, _, _ := bucket.GetBytes(ctx, e.b, requests.ResultKey(id))
			if err := validator.Validate("result", raw); err != nil {
				t.Error(err)
			}
		}
		for _, en := range entries {
			raw, _, _ := bucket.GetBytes(ctx, e.b, en.Key())
			if err := validator.Validate("backupIndex", raw); err != nil {
				t.Error(err)
			}
			for _, a := range en.Artifacts {
				if !strings.Contains(a.Key, fmt.Sprintf("/%s/%d/", en.BackupID, en.Attempt)) {
					t.Errorf("artifact %s is not under the attempt (%d) that wrote the index", a.Key, en.Attempt)
				}
			}
		}
		for _, prefix := range []string{requests.RequestsPrefix, requests.LeasesPrefix} {
			page, _ := e.b.List(ctx, prefix, bucket.ListOptions{})
			if len(page.Objects) != 0 {
				t.Errorf("%d objects left under %s", len(page.Objects), prefix)
			}
		}
	})
}

func TestMalformedRequestsAreRejectedAndTheWorkerGoesOn(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		cases := map[string]struct {
			body string
			want string
		}{
			"badjson":     {`{"apiVersion":"capsule/v1",`, "invalid JSON"},
			"badkind":     {`{"apiVersion":"capsule/v1","kind":"Frobnicate","id":"badkind","source":"data"}`, "kind"},
			"mismatch":    {`{"apiVersion":"capsule/v1","kind":"Backup","id":"other","source":"data"}`, "does not match"},
			"nosource":    {`{"apiVersion":"capsule/v1","kind":"Backup","id":"nosource","source":"nope"}`, `unknown source "nope"`},
			"secret":      {`{"apiVersion":"capsule/v1","kind":"Backup","id":"secret","source":"data","password":"x"}`, "password"},
			"nobackup":    {`{"apiVersion":"capsule/v1","kind":"Restore","id":"nobackup","backupId":"missing"}`, "backup not found"},
			"wrongengine": {`{"apiVersion":"capsule/v1","kind":"Restore","id":"wrongengine","backupId":"PLACEHOLDER","target":"gate"}`, "made by the files engine"},
		}
		w := e.watcher("w1", nil)
		ctx := context.Background()
		// A real backup for the wrong-engine case.
		good := e.submit(backupReq("data"))
		e.waitResult(good, 10*time.Second, func() { w.RunOnce(ctx); w.Wait() })
		for id, c := range cases {
			e.putRaw(requests.RequestKey(id), []byte(strings.ReplaceAll(c.body, "PLACEHOLDER", good)))
		}
		// A junk key the worker must step over.
		e.putRaw("requests/Not An Id.json", []byte("{}"))
		after := e.submit(backupReq("data"))
		for id, c := range cases {
			r := e.waitResult(id, 10*time.Second, func() { w.RunOnce(ctx); w.Wait() })
			if r.Status != requests.StatusRejected || !strings.Contains(r.Error, c.want) {
				t.Errorf("%s: status %s error %q, want rejected naming %q", id, r.Status, r.Error, c.want)
			}
		}
		if r := e.waitResult(after, 10*time.Second, func() { w.RunOnce(ctx); w.Wait() }); r.Status != requests.StatusSucceeded {
			t.Errorf("a good request after bad ones: %s %s", r.Status, r.Error)
		}
	})
}

func TestCancelStopsARunningBackup(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		w := e.watcher("w1", nil)
		ctx := context.Background()
		id := e.submit(backupReq("gate"))
		if n, err := w.RunOnce(ctx); n != 1 || err != nil {
			t.Fatalf("RunOnce = %d, %v", n, err)
		}
		<-e.gate.started
		if err := client.Cancel(ctx, e.b, id, "test"); err != nil {
			t.Fatal(err)
		}
		r := e.waitResult(id, 10*time.Second, nil)
		if r.Status != requests.StatusCanceled {
			t.Fatalf("status %s (%s), want canceled", r.Status, r.Error)
		}
		w.Wait()
		if _, err := index.Find(ctx, e.b, id); !errors.Is(err, index.ErrBackupNotFound) {
			t.Errorf("a canceled backup has an index: %v", err)
		}
	})
}

func TestCancelBeforeStart(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := e.submit(backupReq("gate"))
		if err := client.Cancel(ctx, e.b, id, ""); err != nil {
			t.Fatal(err)
		}
		w := e.watcher("w1", nil)
		r := e.waitResult(id, 5*time.Second, func() { w.RunOnce(ctx); w.Wait() })
		if r.Status != requests.StatusCanceled || e.gate.calls.Load() != 0 {
			t.Fatalf("status %s, engine calls %d: want canceled without running", r.Status, e.gate.calls.Load())
		}
	})
}

// writeLease writes a lease as a worker that then died would have left it.
func (e *env) writeLease(id string, attempt int, length time.Duration) {
	l := requests.Lease{APIVersion: requests.APIVersion, Kind: "Lease", ID: id, Holder: "dead-worker", Token: "0123456789abcdef0123",
		Attempt: attempt, DurationMillis: length.Milliseconds(), AcquiredAt: time.Now(), RenewedAt: time.Now()}
	data, _ := json.Marshal(l)
	e.putRaw(requests.LeaseKey(id), data)
}

func TestExpiredLeaseIsTakenOverAsTheNextAttempt(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := e.submit(backupReq("data"))
		e.writeLease(id, 1, 3*time.Second)
		w := e.watcher("w1", nil)
		if n, _ := w.RunOnce(ctx); n != 0 {
			t.Fatalf("claimed a request whose lease is live")
		}
		r := e.waitResult(id, 15*time.Second, func() { w.RunOnce(ctx); w.Wait() })
		if r.Status != requests.StatusSucceeded || r.Attempts != 2 {
			t.Fatalf("result %s after %d attempts, want succeeded after 2", r.Status, r.Attempts)
		}
		en, err := index.Find(ctx, e.b, id)
		if err != nil {
			t.Fatal(err)
		}
		if en.Attempt != 2 || !strings.Contains(en.Artifacts[0].Key, "/2/") {
			t.Errorf("index attempt %d, artifact %s: want attempt 2's folder", en.Attempt, en.Artifacts[0].Key)
		}
	})
}

func TestAbandonedAfterMaxAttempts(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := e.submit(backupReq("gate"))
		e.writeLease(id, 3, 3*time.Second)
		w := e.watcher("w1", nil)
		r := e.waitResult(id, 15*time.Second, func() { w.RunOnce(ctx); w.Wait() })
		if r.Status != requests.StatusFailed || !strings.Contains(r.Error, "abandoned after 3 attempts") {
			t.Fatalf("result %s %q, want failed: abandoned after 3 attempts", r.Status, r.Error)
		}
		if e.gate.calls.Load() != 0 {
			t.Errorf("the engine ran on an abandoned request")
		}
	})
}

func TestLostLeaseStopsTheWorkAndWritesNothing(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := e.submit(backupReq("gate"))
		w := e.watcher("w1", nil)
		if n, _ := w.RunOnce(ctx); n != 1 {
			t.Fatal("not claimed")
		}
		<-e.gate.started
		// Another worker takes the lease over (as if ours had expired).
		e.writeLease(id, 2, time.Minute)
		e.waitEvent(watcher.EventLost, id, 10*time.Second)
		w.Wait()
		if r := e.result(id); r != nil {
			t.Fatalf("a worker that lost its lease wrote a result: %+v", r)
		}
		if _, err := index.Find(ctx, e.b, id); !errors.Is(err, index.ErrBackupNotFound) {
			t.Errorf("a worker that lost its lease committed an index: %v", err)
		}
		data, _, _ := bucket.GetBytes(ctx, e.b, requests.LeaseKey(id))
		var l requests.Lease
		_ = json.Unmarshal(data, &l)
		if l.Holder != "dead-worker" || l.Attempt != 2 {
			t.Errorf("the lease was overwritten after it was lost: %+v", l)
		}
	})
}

func TestCommittedIndexFinishesWithoutRerunning(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		// Attempt 1 ran a real backup and committed its index, then died
		// before writing the result.
		id := e.submit(backupReq("data"))
		w1 := e.watcher("w1", nil)
		x, _ := executor.New(executor.Config{Bucket: e.b, Engines: e.reg, Sources: e.srcs, Worker: "w0"})
		req := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: id, Source: "data", Cluster: "default"}
		out := x.Run(ctx, req, 1, nil)
		if err := x.Commit(ctx, out); err != nil {
			t.Fatal(err)
		}
		e.writeLease(id, 1, 3*time.Second)
		// Make the engine fail if it runs again.
		e.srcs["data"] = engines.Source{Name: "data", Engine: "files", Config: map[string]any{"path": "/nonexistent/capsule-test"}}
		r := e.waitResult(id, 15*time.Second, func() { w1.RunOnce(ctx); w1.Wait() })
		if r.Status != requests.StatusSucceeded {
			t.Fatalf("result %s %q, want succeeded from the committed index", r.Status, r.Error)
		}
		en, _ := index.Find(ctx, e.b, id)
		if en.Attempt != 1 {
			t.Errorf("index attempt %d, want 1 (never rewritten)", en.Attempt)
		}
	})
}

func TestShutdownHandsTheLeaseBack(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		id := e.submit(backupReq("gate"))
		w1 := e.watcher("w1", func(c *watcher.Config) { c.Grace = 100 * time.Millisecond })
		if n, _ := w1.RunOnce(ctx); n != 1 {
			t.Fatal("not claimed")
		}
		<-e.gate.started
		start := time.Now()
		if err := w1.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		e.waitEvent(watcher.EventReleased, id, 5*time.Second)
		// A second worker takes over at once, not after the lease's length.
		close(e.gate.release)
		w2 := e.watcher("w2", nil)
		r := e.waitResult(id, 10*time.Second, func() { w2.RunOnce(ctx); w2.Wait() })
		if r.Status != requests.StatusSucceeded || r.Attempts != 2 {
			t.Fatalf("result %s after %d attempts", r.Status, r.Attempts)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("takeover after a hand-back took %s, want well under the 3s lease", took)
		}
		// The hand-back did not count as a failed attempt.
		e2 := e.result(id)
		if e2.Worker != "w2" {
			t.Errorf("finished by %s, want w2", e2.Worker)
		}
	})
}

func TestEnginePanicBecomesAFailedResult(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		e.gate.panics = true
		ctx := context.Background()
		id := e.submit(backupReq("gate"))
		w := e.watcher("w1", nil)
		r := e.waitResult(id, 10*time.Second, func() { w.RunOnce(ctx); w.Wait() })
		if r.Status != requests.StatusFailed || !strings.Contains(r.Error, "engine panicked") {
			t.Fatalf("result %s %q, want failed: engine panicked", r.Status, r.Error)
		}
		// And the worker still serves.
		e.gate.panics = false
		close(e.gate.release)
		id2 := e.submit(backupReq("data"))
		if r := e.waitResult(id2, 10*time.Second, func() { w.RunOnce(ctx); w.Wait() }); r.Status != requests.StatusSucceeded {
			t.Fatalf("after a panic: %s %q", r.Status, r.Error)
		}
	})
}

func TestConfigRefusesALeaseTooShortToRenew(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		x, _ := executor.New(executor.Config{Bucket: e.b, Engines: e.reg, Sources: e.srcs})
		_, err := watcher.New(watcher.Config{Bucket: e.b, Runner: x, Lease: time.Second})
		if err == nil || !strings.HasPrefix(err.Error(), "lease:") {
			t.Fatalf("New with a 1s lease: %v, want an error naming lease", err)
		}
	})
}

func TestRunShutsDownOnContextCancel(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		w := e.watcher("w1", nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		id := e.submit(backupReq("data"))
		e.waitResult(id, 10*time.Second, nil)
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after its context was canceled")
		}
	})
}

var _ = io.EOF
