// Package maintenance runs retention and garbage collection in every
// worker, one replica at a time.
//
// Each worker runs a Service. Every so often (Config.Every) it tries to
// take the maintenance lease, locks/maintenance.json, through the lease
// package. The replica that gets it applies every retention policy it
// knows (each under its own retention lease, as always) and collects
// garbage older than Config.GCAfter (orphan attempt folders, folders of
// backups that never committed, uploads left open), then rests the lease
// for Every: no replica takes it again before Every has passed by the
// bucket's clock. So a fleet of any size runs one pass per period, and two
// replicas never delete the same thing, since deletions happen only under
// the leases.
//
// RunOnce is one turn; Pass runs one pass at once (capsule prune and
// capsule gc, which may be dry runs that delete nothing).
package maintenance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
)

// The defaults of worker.maintenance.
const (
	DefaultEvery   = time.Hour
	DefaultGCAfter = 24 * time.Hour
)

// LockKey is the maintenance lease.
const LockKey = retention.LocksPrefix + "maintenance.json"

// Config configures a Service.
type Config struct {
	// Bucket is the bucket, scoped to capsule's prefix. Required.
	Bucket bucket.Bucket
	// Holder names this replica in leases. Required.
	Holder string
	// Every is how often a pass runs across all replicas; DefaultEvery
	// when zero, at least lease.MinLength.
	Every time.Duration
	// GCAfter is the age (by the bucket's clock) garbage must reach
	// before it is removed; DefaultGCAfter when zero. Choose it longer
	// than any backup may run.
	GCAfter time.Duration
	// Policies are the retention policies to apply.
	Policies []retention.Policy
	// GC runs garbage collection; Retention applies the policies. A pass
	// with both false does nothing (capsule prune sets Retention only,
	// capsule gc GC only); New sets both when both are false.
	GC, Retention bool
	// Lease is the maintenance lease's length while a pass runs;
	// retention.DefaultLease when zero.
	Lease time.Duration
	// RequestLease is the workers' lease length (see retention.Config).
	RequestLease time.Duration
	// DryRun deletes nothing: the reports say what a pass would delete.
	DryRun  bool
	Log     logrus.FieldLogger
	Damaged *index.Reporter
	// Observe, when set, is told of every pass's report (metrics).
	Observe func(*Report)
}

// Check checks the settings, naming them as the config file does.
func (c *Config) Check() error {
	switch {
	case c.Every != 0 && c.Every < lease.MinLength:
		return fmt.Errorf("worker.maintenance.every: must be at least %s, got %s", lease.MinLength, c.Every)
	case c.GCAfter < 0:
		return fmt.Errorf("worker.maintenance.gcAfter: must not be negative, got %s", c.GCAfter)
	}
	for _, p := range c.Policies {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("source %s: %w", p.Source, err)
		}
	}
	return nil
}

// Service runs maintenance passes.
type Service struct {
	cfg Config
	r   *retention.Runner
	log logrus.FieldLogger
}

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Bucket == nil || cfg.Holder == "" {
		return nil, errors.New("maintenance: Bucket and Holder are required")
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Every == 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.GCAfter == 0 {
		cfg.GCAfter = DefaultGCAfter
	}
	if cfg.Lease == 0 {
		cfg.Lease = retention.DefaultLease
	}
	if !cfg.GC && !cfg.Retention {
		cfg.GC, cfg.Retention = true, true
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		cfg.Log = l
	}
	r, err := retention.New(retention.Config{
		Bucket: cfg.Bucket, Holder: cfg.Holder, Lease: cfg.Lease, RequestLease: cfg.RequestLease,
		Log: cfg.Log, Damaged: cfg.Damaged, DryRun: cfg.DryRun, WAL: pitr.PruneWAL,
	})
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, r: r, log: cfg.Log.WithField("job", "maintenance")}, nil
}

// Report is what one pass did.
type Report struct {
	// HeldBy names the replica whose turn it is (it holds the lease, or
	// ran a pass less than Every ago); when set, this pass did nothing.
	HeldBy string `json:"heldBy,omitempty"`
	DryRun bool   `json:"dryRun,omitempty"`
	// Retention has one entry per policy.
	Retention []PolicyReport      `json:"retention,omitempty"`
	GC        *retention.GCReport `json:"gc,omitempty"`
	GCError   string              `json:"gcError,omitempty"`
}

// PolicyReport is one policy's part of a pass.
type PolicyReport struct {
	Policy retention.Policy  `json:"policy"`
	Report *retention.Report `json:"report,omitempty"`
	Error  string            `json:"error,omitempty"`
}

// RunOnce runs one pass if it is this replica's turn: nobody holds the
// maintenance lease and the last pass was at least Every ago by the
// bucket's clock. Otherwise it returns a report naming the holder.
func (s *Service) RunOnce(ctx context.Context) (*Report, error) {
	l, st, err := lease.Acquire(ctx, lease.Claim{
		Bucket: s.cfg.Bucket, Key: LockKey, Holder: s.cfg.Holder, Length: s.cfg.Lease,
		Limit:  requests.DefaultMaxControlObject,
		Encode: lease.Lock("maintenance"),
	})
	if err != nil {
		return nil, err
	}
	if l == nil {
		heldBy := "another replica"
		if st != nil && st.Holder != "" {
			heldBy = st.Holder
		}
		return &Report{HeldBy: heldBy}, nil
	}
	rep := &Report{DryRun: s.cfg.DryRun}
	err = l.Hold(ctx, func(ctx context.Context) error { return s.pass(ctx, rep) })
	if s.cfg.Observe != nil {
		s.cfg.Observe(rep)
	}
	var rerr error
	if s.cfg.DryRun {
		rerr = l.Release(ctx, nil)
	} else {
		rerr = l.Rest(ctx, s.cfg.Every)
	}
	if rerr != nil && !errors.Is(rerr, lease.ErrLost) {
		s.log.WithError(rerr).Warn("could not rest the maintenance lease; it expires instead")
	}
	return rep, err
}

// Pass runs one pass now, whoever's turn it is (capsule prune and
// capsule gc): each policy and garbage collection still run under their
// own leases, so a pass elsewhere is never doubled, only told apart in
// the reports (LeaseHeldBy).
func (s *Service) Pass(ctx context.Context) (*Report, error) {
	rep := &Report{DryRun: s.cfg.DryRun}
	err := s.pass(ctx, rep)
	if s.cfg.Observe != nil {
		s.cfg.Observe(rep)
	}
	return rep, err
}

func (s *Service) pass(ctx context.Context, rep *Report) error {
	if s.cfg.Retention {
		for _, p := range s.cfg.Policies {
			r, err := s.r.Apply(ctx, p)
			pr := PolicyReport{Policy: p, Report: r}
			if err != nil {
				pr.Error = err.Error()
				s.log.WithError(err).WithField("source", p.Source).Warn("retention failed; the next pass tries again")
			}
			rep.Retention = append(rep.Retention, pr)
			if context.Cause(ctx) != nil {
				return context.Cause(ctx)
			}
		}
	}
	if s.cfg.GC {
		g, err := s.r.CollectGarbage(ctx, s.cfg.GCAfter)
		rep.GC = g
		if err != nil {
			rep.GCError = err.Error()
			s.log.WithError(err).Warn("garbage collection failed; the next pass tries again")
		}
	}
	return context.Cause(ctx)
}

// Run runs a pass whenever it is this replica's turn until ctx ends:
// it looks every Every/10 (between 10s and 5m), one GET when it is not.
func (s *Service) Run(ctx context.Context) error {
	look := min(max(s.cfg.Every/10, 10*time.Second), 5*time.Minute)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rep, err := s.RunOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.WithError(err).Warn("maintenance pass failed; will retry")
		case rep != nil && rep.HeldBy == "":
			s.log.WithFields(logrus.Fields{"policies": len(rep.Retention)}).Info("maintenance pass done")
		}
		t.Reset(look)
	}
}
