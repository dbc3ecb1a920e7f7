package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketcheck"
	"github.com/cnvrg/capsule/fleet"
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
)

// unsafeWarnEvery is how often a worker that claims on an unsafe bucket
// (--unsafe-bucket) says so again.
const unsafeWarnEvery = 10 * time.Minute

// bucketSafety is a worker's start-up self-test of its buckets: the
// safety-critical part of "capsule bucket check", before anything is
// claimed.
type bucketSafety struct {
	unsafeOK bool
}

func (s *bucketSafety) flags(f *pflag.FlagSet) {
	f.BoolVar(&s.unsafeOK, "unsafe-bucket", false, `claim requests even on a bucket that fails the start-up safety check (see "capsule bucket check"): requests may then run twice`)
}

// gate runs the start-up check on b. A bucket that fails it is refused
// with an error that names each broken property, unless --unsafe-bucket:
// then the worker goes on and says so in the log at once and every
// unsafeWarnEvery until ctx ends. A check that cannot finish (the bucket
// unreachable, say) is repeated, with a growing pause, until it does; when
// ctx ends first, gate returns nil and the caller's watcher, on the same
// ctx, claims nothing.
func (s *bucketSafety) gate(ctx context.Context, b bucket.Bucket, log logrus.FieldLogger) error {
	pause := time.Second
	var rep *bucketcheck.Report
	for attempt := 1; ; attempt++ {
		var err error
		rep, err = bucketcheck.Run(ctx, b, bucketcheck.Startup())
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		log.WithError(err).WithFields(logrus.Fields{"attempt": attempt, "retry_in": pause.String()}).
			Warn("the bucket's start-up safety check could not finish: nothing is claimed until it does")
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		pause = min(2*pause, 30*time.Second)
	}
	for _, r := range rep.Results {
		if r.Status == bucketcheck.Warn {
			log.WithFields(logrus.Fields{"property": r.Property}).Warn(r.Detail)
		}
	}
	uerr := rep.Err()
	if uerr == nil {
		f := logrus.Fields{"seconds": rep.Seconds}
		if rep.ClockSkewSeconds != nil {
			f["clock_skew_seconds"] = *rep.ClockSkewSeconds
		}
		log.WithFields(f).Info("the bucket passed the start-up safety check")
		return nil
	}
	if !s.unsafeOK {
		return fmt.Errorf("refusing to claim requests: %w (\"capsule bucket check\" tells more; --unsafe-bucket claims anyway)", uerr)
	}
	nag := func() {
		log.WithError(uerr).Error("UNSAFE BUCKET: claiming requests anyway because of --unsafe-bucket: requests may run twice and results be overwritten")
	}
	nag()
	go func() {
		tick := time.NewTicker(unsafeWarnEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				nag()
			}
		}
	}()
	return nil
}

// gatedRunner runs a fleet member's watcher only on a bucket that passed
// the start-up check; a bucket that fails it gets no watcher (the other
// buckets go on) until the fleet stops it.
type gatedRunner struct {
	safety *bucketSafety
	b      bucket.Bucket
	r      fleet.Runner
	log    logrus.FieldLogger
	// passed, when set, holds b while it has passed the check and its
	// runner runs: the WAL streams write only into such buckets.
	passed *safeBuckets
}

func (g gatedRunner) Run(ctx context.Context) error {
	if err := g.safety.gate(ctx, g.b, g.log); err != nil {
		g.log.WithError(err).Error("no watcher for this bucket, and no WAL stream into it: it failed the start-up safety check")
		<-ctx.Done()
		return nil
	}
	if g.passed != nil && ctx.Err() == nil {
		g.passed.add(g.b)
		defer g.passed.remove(g.b)
	}
	return g.r.Run(ctx)
}

// safeBuckets are the buckets that passed the start-up check (or run
// with --unsafe-bucket), for the WAL streams of "worker --scan": a
// stream's lease and create-only objects rest on the same promises as
// claims. Changed is closed when the set changes.
type safeBuckets struct {
	mu      sync.Mutex
	set     map[bucket.Bucket]int
	changed chan struct{}
}

func newSafeBuckets() *safeBuckets {
	return &safeBuckets{set: map[bucket.Bucket]int{}, changed: make(chan struct{})}
}

func (s *safeBuckets) add(b bucket.Bucket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set[b]++
	s.poke()
}

func (s *safeBuckets) remove(b bucket.Bucket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set[b]--; s.set[b] <= 0 {
		delete(s.set, b)
	}
	s.poke()
}

// poke closes and replaces changed; s.mu is held.
func (s *safeBuckets) poke() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *safeBuckets) has(b bucket.Bucket) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set[b] > 0
}

func (s *safeBuckets) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}
