package fleet

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"

	"github.com/cnvrg/capsule/bucket"
	"github.com/sirupsen/logrus"
)

// Set is a changing set of buckets by key.
type Set interface {
	// Buckets returns the current set.
	Buckets() map[string]bucket.Bucket
	// Changed returns a channel closed at the next change of the set.
	Changed() <-chan struct{}
}

// Runner is what runs on one bucket: a *watcher.Watcher. Run returns after
// ctx is done and its work has stopped.
type Runner interface {
	Run(ctx context.Context) error
}

// Config configures a Fleet.
type Config struct {
	// Set is the changing set of buckets (may be nil).
	Set Set
	// Fixed are buckets served whatever the Set says.
	Fixed map[string]bucket.Bucket
	// New makes the runner of one bucket. Required.
	New func(key string, b bucket.Bucket) (Runner, error)
	Log logrus.FieldLogger
	// Changed, when set, is called with the keys served after each change.
	Changed func(keys []string)
}

// Fleet runs one Runner per bucket.
type Fleet struct {
	cfg Config
	log logrus.FieldLogger

	mu      sync.Mutex
	running map[string]*member
	// wg counts every runner still running, stopping ones included.
	wg sync.WaitGroup
}

type member struct {
	b      bucket.Bucket
	cancel context.CancelFunc
	done   chan struct{}
}

// New checks cfg and returns a Fleet.
func New(cfg Config) (*Fleet, error) {
	if cfg.New == nil {
		return nil, errors.New("fleet: New is required")
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		cfg.Log = l
	}
	return &Fleet{cfg: cfg, log: cfg.Log.WithField("component", "fleet"), running: map[string]*member{}}, nil
}

// Keys returns the keys of the buckets served now, sorted.
func (f *Fleet) Keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keysLocked()
}

func (f *Fleet) keysLocked() []string {
	keys := make([]string, 0, len(f.running))
	for k := range f.running {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Run serves the buckets until ctx is done, following the Set's changes,
// then stops every runner and returns when all have stopped.
func (f *Fleet) Run(ctx context.Context) error {
	defer f.stopAll()
	for {
		var changed <-chan struct{}
		if f.cfg.Set != nil {
			// Take the channel before the set: a change in between is
			// then seen at the next round.
			changed = f.cfg.Set.Changed()
		}
		f.sync(ctx, f.desired())
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (f *Fleet) desired() map[string]bucket.Bucket {
	want := map[string]bucket.Bucket{}
	for k, b := range f.cfg.Fixed {
		want[k] = b
	}
	if f.cfg.Set != nil {
		for k, b := range f.cfg.Set.Buckets() {
			want[k] = b
		}
	}
	return want
}

// sync starts a runner for each new bucket and stops those whose bucket
// is gone or changed.
func (f *Fleet) sync(ctx context.Context, want map[string]bucket.Bucket) {
	f.mu.Lock()
	var replaced []*member
	for k, m := range f.running {
		b, ok := want[k]
		switch {
		case !ok:
			f.log.WithField("bucket", k).Info("bucket no longer named: stopping its watcher")
		case b != m.b:
			f.log.WithField("bucket", k).Info("bucket settings changed: restarting its watcher")
			replaced = append(replaced, m)
		default:
			continue
		}
		m.cancel() // the watcher finishes its running work within its grace period
		delete(f.running, k)
	}
	f.mu.Unlock()
	// A replaced runner stops before its successor starts, so one process
	// never runs two watchers on one bucket.
	for _, m := range replaced {
		<-m.done
	}
	f.mu.Lock()
	for k, b := range want {
		if _, ok := f.running[k]; ok {
			continue
		}
		r, err := f.cfg.New(k, b)
		if err != nil {
			f.log.WithError(err).WithField("bucket", k).Error("cannot start a watcher for the bucket")
			continue
		}
		mctx, cancel := context.WithCancel(ctx)
		m := &member{b: b, cancel: cancel, done: make(chan struct{})}
		f.running[k] = m
		f.log.WithField("bucket", k).Info("serving bucket")
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer close(m.done)
			if err := r.Run(mctx); err != nil {
				f.log.WithError(err).WithField("bucket", k).Error("watcher stopped")
			}
		}()
	}
	keys := f.keysLocked()
	f.mu.Unlock()
	if f.cfg.Changed != nil {
		f.cfg.Changed(keys)
	}
}

func (f *Fleet) stopAll() {
	f.mu.Lock()
	for k, m := range f.running {
		m.cancel()
		delete(f.running, k)
	}
	f.mu.Unlock()
	f.wg.Wait()
}
