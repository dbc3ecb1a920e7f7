package watcher_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

// siblingSources serve one client's sources of a bucket that another
// client (another Secret's keys) also serves, as the scanner's do: the
// sibling's sources are served elsewhere, anything else is unknown.
type siblingSources struct{ own, sibling sources }

func (s siblingSources) Lookup(name string) (engines.Source, error) {
	if src, ok := s.own[name]; ok {
		return src, nil
	}
	if _, ok := s.sibling[name]; ok {
		return engines.Source{}, fmt.Errorf("source %q: %w", name, executor.ErrServedElsewhere)
	}
	return s.own.Lookup(name)
}

// TestRequestsOfASiblingClientAreHandedBack: two watchers on one bucket,
// each with the sources of its own client. A request that the other
// client serves is handed back, not rejected, and the other watcher runs
// it: every request succeeds, on the watcher that serves it, though each
// watcher allows one attempt (a hand-back is not one).
func TestRequestsOfASiblingClientAreHandedBack(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		a := sources{"data": e.srcs["data"]}
		b := sources{"data-b": {Name: "data-b", Engine: "files", Config: e.srcs["data"].Config}}
		mk := func(name string, own, sibling sources) *watcher.Watcher {
			x, err := executor.New(executor.Config{Bucket: e.b, Engines: e.reg, Sources: siblingSources{own, sibling}, Worker: name, Log: enginetest.TestLog(t)})
			if err != nil {
				t.Fatal(err)
			}
			// One attempt each: a hand-back must not use it up.
			return e.watcher(name, func(c *watcher.Config) { c.Runner, c.MaxAttempts = x, 1 })
		}
		wa, wb := mk("wa", a, b), mk("wb", b, a)
		want := map[string]string{} // request id -> the watcher that serves it
		for i := range 6 {
			src, by := "data", "wa"
			if i%2 == 1 {
				src, by = "data-b", "wb"
			}
			want[e.submit(backupReq(src))] = by
		}
		// wb passes first every round, so it meets wa's requests before wa
		// does, and the other way round for wa's hand-backs of wb's.
		ctx := context.Background()
		for id, by := range want {
			r := e.waitResult(id, 30*time.Second, func() {
				_, _ = wb.RunOnce(ctx)
				_, _ = wa.RunOnce(ctx)
			})
			if r.Status != requests.StatusSucceeded || r.Worker != by {
				t.Errorf("%s: %s by %s (%s), want succeeded by %s", id, r.Status, r.Worker, r.Error, by)
			}
		}
		wa.Wait()
		wb.Wait()
	})
}
