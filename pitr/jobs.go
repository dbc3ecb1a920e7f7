package pitr

import (
	"context"
	"errors"
	"io"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/index"
	"github.com/sirupsen/logrus"
)

// Job is one source's continuous point-in-time work on a worker: its WAL
// stream, which runs wherever the stream's lease is held, and its slot
// guard, which runs on every worker. The stream writes into Bucket only.
type Job struct {
	Bucket  bucket.Bucket
	Cluster string
	// Source is a postgres source with pitr on. Its Password is asked at
	// each connection, so it may follow a changing Secret.
	Source engines.Source
}

// same reports whether two jobs stream the same thing the same way: a
// job whose bucket, cluster or settings changed is restarted.
func (j Job) same(o Job) bool {
	return j.Bucket == o.Bucket && j.Cluster == o.Cluster && j.Source.Name == o.Source.Name &&
		j.Source.Engine == o.Source.Engine && reflect.DeepEqual(j.Source.Config, o.Source.Config) &&
		reflect.DeepEqual(j.Source.Recipients, o.Source.Recipients)
}

// DefaultGuardEvery is how often each worker checks a job's slot.
const DefaultGuardEvery = 30 * time.Second

// Jobs runs the Jobs of a worker: the sources of its configuration file
// and, with the CnvrgApp scanner, the plans with point-in-time recovery
// on. Sync starts the new ones and stops those that are gone or changed;
// a stopped stream hands its lease back so that another worker takes it
// at once. Each job is started and stopped here and nowhere else.
type Jobs struct {
	// Holder names this worker in the streams' leases; Lease is their
	// length. Both required.
	Holder string
	Lease  time.Duration
	Log    logrus.FieldLogger
	// Recipients, Signer and RetainFor go to every stream (the worker's
	// own: StreamConfig's); a source's own recipients still come first.
	Recipients []string
	Signer     *index.Signer
	RetainFor  time.Duration
	// GuardEvery: default DefaultGuardEvery. FlushEvery and Retry go to
	// the streams (their defaults when 0).
	GuardEvery, FlushEvery, Retry time.Duration
	// Written, Observe and Dropped, when set, see a job's stream writes,
	// its slot readings and a dropped slot (the metrics).
	Written func(job Job, seg Segment, h Header)
	Observe func(job Job, lagBytes, alertBytes int64)
	Dropped func(job Job)
	// Stopped, when set, is called after a job stopped because it is no
	// longer wanted or changed (not at Stop): the metrics forget it.
	Stopped func(job Job)

	mu      sync.Mutex
	running map[string]*runningJob
}

type runningJob struct {
	job    Job
	cancel context.CancelFunc
	done   chan struct{}
}

// Sync makes the running jobs those of want (by the caller's names):
// jobs no longer wanted, or changed, are stopped (and waited for) before
// the new ones start under ctx. A job whose source is not a pitr source
// is an error, logged; the others still start. It returns the first
// such error.
func (js *Jobs) Sync(ctx context.Context, want map[string]Job) error {
	return js.sync(ctx, want, false)
}

func (js *Jobs) sync(ctx context.Context, want map[string]Job, shutdown bool) error {
	log := js.log()
	js.mu.Lock()
	if js.running == nil {
		js.running = map[string]*runningJob{}
	}
	var stopping []*runningJob
	for name, r := range js.running {
		if w, ok := want[name]; ok && w.same(r.job) {
			continue
		}
		if _, ok := want[name]; ok {
			log.WithField("source", r.job.Source.Name).Info("point-in-time recovery settings changed: restarting the WAL stream")
		} else if !shutdown {
			log.WithField("source", r.job.Source.Name).Info("point-in-time recovery off: stopping the WAL stream")
		}
		r.cancel()
		stopping = append(stopping, r)
		delete(js.running, name)
	}
	js.mu.Unlock()
	// A stream stops (and hands its lease back) before its successor on
	// the same source starts: one process never streams a source twice.
	for _, r := range stopping {
		<-r.done
		if js.Stopped != nil && !shutdown {
			js.Stopped(r.job)
		}
	}
	var first error
	js.mu.Lock()
	defer js.mu.Unlock()
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, ok := js.running[name]; ok || ctx.Err() != nil {
			continue
		}
		r, err := js.start(ctx, want[name])
		if err != nil {
			log.WithError(err).WithField("source", want[name].Source.Name).Error("cannot start the WAL stream")
			if first == nil {
				first = err
			}
			continue
		}
		js.running[name] = r
	}
	return first
}

// Running returns the names of the running jobs, sorted.
func (js *Jobs) Running() []string {
	js.mu.Lock()
	defer js.mu.Unlock()
	names := make([]string, 0, len(js.running))
	for name := range js.running {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Stop stops every job and waits for them.
func (js *Jobs) Stop() { _ = js.sync(context.Background(), nil, true) }

// Follow runs the jobs that want returns until ctx ends, calling it again
// each time the channel that changed returns is closed, then stops them
// all.
func (js *Jobs) Follow(ctx context.Context, want func() map[string]Job, changed func() <-chan struct{}) {
	defer js.Stop()
	for {
		// Take the channel before the set: a change in between is then
		// seen at the next round.
		ch := changed()
		_ = js.Sync(ctx, want())
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

func (js *Jobs) log() logrus.FieldLogger {
	if js.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		return l
	}
	return js.Log
}

// start starts one job's stream and guard.
func (js *Jobs) start(ctx context.Context, job Job) (*runningJob, error) {
	if js.Holder == "" || js.Lease <= 0 {
		return nil, errors.New("pitr jobs: Holder and Lease are required")
	}
	log := js.log()
	cfg := StreamConfig{
		Bucket: job.Bucket, Cluster: job.Cluster, Source: job.Source, Log: log,
		Recipients: js.Recipients, Signer: js.Signer, RetainFor: js.RetainFor,
		Leaser:     &BucketLeaser{Bucket: job.Bucket, Holder: js.Holder, Length: js.Lease},
		FlushEvery: js.FlushEvery, Retry: js.Retry,
	}
	if js.Written != nil {
		cfg.Written = func(seg Segment, h Header) { js.Written(job, seg, h) }
	}
	s, err := NewStream(cfg)
	if err != nil {
		return nil, err
	}
	g := &Guard{Cluster: job.Cluster, Source: job.Source, Log: log}
	if js.Observe != nil {
		g.Observe = func(lag, alert int64) { js.Observe(job, lag, alert) }
	}
	if js.Dropped != nil {
		g.Dropped = func() { js.Dropped(job) }
	}
	every := js.GuardEvery
	if every <= 0 {
		every = DefaultGuardEvery
	}
	jctx, cancel := context.WithCancel(ctx)
	r := &runningJob{job: job, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.Run(jctx) }()
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if _, err := g.RunOnce(jctx); err != nil && jctx.Err() == nil {
				log.WithError(err).WithFields(logrus.Fields{"source": job.Source.Name, "slot": postgres.SlotName(job.Source.Name)}).
					Warn("cannot check the WAL stream's slot")
			}
			select {
			case <-jctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	go func() { wg.Wait(); close(r.done) }()
	log.WithFields(logrus.Fields{"source": job.Source.Name, "cluster": job.Cluster}).Info("point-in-time recovery on: competing for the WAL stream")
	return r, nil
}
