package pitr

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

// Lease is what the stream needs of the lease it holds: who it is
// (the attempt, which fences its object names) and whether it still
// holds it. The bucket-backed leaser below is the stand-in until the
// shared lease package replaces it; its rules are the claim protocol's:
// create-only claim, If-Match renewal, expiry by the bucket's clock,
// takeover as attempt n+1.
type Lease interface {
	// Attempt is this holder's attempt: 1 for the first holder, n+1 for
	// each takeover.
	Attempt() int
	// Fenced returns nil while no other worker can have taken the lease
	// over (it was renewed recently enough), and ErrLeaseLost once it
	// might have. The stream asks before every write.
	Fenced() error
	// Lost is closed when the lease is lost.
	Lost() <-chan struct{}
	// Release hands the lease back so that the next holder takes it at
	// once.
	Release(ctx context.Context) error
}

// Leaser takes leases.
type Leaser interface {
	// Acquire takes the lease at key (create-only, or a takeover of an
	// expired or released one). ErrHeld (wrapped, naming the holder)
	// when another holder has it. The lease renews itself until ctx
	// ends or it is released.
	Acquire(ctx context.Context, key string) (Lease, error)
}

// ErrHeld says another worker holds the lease.
var ErrHeld = errors.New("lease is held by another worker")

// ErrLeaseLost says the lease was taken over or not renewed in time.
var ErrLeaseLost = errors.New("stream lease lost")

// LockKey is the lease of a source's stream.
func LockKey(cluster, source string) string {
	return "locks/wal/" + requests.Segment(cluster) + "/" + requests.Segment(source) + ".json"
}

// BucketLeaser leases through conditional writes to the bucket.
type BucketLeaser struct {
	Bucket bucket.Bucket
	Holder string
	Length time.Duration
}

type lockBody struct {
	APIVersion     string    `json:"apiVersion"`
	Kind           string    `json:"kind"`
	Purpose        string    `json:"purpose"`
	Holder         string    `json:"holder"`
	Token          string    `json:"token"`
	Attempt        int       `json:"attempt"`
	DurationMillis int64     `json:"durationMillis"`
	RenewedAt      time.Time `json:"renewedAt"`
	Released       bool      `json:"released,omitempty"`
}

type bucketLease struct {
	l       *BucketLeaser
	key     string
	token   string
	attempt int
	lost    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}

	mu        sync.Mutex
	etag      string
	lastWrite time.Time
	lostOnce  sync.Once
}

// Acquire implements Leaser.
func (l *BucketLeaser) Acquire(ctx context.Context, key string) (Lease, error) {
	le := &bucketLease{l: l, key: key, token: randomHex(16), lost: make(chan struct{}), done: make(chan struct{}), attempt: 1}
	data, info, err := bucket.GetBytesLimit(ctx, l.Bucket, key, requests.DefaultMaxControlObject)
	switch {
	case errors.Is(err, bucket.ErrNotFound):
		err = le.write(ctx, bucket.PutOptions{IfNoneMatch: true}, false)
	case err != nil && !errors.Is(err, bucket.ErrTooLarge):
		return nil, fmt.Errorf("read lease %s: %w", key, err)
	default:
		var old lockBody
		parseErr := json.Unmarshal(data, &old)
		held := time.Duration(old.DurationMillis) * time.Millisecond
		if parseErr != nil || held <= 0 {
			held = l.Length
		}
		if info.ServerTime.IsZero() {
			return nil, fmt.Errorf("read lease %s: the bucket gave no server time", key)
		}
		if !old.Released && info.ServerTime.Sub(info.LastModified) <= held {
			return nil, fmt.Errorf("%w: %s", ErrHeld, old.Holder)
		}
		le.attempt = old.Attempt + 1
		err = le.write(ctx, bucket.PutOptions{IfMatch: info.ETag}, false)
	}
	if errors.Is(err, bucket.ErrPreconditionFailed) {
		return nil, fmt.Errorf("%w: another worker was faster", ErrHeld)
	}
	if err != nil {
		return nil, fmt.Errorf("take lease %s: %w", key, err)
	}
	hctx, cancel := context.WithCancel(ctx)
	le.stop = cancel
	go le.hold(hctx)
	return le, nil
}

func (le *bucketLease) write(ctx context.Context, opts bucket.PutOptions, released bool) error {
	le.mu.Lock()
	if !opts.IfNoneMatch && opts.IfMatch == "" {
		opts.IfMatch = le.etag
	}
	le.mu.Unlock()
	opts.ContentType = "application/json"
	body, _ := json.Marshal(lockBody{APIVersion: requests.APIVersion, Kind: "Lock", Purpose: "wal-stream",
		Holder: le.l.Holder, Token: le.token, Attempt: le.attempt, DurationMillis: le.l.Length.Milliseconds(),
		RenewedAt: time.Now().UTC(), Released: released})
	sent := time.Now()
	info, err := bucket.PutBytes(ctx, le.l.Bucket, le.key, body, opts)
	if err != nil {
		return err
	}
	le.mu.Lock()
	le.etag, le.lastWrite = info.ETag, sent
	le.mu.Unlock()
	return nil
}

func (le *bucketLease) markLost() { le.lostOnce.Do(func() { close(le.lost) }) }

func (le *bucketLease) hold(ctx context.Context) {
	defer close(le.done)
	t := time.NewTicker(le.l.Length / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := le.write(ctx, bucket.PutOptions{}, false)
		switch {
		case err == nil:
		case errors.Is(err, bucket.ErrPreconditionFailed):
			le.markLost()
			return
		case ctx.Err() != nil:
			return
		case le.Fenced() != nil:
			le.markLost()
			return
		}
	}
}

func (le *bucketLease) Attempt() int          { return le.attempt }
func (le *bucketLease) Lost() <-chan struct{} { return le.lost }

// Fenced implements Lease: the last renewal, counted from before it was
// sent, is younger than five sixths of the lease.
func (le *bucketLease) Fenced() error {
	select {
	case <-le.lost:
		return fmt.Errorf("%w: %s", ErrLeaseLost, le.key)
	default:
	}
	le.mu.Lock()
	defer le.mu.Unlock()
	if time.Since(le.lastWrite) >= le.l.Length*5/6 {
		return fmt.Errorf("%w: %s was not renewed in time", ErrLeaseLost, le.key)
	}
	return nil
}

func (le *bucketLease) Release(ctx context.Context) error {
	le.stop()
	<-le.done
	select {
	case <-le.lost:
		return nil
	default:
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), le.l.Length)
	defer cancel()
	err := le.write(ctx, bucket.PutOptions{}, true)
	le.markLost()
	if err != nil && !errors.Is(err, bucket.ErrPreconditionFailed) {
		return fmt.Errorf("release lease %s: %w", le.key, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
