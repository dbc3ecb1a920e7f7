package retention

import (
	"context"

	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/requests"
)

// LocksPrefix holds the leases of retention and garbage collection.
const LocksPrefix = "locks/"

// GCLockKey is the lease of garbage collection.
const GCLockKey = LocksPrefix + "gc.json"

// manualPlan names the lease of a policy with no plan (manual backups
// only). Plan names start with a letter or digit, so it is no plan's.
const manualPlan = "_manual"

// ErrLeaseLost is the cause of a run's cancellation when its lease was
// taken over or could not be renewed in time.
var ErrLeaseLost = lease.ErrLost

// LockKey returns the key of a policy's lease:
// locks/retention/<cluster>/<source>/<plan>.json, each name one segment.
func LockKey(p Policy) string {
	plan := p.Plan
	if plan == "" {
		plan = manualPlan
	}
	return LocksPrefix + "retention/" + requests.Segment(p.Cluster) + "/" + requests.Segment(p.Source) + "/" + requests.Segment(plan) + ".json"
}

// withLock runs fn under the lock at key. When another replica holds it,
// fn does not run and withLock returns that replica's name. fn's context
// is canceled with ErrLeaseLost when the lock is lost; the lock is
// released when fn returns.
func (r *Runner) withLock(ctx context.Context, key, purpose string, fn func(ctx context.Context, l *lease.Lease) error) (string, error) {
	l, st, err := lease.Acquire(ctx, lease.Claim{
		Bucket: r.cfg.Bucket, Key: key, Holder: r.cfg.Holder, Length: r.cfg.Lease,
		Limit:  requests.DefaultMaxControlObject,
		Encode: lease.Lock(purpose),
	})
	if err != nil {
		return "", err
	}
	if l == nil {
		if st == nil { // lost the race to create it: name the winner if we can
			st, _ = lease.Read(ctx, r.cfg.Bucket, key, requests.DefaultMaxControlObject, r.cfg.Lease)
		}
		switch {
		case st == nil || (st.Holder == "" && !st.Damaged):
			return "another replica", nil
		case st.Holder == "":
			return "another replica (the lock object is damaged)", nil
		}
		return st.Holder, nil
	}
	err = l.Hold(ctx, func(ctx context.Context) error { return fn(ctx, l) })
	if rerr := l.Release(ctx, nil); rerr != nil && err == nil {
		r.log.WithError(rerr).WithField("lock", key).Warn("could not release the lock; it expires instead")
	}
	return "", err
}
