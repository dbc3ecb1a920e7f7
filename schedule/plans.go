package schedule

import (
	"context"
	"errors"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// Submit writes a scheduled request create-only unless done (a key such
// as the backup's index) says it already ran. It reports whether this
// call wrote it; a request that exists or ran is no error. Every replica
// computes the same id for a slot (requests.SlotID), so of any number of
// replicas exactly one writes it.
func Submit(ctx context.Context, b bucket.Bucket, req *requests.Request, done string) (bool, error) {
	if done != "" {
		if _, err := b.Head(ctx, done); err == nil {
			return false, nil
		} else if !errors.Is(err, bucket.ErrNotFound) {
			return false, err
		}
	}
	err := client.Submit(ctx, b, req)
	if errors.Is(err, bucket.ErrPreconditionFailed) {
		return false, nil
	}
	return err == nil, err
}

// Backups lists a plan's successful backups of one cluster and source,
// newest first.
func Backups(ctx context.Context, b bucket.Reader, cluster, source, plan string) ([]index.Entry, error) {
	all, err := index.List(ctx, b, index.Filter{Cluster: cluster, Source: source})
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, e := range all {
		if e.Plan == plan && e.Status == requests.StatusSucceeded {
			out = append(out, e)
		}
	}
	return out, nil
}

// VerifyPlan names a plan's verification requests: their ids are
// requests.SlotID(VerifyPlan(plan), slot).
func VerifyPlan(plan string) string { return plan + "/verify" }

// Plan is a source's own plan in a worker's configuration: backups on a
// schedule and, optionally, a verification of the newest backup on
// another. Retention is the maintenance package's.
type Plan struct {
	// Source names the source; the plan has its name.
	Source   string
	Cluster  string
	Schedule Schedule
	Verify   *Schedule
}

// Runner runs plans without Kubernetes or a leader: every replica runs it,
// and at each pass makes sure the current slot's request exists, with the
// slot's id (requests.SlotID), create-only. So any number of workers back
// up exactly once per slot; a slot missed while none ran is caught up
// once, by the first pass after it.
type Runner struct {
	b     bucket.Bucket
	plans []Plan
	log   logrus.FieldLogger
	// Clock is the time of a pass (time.Now when nil).
	Clock func() time.Time
	// done remembers the slots known to exist, by plan.
	done map[string]string
}

// NewRunner returns a Runner of plans in bucket b.
func NewRunner(b bucket.Bucket, plans []Plan, log logrus.FieldLogger) *Runner {
	if log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		log = l
	}
	return &Runner{b: b, plans: plans, log: log, done: map[string]string{}}
}

// Pass runs every plan's current slot at now and returns when the next
// slot begins (zero with no plans).
func (r *Runner) Pass(ctx context.Context, now time.Time) time.Time {
	var next time.Time
	for _, p := range r.plans {
		log := r.log.WithFields(logrus.Fields{"plan": p.Source, "source": p.Source})
		if slot := p.Schedule.Slot(now); !slot.IsZero() {
			id := requests.SlotID(p.Source, slot)
			req := &requests.Request{Kind: requests.KindBackup, ID: id, Cluster: p.Cluster, Source: p.Source, Plan: p.Source}
			r.ensure(ctx, p.Source, req, requests.IndexKey(p.Cluster, p.Source, id), log)
		}
		next = earliest(next, p.Schedule.Next(now))
		if p.Verify == nil {
			continue
		}
		if slot := p.Verify.Slot(now); !slot.IsZero() {
			id := requests.SlotID(VerifyPlan(p.Source), slot)
			if r.done[VerifyPlan(p.Source)] != id {
				entries, err := Backups(ctx, r.b, p.Cluster, p.Source, p.Source)
				if err != nil {
					log.WithError(err).Warn("cannot list the plan's backups; will retry")
				} else if len(entries) > 0 {
					req := &requests.Request{Kind: requests.KindVerify, ID: id, Cluster: p.Cluster, BackupID: entries[0].BackupID, Plan: p.Source}
					r.ensure(ctx, VerifyPlan(p.Source), req, requests.ResultKey(id), log)
				}
			}
		}
		next = earliest(next, p.Verify.Next(now))
	}
	return next
}

func (r *Runner) ensure(ctx context.Context, plan string, req *requests.Request, done string, log logrus.FieldLogger) {
	if r.done[plan] == req.ID {
		return
	}
	wrote, err := Submit(ctx, r.b, req, done)
	if err != nil {
		log.WithError(err).WithField("request_id", req.ID).Warn("cannot submit the scheduled request; will retry")
		return
	}
	if wrote {
		log.WithFields(logrus.Fields{"request_id": req.ID, "kind": req.Kind}).Info("scheduled request submitted")
	}
	r.done[plan] = req.ID
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// Run runs passes until ctx ends: at each slot's start, and at least
// every tick.
func (r *Runner) Run(ctx context.Context, tick time.Duration) error {
	clock := r.Clock
	if clock == nil {
		clock = time.Now
	}
	for {
		now := clock()
		wait := tick
		if next := r.Pass(ctx, now); !next.IsZero() && next.Sub(now) < wait {
			wait = max(next.Sub(now), time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
