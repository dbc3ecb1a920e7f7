package scanner_test

import (
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
	"github.com/cnvrg/capsule/scanner"
	"github.com/cnvrg/capsule/watcher"
)

// recorder collects what every replica did, and wakes waiters at each
// event: tests wait on it rather than sleep.
type recorder struct {
	mu     sync.Mutex
	signal chan struct{}

	// submitted: request id → the replicas whose create-only write won.
	submitted map[string][]string
	// exists: request id → the replicas that found it already written.
	exists  map[string][]string
	subKind map[string]requests.Kind
	subPlan map[string]string
	// ended: backup request id → status (as the scanners saw it).
	ended map[string]requests.Status
	// retention runs that did something (not LeaseHeldBy).
	retention []retentionRun
	problems  map[string]int // replica → problems reported
	// finished: request id → status, as the watchers finished them.
	finished map[string]requests.Status
	fleets   map[string][]string // replica → buckets served
}

type retentionRun struct {
	replica, plan, id string
	rotation          int
	report            *retention.Report
	err               error
}

func newRecorder() *recorder {
	return &recorder{
		signal: make(chan struct{}), submitted: map[string][]string{}, exists: map[string][]string{}, subKind: map[string]requests.Kind{},
		subPlan: map[string]string{}, ended: map[string]requests.Status{}, problems: map[string]int{},
		finished: map[string]requests.Status{}, fleets: map[string][]string{},
	}
}

// poke wakes the waiters; r.mu is held.
func (r *recorder) poke() {
	close(r.signal)
	r.signal = make(chan struct{})
}

func (r *recorder) scannerEvent(replica string) func(scanner.Event) {
	return func(e scanner.Event) {
		r.mu.Lock()
		defer r.mu.Unlock()
		switch e.Type {
		case scanner.EventSubmitted:
			r.submitted[e.ID] = append(r.submitted[e.ID], replica)
			r.subKind[e.ID], r.subPlan[e.ID] = e.Kind, e.Plan
		case scanner.EventExists:
			r.exists[e.ID] = append(r.exists[e.ID], replica)
		case scanner.EventBackupEnded:
			r.ended[e.ID] = e.Status
			r.subPlan[e.ID], r.subKind[e.ID] = e.Plan, requests.KindBackup
		case scanner.EventRetention:
			if e.Err != nil || (e.Retention != nil && e.Retention.LeaseHeldBy == "") {
				r.retention = append(r.retention, retentionRun{replica: replica, plan: e.Plan, id: e.ID, rotation: e.Rotation, report: e.Retention, err: e.Err})
			}
		case scanner.EventProblem:
			r.problems[replica]++
		}
		r.poke()
	}
}

func (r *recorder) watcherEvent(string) func(watcher.Event) {
	return func(e watcher.Event) {
		if e.Type != watcher.EventFinished {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.finished[e.ID] = e.Status
		r.poke()
	}
}

func (r *recorder) fleetChanged(replica string) func([]string) {
	return func(keys []string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.fleets[replica] = keys
		r.poke()
	}
}

// wake pokes the waiters from outside an event (after a test's own
// change, say).
func (r *recorder) wake() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.poke()
}

// wait blocks until cond (called with r.mu held) holds, failing the test
// after timeout.
func (r *recorder) wait(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch := cond(), r.signal
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// succeeded returns the plan's backups that ended succeeded, oldest slot
// first; r.mu is held.
func (r *recorder) succeeded(plan string) []string {
	var ids []string
	for id, st := range r.ended {
		if st == requests.StatusSucceeded && r.subPlan[id] == plan {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids) // same plan: the slot suffix orders them
	return ids
}

// submittedOf returns the plan's requests of a kind, sorted; r.mu is held.
func (r *recorder) submittedOf(plan string, kind requests.Kind) []string {
	var ids []string
	for id := range r.submitted {
		if r.subPlan[id] == plan && r.subKind[id] == kind {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}
