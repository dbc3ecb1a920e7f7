package watcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/requests"
	"github.com/sirupsen/logrus"
)

// Runner executes a claimed request and commits what it produced;
// *executor.Executor is one.
type Runner interface {
	Run(ctx context.Context, req *requests.Request, attempt int, progress *executor.Tracker) *executor.Outcome
	// Commit writes a finished run's index or verification record, before
	// the result. executor.ErrConflict means it never can.
	Commit(ctx context.Context, out *executor.Outcome) error
}

// Config configures a Watcher.
type Config struct {
	Bucket bucket.Bucket
	Runner Runner
	// Worker names this worker in leases and results (unique per process).
	Worker string
	// Concurrency is how many requests run at once (default 2).
	Concurrency int
	// Poll is the interval between LIST passes (default 5s).
	Poll time.Duration
	// Lease is a lease's length (default 60s); it is renewed every third
	// of it.
	Lease time.Duration
	// MaxAttempts is how many attempts a request gets before it ends
	// failed (default 3).
	MaxAttempts int
	// Grace is how long running work may finish after shutdown begins
	// before it is canceled and its leases handed back (default 30s).
	Grace time.Duration
	// MaxControlObject is the size limit, in bytes, of the requests and
	// leases this worker reads (default requests.DefaultMaxControlObject,
	// 1 MiB). A larger request is rejected and a larger lease treated as
	// damaged, neither read whole.
	MaxControlObject int64
	// Cluster is the cluster of requests that name none (the worker's
	// configured cluster); requests.DefaultCluster when empty.
	Cluster string
	Log     logrus.FieldLogger
	// Events, when set, is told of every claim, takeover, loss and
	// finish (metrics and tests hook in here).
	Events func(Event)
}

// Event is something that happened to a request on this worker.
type Event struct {
	Type    EventType
	ID      string
	Attempt int
	Status  requests.Status
	Kind    requests.Kind
	// Err is what went wrong; on EventFinished, the result's error
	// (redacted).
	Err error
	// Source is the source a request names: on a claim or takeover, a
	// Backup's source or a Restore's or Verify's target (empty when it
	// names none); on EventFinished, the result's source.
	Source string
	// The rest describe a finished run (EventFinished), as far as it got:
	// Engine is empty when the request never reached an engine, Duration
	// is zero when nothing ran (a rejected or canceled claim).
	Cluster     string
	Engine      string
	Bytes       int64
	StoredBytes int64
	Duration    time.Duration
	// Finished is the result's FinishedAt.
	Finished time.Time
}

// EventType names an Event.
type EventType string

// The event types.
const (
	EventClaimed   EventType = "claimed"
	EventTakeover  EventType = "takeover"
	EventRenewed   EventType = "renewed"
	EventLost      EventType = "lost"
	EventFinished  EventType = "finished"
	EventReleased  EventType = "released"
	EventAbandoned EventType = "abandoned"
)

// The defaults of a worker's settings. This is their one owner: the
// config file's defaults and the flags' come from here.
const (
	DefaultConcurrency = 2
	DefaultPoll        = 5 * time.Second
	DefaultLease       = lease.DefaultRequestLength
	DefaultMaxAttempts = 3
	DefaultGrace       = 30 * time.Second
)

// SettingError is a bad worker setting, named by its flag (Flag, as
// Error says it) and its key under worker: in the config file (Key).
type SettingError struct {
	Flag, Key, Problem string
}

func (e *SettingError) Error() string { return e.Flag + ": " + e.Problem }

// Defaults fills the settings left zero with their defaults.
func (c *Config) Defaults() {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Poll == 0 {
		c.Poll = DefaultPoll
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.MaxControlObject == 0 {
		c.MaxControlObject = requests.DefaultMaxControlObject
	}
}

// CheckSettings checks the worker's settings (not Bucket, Runner or the
// hooks); a bad one is a *SettingError. This is the one place they are
// checked: the config file is checked here too.
func (c Config) CheckSettings() error {
	bad := func(flag, key, format string, args ...any) error {
		return &SettingError{Flag: flag, Key: key, Problem: fmt.Sprintf(format, args...)}
	}
	switch {
	case c.Concurrency < 1:
		return bad("concurrency", "concurrency", "must be at least 1, got %d", c.Concurrency)
	case c.Poll < 10*time.Millisecond:
		return bad("poll", "poll", "must be at least 10ms, got %s", c.Poll)
	case lease.Problem(c.Lease) != "":
		return bad("lease", "lease", "%s", lease.Problem(c.Lease))
	case c.MaxAttempts < 1:
		return bad("max-attempts", "maxAttempts", "must be at least 1, got %d", c.MaxAttempts)
	case c.Grace < 0:
		return bad("grace", "grace", "must not be negative, got %s", c.Grace)
	case c.MaxControlObject < requests.MinControlObjectLimit || c.MaxControlObject > requests.MaxControlObjectLimit:
		return bad("max-control-object", "maxControlObject", "must be between %s and %s, got %d bytes",
			bucket.FormatSize(requests.MinControlObjectLimit), bucket.FormatSize(requests.MaxControlObjectLimit), c.MaxControlObject)
	}
	return nil
}

// Validate fills defaults and checks the configuration, naming the bad
// setting.
func (c *Config) Validate() error {
	if c.Bucket == nil || c.Runner == nil {
		return errors.New("watcher: Bucket and Runner are required")
	}
	c.Defaults()
	if c.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		c.Log = l
	}
	if c.Worker == "" {
		c.Worker = "worker-" + randomHex(4)
	}
	return c.CheckSettings()
}

// Watcher finds pending requests, claims them, and runs them under a
// renewed lease.
type Watcher struct {
	cfg  Config
	log  logrus.FieldLogger
	wake chan struct{}

	mu      sync.Mutex
	running map[string]*job
	// claims are ids whose claim is under way (a pass or a hint), so
	// that concurrent claimers respect the limit and never race for one id.
	claims map[string]bool
	// elsewhere holds requests handed back because another client of
	// this bucket serves their source, until when this watcher leaves
	// them to that client's watcher.
	elsewhere map[string]time.Time
	// answered are the keys under requests/ whose name is not a valid
	// id and that have a rejected result: later passes leave them alone.
	answered map[string]bool
	// seen are leases found held, not read again until written again or
	// due to expire (claimOrder).
	seen map[string]seenLease
	// canceled are running or finishing requests with a cancel object.
	canceled map[string]bool
	// pass serializes passes; it guards the fields below.
	pass sync.Mutex
	// lastSweep is when the last sweep ran, sweeps how many did.
	lastSweep time.Time
	sweeps    int
	// quiet: the last listing of requests/ was empty.
	quiet bool
	// leftover are the unleased requests the last listing showed that its
	// pass did not try, listed at leftoverAt: a pass within a poll
	// interval of it, after a job finished, claims from them first.
	leftover   []candidate
	leftoverAt time.Time
	// leftoverCancels are the cancel objects that listing's pass saw.
	leftoverCancels map[string]bool
	wg              sync.WaitGroup
	// stopClaiming is closed when shutdown begins.
	stopClaiming chan struct{}
	stopOnce     sync.Once
	// jobs' contexts derive from this, canceled after the grace period.
	jobsCtx    context.Context
	cancelJobs context.CancelCauseFunc
}

type job struct {
	id      string
	attempt int
	cancel  context.CancelCauseFunc
	done    chan struct{}
}

// ErrShutdown is the cause given to jobs canceled by a shutdown.
var ErrShutdown = errors.New("worker shutting down")

// ErrLeaseLost is the cause given to a job whose lease another worker took.
var ErrLeaseLost = lease.ErrLost

// New validates cfg and returns a Watcher.
func New(cfg Config) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	jobsCtx, cancelJobs := context.WithCancelCause(context.Background())
	return &Watcher{
		cfg:          cfg,
		log:          cfg.Log.WithField("worker", cfg.Worker),
		wake:         make(chan struct{}, 1),
		running:      map[string]*job{},
		claims:       map[string]bool{},
		elsewhere:    map[string]time.Time{},
		answered:     map[string]bool{},
		seen:         map[string]seenLease{},
		canceled:     map[string]bool{},
		stopClaiming: make(chan struct{}),
		jobsCtx:      jobsCtx,
		cancelJobs:   cancelJobs,
	}, nil
}

// Wake asks for a pass now (a notification named a new request). It never
// blocks; correctness never depends on it.
func (w *Watcher) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run polls until ctx is done, then shuts down in two stages: it stops
// claiming, lets running work finish within the grace period, then
// cancels what is left and hands its leases back. It returns when every
// job has stopped.
func (w *Watcher) Run(ctx context.Context) error {
	w.log.WithFields(logrus.Fields{"concurrency": w.cfg.Concurrency, "poll": w.cfg.Poll.String(), "lease": w.cfg.Lease.String()}).Info("worker started")
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return w.Shutdown(context.Background())
		case <-t.C:
		case <-w.wake:
		}
		if _, err := w.RunOnce(ctx); err != nil && ctx.Err() == nil {
			w.log.WithError(err).Warn("poll failed; will retry")
		}
		t.Reset(w.cfg.Poll)
	}
}

// Shutdown stops claiming, waits up to the grace period (or ctx) for
// running jobs, then cancels them; canceled jobs hand their leases back so
// another worker takes over at once.
func (w *Watcher) Shutdown(ctx context.Context) error {
	w.stopOnce.Do(func() { close(w.stopClaiming) })
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	n := w.Running()
	if n > 0 {
		w.log.WithFields(logrus.Fields{"running": n, "grace": w.cfg.Grace.String()}).Info("shutting down: waiting for running work")
	}
	grace := time.NewTimer(w.cfg.Grace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		w.log.Warn("grace period over: canceling running work and handing leases back")
		w.cancelJobs(ErrShutdown)
		<-done
	case <-ctx.Done():
		w.cancelJobs(ErrShutdown)
		<-done
	}
	w.log.Info("worker stopped")
	return nil
}

// Running returns how many jobs run now.
func (w *Watcher) Running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running)
}

// Wait blocks until no job runs (for tests and one-shot runs).
func (w *Watcher) Wait() { w.wg.Wait() }

func (w *Watcher) claiming() bool {
	select {
	case <-w.stopClaiming:
		return false
	default:
		return true
	}
}

func (w *Watcher) emit(e Event) {
	if w.cfg.Events != nil {
		w.cfg.Events(e)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func marshal(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs of this package reach here
	}
	return data
}
