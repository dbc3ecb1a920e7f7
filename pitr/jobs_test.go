package pitr_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
)

// TestJobsSync: two workers' Jobs run one source's job: one holds the
// stream, both guard the slot. A changed setting restarts the job (the
// lease handed back and taken as the next attempt), a source that is
// not a pitr source is refused, and a job no longer wanted stops: the
// lease released, the slot left without a sender.
func TestJobsSync(t *testing.T) {
	srv := startServer(t)
	b := newBucket(t)
	src := source(srv, "pg")
	ctx := context.Background()
	const leaseLen = 3 * time.Second

	var mu sync.Mutex
	wrote := map[string]int{}    // holder → objects written
	observed := map[string]int{} // holder → slot readings
	stopped := map[string]int{}  // holder → jobs stopped (Stopped)
	signal := make(chan struct{}, 1)
	newJobs := func(holder string) *pitr.Jobs {
		return &pitr.Jobs{
			Holder: holder, Lease: leaseLen, Retry: 200 * time.Millisecond, GuardEvery: 200 * time.Millisecond,
			Log: enginetest.TestLog(t),
			Written: func(j pitr.Job, _ pitr.Segment, _ pitr.Header) {
				mu.Lock()
				wrote[holder]++
				mu.Unlock()
				select {
				case signal <- struct{}{}:
				default:
				}
			},
			Observe: func(pitr.Job, int64, int64) {
				mu.Lock()
				observed[holder]++
				mu.Unlock()
			},
			Stopped: func(pitr.Job) {
				mu.Lock()
				stopped[holder]++
				mu.Unlock()
			},
		}
	}
	w1, w2 := newJobs("w1"), newJobs("w2")
	t.Cleanup(w1.Stop)
	t.Cleanup(w2.Stop)
	want := map[string]pitr.Job{"config/pg": {Bucket: b, Cluster: cluster, Source: src}}
	for _, w := range []*pitr.Jobs{w1, w2} {
		if err := w.Sync(ctx, want); err != nil {
			t.Fatal(err)
		}
	}
	readLease := func() *lease.State {
		t.Helper()
		st, err := lease.Read(ctx, b, pitr.LockKey(cluster, "pg"), requests.DefaultMaxControlObject, leaseLen)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// reach waits until the bucket holds the WAL the server has now.
	reach := func(what string) {
		t.Helper()
		execPG(t, srv, `SELECT pg_switch_wal()`)
		execPG(t, srv, `CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1)`)
		target := parseLSN(t, currentLSN(t, srv))
		deadline := time.After(time.Minute)
		for {
			segs, err := pitr.ListSegments(ctx, b, cluster, "pg")
			if err != nil {
				t.Fatal(err)
			}
			var end uint64
			for _, s := range segs {
				end = max(end, uint64(s.End))
			}
			if end >= target {
				return
			}
			select {
			case <-signal:
			case <-time.After(200 * time.Millisecond):
			case <-deadline:
				t.Fatalf("%s: the bucket ends at %X, before %X", what, end, target)
			}
		}
	}
	reach("first holder")
	<-time.After(leaseLen) // a second holder would show within a lease
	mu.Lock()
	holders := len(wrote)
	guards := len(observed)
	mu.Unlock()
	if holders != 1 || guards != 2 {
		t.Errorf("%d workers wrote WAL, %d guarded the slot: want 1 and 2", holders, guards)
	}
	if st := readLease(); !st.Held() || st.Attempt != 1 {
		t.Errorf("lease %+v, want held as attempt 1", st)
	}

	t.Run("a changed setting restarts the job", func(t *testing.T) {
		changed := source(srv, "pg")
		changed.Config["slotAlertBytes"] = 2 << 30
		want := map[string]pitr.Job{"config/pg": {Bucket: b, Cluster: cluster, Source: changed}}
		for _, w := range []*pitr.Jobs{w1, w2} {
			if err := w.Sync(ctx, want); err != nil {
				t.Fatal(err)
			}
		}
		reach("after the restart")
		if st := readLease(); !st.Held() || st.Attempt < 2 {
			t.Errorf("lease %+v, want held by a later attempt", st)
		}
	})

	t.Run("a source without pitr is refused", func(t *testing.T) {
		off := engines.Source{Name: "off", Engine: "postgres", Config: map[string]any{"url": srv.URL("postgres")}}
		w := newJobs("w3")
		err := w.Sync(ctx, map[string]pitr.Job{"config/off": {Bucket: b, Cluster: cluster, Source: off}})
		if err == nil || !strings.Contains(err.Error(), "pitr is not on") || len(w.Running()) != 0 {
			t.Errorf("Sync: %v, running %v; want refused", err, w.Running())
		}
	})

	t.Run("a job no longer wanted stops", func(t *testing.T) {
		if got := w1.Running(); !slices.Equal(got, []string{"config/pg"}) {
			t.Errorf("running %v", got)
		}
		for _, w := range []*pitr.Jobs{w1, w2} {
			if err := w.Sync(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if got := w.Running(); len(got) != 0 {
				t.Errorf("running %v after Sync(nil)", got)
			}
		}
		if st := readLease(); !st.Found || !st.Released {
			t.Errorf("lease %+v, want handed back", st)
		}
		st, err := postgres.Slot(ctx, src)
		if err != nil || !st.Exists || st.Active {
			t.Errorf("slot %+v, %v: want kept, with no sender", st, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if stopped["w1"] != 2 || stopped["w2"] != 2 {
			t.Errorf("Stopped calls %v, want 2 each (the restart and the stop)", stopped)
		}
	})
}
