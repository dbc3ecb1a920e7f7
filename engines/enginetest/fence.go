package enginetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
)

// StagingLister is a Service that can list the restore staging it finds
// beside its source: side databases and schemas, side collections,
// staging directories, renamed copies. It never lists the data a
// restore kept as previous. The fencing cases check that it is empty
// when they end.
type StagingLister interface {
	Staging(ctx context.Context, t *testing.T) []string
}

// PreviousSnapshotter is a Service that can take the Snapshot of the data
// a restore kept as previous, named as in RestoreInfo.Previous.
type PreviousSnapshotter interface {
	SnapshotPrevious(ctx context.Context, t *testing.T, previous string) any
}

// errLeaseLost is what a paused attempt's Fence returns once another
// attempt took its request over, as the watcher's fence does.
var errLeaseLost = errors.New("lease lost: another worker took the request over")

// runFencing runs the cases of restores fenced by attempt.
func runFencing(t *testing.T, eng engines.Engine, svc Service, opts Options) {
	for _, resume := range []string{"AfterSuccessorSwapped", "WhileSuccessorStages"} {
		t.Run("ZombieAttemptCannotSwap/"+resume, func(t *testing.T) {
			zombieCase(t, eng, svc, opts, resume == "WhileSuccessorStages")
		})
	}
	t.Run("RetryAfterSwapKeepsOriginal", func(t *testing.T) {
		retryCase(t, eng, svc, opts)
	})
}

// zombieCase: attempt 1 of a restore stalls halfway through staging
// (its artifact reader blocks), another worker takes the request over as
// attempt 2, and attempt 1 then wakes, its lease lost. Attempt 1 reads a
// different backup than attempt 2 (one of the damaged data), so that a
// swap by it shows in the target. Attempt 2 must succeed and leave the
// backup's data; attempt 1 must fail without swapping; nothing staged
// may remain. The zombie wakes either after attempt 2 swapped or while
// attempt 2 is staging (attempt 2 stalled the same way).
func zombieCase(t *testing.T, eng engines.Engine, svc Service, opts Options, whileStaging bool) {
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	svc.Seed(ctx, t)
	want := svc.Snapshot(ctx, t)
	good, info := opts.backup(ctx, t, eng, svc.Source(t))
	svc.Damage(ctx, t)
	damaged := svc.Snapshot(ctx, t)
	if diff := opts.Compare(want, damaged); diff == "" {
		t.Fatalf("Damage did not change the snapshot: the case would prove nothing")
	}
	stale, staleInfo := opts.backup(ctx, t, eng, svc.Source(t))
	id := fmt.Sprintf("zombie%d", time.Now().UnixNano()%1e9)

	var takenOver atomic.Bool
	var zombieFences atomic.Int32
	z := stale.Clone()
	zGate := z.pauseAt(z.Names()[len(z.Names())-1], opts.pauseOpen())
	job1 := z.RestoreJob(t, "zombie", svc.Source(t), staleInfo, opts.Restore)
	job1.ID, job1.Attempt = id, 1
	job1.Fence = func(context.Context) error {
		zombieFences.Add(1)
		if takenOver.Load() {
			return errLeaseLost
		}
		return nil
	}
	var zombieErr error
	zombieDone := make(chan struct{})
	go func() {
		defer close(zombieDone)
		_, zombieErr = eng.Restore(ctx, job1)
	}()
	select {
	case <-zGate.reached:
	case <-zombieDone:
		t.Fatalf("attempt 1 ended (%v) before it stalled in staging", zombieErr)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			close(zGate.resume)
		}
	}
	// However the case ends, the zombie is let go and waited for.
	defer func() {
		resume()
		<-zombieDone
	}()

	// Another worker takes the request over.
	takenOver.Store(true)
	succ := good.Clone()
	var sGate *gate
	if whileStaging {
		sGate = succ.pauseAt(succ.Names()[len(succ.Names())-1], opts.pauseOpen())
	}
	var fences atomic.Int32
	job2 := succ.RestoreJob(t, "successor", svc.Source(t), info, opts.Restore)
	job2.ID, job2.Attempt = id, 2
	job2.Fence = func(context.Context) error { fences.Add(1); return nil }
	var succErr error
	succDone := make(chan struct{})
	go func() {
		defer close(succDone)
		_, succErr = eng.Restore(ctx, job2)
	}()
	if whileStaging {
		select {
		case <-sGate.reached:
		case <-succDone:
			t.Fatalf("attempt 2 ended (%v) before it stalled in staging", succErr)
		}
		// The zombie wakes while its successor stages, and runs to its end.
		resume()
		<-zombieDone
		close(sGate.resume)
	}
	<-succDone
	if succErr != nil {
		t.Fatalf("attempt 2, which holds the lease, failed: %v", succErr)
	}
	if fences.Load() == 0 {
		t.Errorf("attempt 2 swapped without calling its Fence")
	}
	if diff := opts.Compare(want, svc.Snapshot(ctx, t)); diff != "" {
		t.Fatalf("after attempt 2 the target is not the backup: %s", diff)
	}
	if !whileStaging {
		// The zombie wakes after its successor finished.
		resume()
		<-zombieDone
	}
	if zombieErr == nil {
		t.Errorf("attempt 1, whose lease another worker took, succeeded: it swapped (its Fence was called %d times)", zombieFences.Load())
	} else {
		t.Logf("attempt 1 failed, as it must: %v", zombieErr)
	}
	if diff := opts.Compare(want, svc.Snapshot(ctx, t)); diff != "" {
		t.Fatalf("attempt 1, whose lease was lost, changed the target: %s", diff)
	}
	if l, ok := svc.(StagingLister); ok {
		if left := l.Staging(ctx, t); len(left) > 0 {
			t.Errorf("staging left behind: %q", left)
		}
	}
}

// retryCase: attempt 1 of a restore swaps and dies before it writes the
// result; attempt 2 restores again. It must succeed, and what attempt 1
// kept as previous (the target's data before the restore) must remain.
func retryCase(t *testing.T, eng engines.Engine, svc Service, opts Options) {
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	svc.Seed(ctx, t)
	want := svc.Snapshot(ctx, t)
	store, info := opts.backup(ctx, t, eng, svc.Source(t))
	svc.Damage(ctx, t)
	before := svc.Snapshot(ctx, t)
	id := fmt.Sprintf("retry%d", time.Now().UnixNano()%1e9)

	job1 := store.RestoreJob(t, "retry", svc.Source(t), info, opts.Restore)
	job1.ID, job1.Attempt = id, 1
	info1, err := eng.Restore(ctx, job1)
	if err != nil {
		t.Fatalf("attempt 1: %v", err)
	}
	// Attempt 1 dies here, before its result; attempt 2 takes over.
	job2 := store.RestoreJob(t, "retry", svc.Source(t), info, opts.Restore)
	job2.ID, job2.Attempt = id, 2
	info2, err := eng.Restore(ctx, job2)
	if err != nil {
		t.Fatalf("attempt 2, after attempt 1 swapped: %v", err)
	}
	if diff := opts.Compare(want, svc.Snapshot(ctx, t)); diff != "" {
		t.Fatalf("after attempt 2 the target is not the backup: %s", diff)
	}
	if p, ok := svc.(PreviousSnapshotter); ok && info1.Previous != "" {
		if diff := opts.Compare(before, p.SnapshotPrevious(ctx, t, info1.Previous)); diff != "" {
			t.Errorf("the target's data that attempt 1 kept as %s is gone or changed: %s", info1.Previous, diff)
		}
		t.Logf("attempt 1 kept %s; attempt 2 reports previous %q, details %v", info1.Previous, info2.Previous, info2.Details)
	}
	if l, ok := svc.(StagingLister); ok {
		if left := l.Staging(ctx, t); len(left) > 0 {
			t.Errorf("staging left behind: %q", left)
		}
	}
}

// gate stalls the n-th Open of an artifact halfway through it until
// resume is closed, telling reached.
type gate struct {
	name    string
	open    int
	opened  int
	reached chan struct{}
	resume  chan struct{}
	once    sync.Once
}

// pauseAt makes the n-th Open of artifact name stall halfway.
func (s *Store) pauseAt(name string, n int) *gate {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate = &gate{name: name, open: n, reached: make(chan struct{}), resume: make(chan struct{})}
	return s.gate
}

// wrap returns r, stalled halfway when this is the gated Open.
func (g *gate) wrap(ctx context.Context, name string, r io.Reader, size int) io.Reader {
	if g == nil || name != g.name {
		return r
	}
	g.opened++
	if g.opened != g.open {
		return r
	}
	return &gatedReader{ctx: ctx, r: r, at: size / 2, g: g}
}

type gatedReader struct {
	ctx context.Context
	r   io.Reader
	at  int
	n   int
	g   *gate
}

func (c *gatedReader) Read(p []byte) (int, error) {
	if c.n >= c.at {
		c.g.once.Do(func() {
			close(c.g.reached)
			select {
			case <-c.g.resume:
			case <-c.ctx.Done():
			}
		})
	}
	if len(p) > 4096 {
		p = p[:4096]
	}
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
