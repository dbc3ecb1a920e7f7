package watcher_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

func TestFinishedEventDescribesTheRun(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		w := e.watcher("w1", nil)
		ctx := context.Background()
		id := e.submit(backupReq("data"))
		if n, err := w.RunOnce(ctx); n != 1 || err != nil {
			t.Fatalf("RunOnce = %d, %v", n, err)
		}
		claimed := e.waitEvent(watcher.EventClaimed, id, 10*time.Second)
		if claimed.Source != "data" || claimed.Kind != requests.KindBackup {
			t.Errorf("claimed event %+v: want source data, kind Backup", claimed)
		}
		ev := e.waitEvent(watcher.EventFinished, id, 10*time.Second)
		r := e.result(id)
		if ev.Status != requests.StatusSucceeded || ev.Engine != "files" || ev.Source != "data" || ev.Cluster != requests.DefaultCluster {
			t.Errorf("finished event %+v: want succeeded, engine files, source data, cluster default", ev)
		}
		if ev.Bytes != r.Bytes || ev.StoredBytes != r.StoredBytes || ev.Bytes == 0 {
			t.Errorf("event bytes %d/%d, result %d/%d", ev.Bytes, ev.StoredBytes, r.Bytes, r.StoredBytes)
		}
		if ev.Duration <= 0 || ev.Duration != r.FinishedAt.Sub(r.StartedAt) || !ev.Finished.Equal(r.FinishedAt) {
			t.Errorf("event duration %s finished %s; result ran %s → %s", ev.Duration, ev.Finished, r.StartedAt, r.FinishedAt)
		}

		// A request that never reaches an engine names none.
		bad := e.submit(backupReq("nope"))
		if _, err := w.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		ev = e.waitEvent(watcher.EventFinished, bad, 10*time.Second)
		if ev.Status != requests.StatusRejected || ev.Engine != "" {
			t.Errorf("finished event %+v: want rejected without an engine", ev)
		}
	})
}

func TestClaimHintRespectsTheConcurrencyLimit(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		w := e.watcher("w1", func(c *watcher.Config) { c.Concurrency = 2 })
		ctx := context.Background()
		ids := make([]string, 8)
		for i := range ids {
			ids[i] = e.submit(backupReq("gate"))
		}
		// Hints for every request at once: exactly the limit are claimed.
		var wg sync.WaitGroup
		var mu sync.Mutex
		claimed := map[string]bool{}
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := w.ClaimHint(ctx, id)
				if err != nil {
					t.Errorf("ClaimHint(%s): %v", id, err)
				}
				if ok {
					mu.Lock()
					claimed[id] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(claimed) != 2 || w.Running() != 2 {
			t.Fatalf("%d hints claimed, %d running; want 2 and 2", len(claimed), w.Running())
		}
		for _, id := range ids {
			_, err := e.b.Head(ctx, requests.LeaseKey(id))
			if claimed[id] != (err == nil) {
				t.Errorf("request %s: claimed %v but lease lookup says %v", id, claimed[id], err)
			}
		}
		// A hint for a running request, and one for a request that is gone,
		// claim nothing and write nothing.
		for id := range claimed {
			if ok, err := w.ClaimHint(ctx, id); ok || err != nil {
				t.Errorf("ClaimHint of running %s = %v, %v", id, ok, err)
			}
		}
		close(e.gate.release)
		w.Wait()
		for id := range claimed {
			if r := e.result(id); r == nil || r.Status != requests.StatusSucceeded {
				t.Fatalf("request %s: result %+v", id, r)
			}
			if ok, err := w.ClaimHint(ctx, id); ok || err != nil {
				t.Errorf("ClaimHint of finished %s = %v, %v", id, ok, err)
			}
			if _, err := e.b.Head(ctx, requests.LeaseKey(id)); !errors.Is(err, bucket.ErrNotFound) {
				t.Errorf("a hint for finished %s left a lease: %v", id, err)
			}
		}
		// With slots free again, a hint claims at once.
		for _, id := range ids {
			if claimed[id] {
				continue
			}
			if ok, err := w.ClaimHint(ctx, id); !ok || err != nil {
				t.Fatalf("ClaimHint(%s) with free slots = %v, %v", id, ok, err)
			}
			break
		}
		w.Wait()
		// Shutting down: no more claims.
		if err := w.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if ok, _ := w.ClaimHint(ctx, id); ok {
				t.Fatalf("ClaimHint(%s) claimed after shutdown", id)
			}
		}
	})
}
