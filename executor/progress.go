package executor

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/cnvrg/capsule/requests"
	"github.com/sirupsen/logrus"
)

// Tracker is what a run and its lease holder share: the run's latest
// progress, which the lease renewer snapshots into the lease (where
// `capsule status` and the API read it), and the holder's fence, which a
// restore calls right before its swap. A nil *Tracker ignores updates
// and has no fence.
//
// Bytes are counted per pass over the artifacts: an engine that reads
// them twice (Redis checks the whole artifact before it flushes, then
// loads it) starts a second pass when it opens an artifact again, and
// the progress counts from 0 to the total once more, as pass 2.
type Tracker struct {
	mu         sync.Mutex
	p          requests.Progress
	storedBase int64
	storedCur  int64
	opened     map[string]bool
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

// NewTracker returns an empty tracker, started now.
func NewTracker() *Tracker {
	return &Tracker{p: requests.Progress{StartedAt: time.Now().UTC()}}
}

// Expect sets how many raw bytes the run should move: a restore's
// recorded size, or a backup's estimate from its engine (estimated). A
// total of 0 or less is unknown.
func (t *Tracker) Expect(total int64, estimated bool) {
	if t == nil || total <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.p.TotalBytes, t.p.Estimated = total, estimated
	t.p.UpdatedAt = time.Now().UTC()
}

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

// Artifact starts the next artifact. Opening one that was opened before
// starts a new pass: bytes count from 0 again.
func (t *Tracker) Artifact(name string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.opened[name] {
		t.opened = nil
		t.p.Pass = max(t.p.Pass, 1) + 1
		t.p.Bytes, t.p.StoredBytes, t.storedBase, t.storedCur = 0, 0, 0, 0
		t.p.StartedAt = time.Now().UTC()
	}
	if t.opened == nil {
		t.opened = map[string]bool{}
	}
	t.opened[name] = true
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

// Fields describes the latest progress for a log line: phase, artifact,
// bytes, items, and where a total is known the percentage, the rate and
// the time left (see requests.Progress).
func (t *Tracker) Fields() logrus.Fields {
	p := t.Snapshot()
	f := logrus.Fields{"phase": p.Phase, "bytes": p.Bytes, "stored_bytes": p.StoredBytes}
	if p.Artifact != "" {
		f["artifact"] = p.Artifact
	}
	if p.Pass > 0 {
		f["pass"] = p.Pass
	}
	if p.Total > 0 || p.Done > 0 {
		f["done"], f["total"] = p.Done, p.Total
	}
	if p.TotalBytes > 0 {
		f["total_bytes"] = p.TotalBytes
		if p.Estimated {
			f["total_estimated"] = true
		}
	}
	if pct, ok := p.Percent(); ok {
		f["percent"] = math.Round(pct*10) / 10
	}
	if r := p.Rate(); r > 0 {
		f["bytes_per_second"] = int64(r)
	}
	if eta, ok := p.ETA(); ok {
		f["eta"] = eta.Round(time.Second).String()
	}
	return f
}

// logEvery logs the tracker's progress every interval until stop is
// closed: a worker's log says how far a long run is, not only that it
// runs.
func (t *Tracker) logEvery(interval time.Duration, log logrus.FieldLogger, stop <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			log.WithFields(t.Fields()).Info("progress")
		}
	}
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
