package retention

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
var ErrLeaseLost = errors.New("retention lease lost")

// LockKey returns the key of a policy's lease:
// locks/retention/<cluster>/<source>/<plan>.json, each name one segment.
func LockKey(p Policy) string {
	plan := p.Plan
	if plan == "" {
		plan = manualPlan
	}
	return LocksPrefix + "retention/" + requests.Segment(p.Cluster) + "/" + requests.Segment(p.Source) + "/" + requests.Segment(plan) + ".json"
}

// leaseBody is a lock object. Every write differs (token, times), so every
// write has a new ETag.
type leaseBody struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"` // "Lock"
	Purpose    string `json:"purpose"`
	Holder     string `json:"holder"`
	Token      string `json:"token"`
	// DurationMillis is the lease's length, judged by the bucket's clock.
	DurationMillis int64     `json:"durationMillis"`
	AcquiredAt     time.Time `json:"acquiredAt"`
	RenewedAt      time.Time `json:"renewedAt"`
	Released       bool      `json:"released,omitempty"`
}

// lease is a held lock object.
type lease struct {
	b       bucket.Bucket
	key     string
	purpose string
	holder  string
	length  time.Duration
	token   string
	taken   time.Time

	mu        sync.Mutex
	etag      string
	lastWrite time.Time // local (monotonic) time of the last confirmed write
	server    time.Time // the bucket's clock at lastWrite
}

// acquire takes the lock at key: creates it, or takes over one that is
// released or expired. When another holder has it, it returns a nil lease
// and that holder's name.
func acquire(ctx context.Context, b bucket.Bucket, key, purpose, holder string, length time.Duration) (*lease, string, error) {
	l := &lease{b: b, key: key, purpose: purpose, holder: holder, length: length, token: randomHex(16), taken: time.Now().UTC()}
	data, info, err := bucket.GetBytesLimit(ctx, b, key, requests.DefaultMaxControlObject)
	if errors.Is(err, bucket.ErrTooLarge) {
		data, err = nil, nil // damaged: it expires by our rules
	}
	switch {
	case errors.Is(err, bucket.ErrNotFound):
		err = l.write(ctx, bucket.PutOptions{IfNoneMatch: true}, false)
	case err != nil:
		return nil, "", fmt.Errorf("read lock %s: %w", key, err)
	default:
		var old leaseBody
		parseErr := json.Unmarshal(data, &old)
		held := time.Duration(old.DurationMillis) * time.Millisecond
		if parseErr != nil || held <= 0 {
			held = length // a damaged lock expires by our rules
		}
		if info.ServerTime.IsZero() {
			return nil, "", fmt.Errorf("read lock %s: the bucket gave no server time", key)
		}
		if !old.Released && info.ServerTime.Sub(info.LastModified) <= held {
			if old.Holder == "" {
				return nil, "another replica (the lock object is damaged)", nil
			}
			return nil, old.Holder, nil
		}
		err = l.write(ctx, bucket.PutOptions{IfMatch: info.ETag}, false)
	}
	if errors.Is(err, bucket.ErrPreconditionFailed) {
		// Another replica was faster; name it if we can.
		return nil, holderOf(ctx, b, key), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("take lock %s: %w", key, err)
	}
	return l, "", nil
}

func holderOf(ctx context.Context, b bucket.Bucket, key string) string {
	data, _, err := bucket.GetBytesLimit(ctx, b, key, requests.DefaultMaxControlObject)
	var body leaseBody
	if err != nil || json.Unmarshal(data, &body) != nil || body.Holder == "" {
		return "another replica"
	}
	return body.Holder
}

// write puts the lock with the given condition (the caller's) or, when
// opts has none, with If-Match on the last write's ETag.
// Writes are never concurrent (renewals stop before the release); the
// mutex guards the fields that readers use meanwhile.
func (l *lease) write(ctx context.Context, opts bucket.PutOptions, released bool) error {
	l.mu.Lock()
	if !opts.IfNoneMatch && opts.IfMatch == "" {
		opts.IfMatch = l.etag
	}
	l.mu.Unlock()
	opts.ContentType = "application/json"
	body, err := json.Marshal(leaseBody{
		APIVersion: requests.APIVersion, Kind: "Lock", Purpose: l.purpose, Holder: l.holder,
		Token: l.token, DurationMillis: l.length.Milliseconds(), AcquiredAt: l.taken,
		RenewedAt: time.Now().UTC(), Released: released,
	})
	if err != nil {
		return err
	}
	info, err := bucket.PutBytes(ctx, l.b, l.key, body, opts)
	if err != nil {
		return err
	}
	if info.ServerTime.IsZero() {
		info.ServerTime = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.etag, l.lastWrite, l.server = info.ETag, time.Now(), info.ServerTime
	return nil
}

// valid says whether the lease is surely still ours: its last write is
// recent enough that no other replica can judge it expired yet.
func (l *lease) valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.lastWrite) < l.length*5/6
}

// now is the bucket's clock: its time at the last write plus the time
// passed here since.
func (l *lease) now() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.server.Add(time.Since(l.lastWrite))
}

// hold renews the lease every third of its length until ctx ends, and
// cancels with ErrLeaseLost when it is taken over or cannot be renewed
// before another replica might judge it expired.
func (l *lease) hold(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(l.length / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := l.write(ctx, bucket.PutOptions{}, false)
		switch {
		case err == nil:
		case errors.Is(err, bucket.ErrPreconditionFailed):
			cancel(fmt.Errorf("%w: %s was taken over", ErrLeaseLost, l.key))
			return
		case ctx.Err() != nil:
			return
		case !l.valid():
			cancel(fmt.Errorf("%w: could not renew %s: %w", ErrLeaseLost, l.key, err))
			return
		}
	}
}

// release marks the lease released so that the next run takes it at once.
// A lease that was lost meanwhile is left to its new holder.
func (l *lease) release(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.length)
	defer cancel()
	err := l.write(ctx, bucket.PutOptions{}, true)
	if err != nil && !errors.Is(err, bucket.ErrPreconditionFailed) {
		return fmt.Errorf("release lock %s: %w", l.key, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
