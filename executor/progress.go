package executor

import (
	"context"
	"sync"
	"time"

	"github.com/cnvrg/capsule/requests"
)

// Tracker is what a run and its lease holder share: the run's latest
// progress, which the lease renewer snapshots into the lease (where
// `capsule status` and the API read it), and the holder's fence, which a
// restore calls right before its swap. A nil *Tracker ignores updates
// and has no fence.
type Tracker struct {
	mu         sync.Mutex
	p          requests.Progress
	storedBase int64
	storedCur  int64
	fenceFn    func(ctx context.Context) error
}

// SetFence gives the run its lease holder's fence: a function that
// renews the lease now, with If-Match on the holder's last write, and
// fails when the lease is lost or cannot be confirmed. Restores call it
// immediately before they swap (engines.RestoreJob.Fence).
func (t *Tracker) SetFence(f func(ctx context.Context) error) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fenceFn = f
}

// fence returns the fence set with SetFence, nil when there is none.
func (t *Tracker) fence() func(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fenceFn
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker { return &Tracker{} }

// Phase sets the current phase.
func (t *Tracker) Phase(phase string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.p.Phase = phase
	t.p.UpdatedAt = time.Now().UTC()
}

// Artifact starts the next artifact.
func (t *Tracker) Artifact(name string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.storedBase += t.storedCur
	t.storedCur = 0
	t.p.Artifact = name
	t.p.UpdatedAt = time.Now().UTC()
}

// Bytes adds raw bytes moved and sets the current artifact's stored bytes.
func (t *Tracker) Bytes(rawDelta, storedCur int64) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.p.Bytes += rawDelta
	t.storedCur = storedCur
	t.p.StoredBytes = t.storedBase + t.storedCur
	t.p.UpdatedAt = time.Now().UTC()
}

// Engine is an engines.Progress that records an engine's own counts.
func (t *Tracker) Engine(phase string, done, total int64) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if phase != "" {
		t.p.Phase = phase
	}
	t.p.Done, t.p.Total = done, total
	t.p.UpdatedAt = time.Now().UTC()
}

// Snapshot returns a copy of the latest progress.
func (t *Tracker) Snapshot() requests.Progress {
	if t == nil {
		return requests.Progress{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.p
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = time.Now().UTC()
	}
	return p
}
