package retention

import (
	"context"
	"encoding/json"
	"time"

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

// lockBody is a lock object (see the lease package for the protocol).
type lockBody struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"` // "Lock"
	Purpose    string `json:"purpose"`
	Holder     string `json:"holder"`
	Token      string `json:"token"`
	Attempt    int    `json:"attempt"`
	// DurationMillis is the lease's length, judged by the bucket's clock.
	DurationMillis int64     `json:"durationMillis"`
	AcquiredAt     time.Time `json:"acquiredAt"`
	RenewedAt      time.Time `json:"renewedAt"`
	Released       bool      `json:"released,omitempty"`
}

// withLock runs fn under the lock at key. When another replica holds it,
// fn does not run and withLock returns that replica's name. fn's context
// is canceled with ErrLeaseLost when the lock is lost; the lock is
// released when fn returns.
func (r *Runner) withLock(ctx context.Context, key, purpose string, fn func(ctx context.Context, l *lease.Lease) error) (string, error) {
	l, st, err := lease.Acquire(ctx, lease.Claim{
		Bucket: r.cfg.Bucket, Key: key, Holder: r.cfg.Holder, Length: r.cfg.Lease,
		Limit: requests.DefaultMaxControlObject,
		Encode: func(w lease.Write) []byte {
			data, _ := json.Marshal(lockBody{
				APIVersion: requests.APIVersion, Kind: "Lock", Purpose: purpose, Holder: w.Holder, Token: w.Token,
				Attempt: w.Attempt, DurationMillis: w.Length.Milliseconds(), AcquiredAt: w.AcquiredAt, RenewedAt: w.At,
				Released: w.Released,
			})
			return data
		},
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
