package pitr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/requests"
)

// Lease is what the stream needs of the lease it holds: who it is
// (the attempt, which fences its object names) and whether it still
// holds it. BucketLeaser holds it through the lease package (the claim
// protocol's rules: create-only claim, If-Match renewal, expiry by the
// bucket's clock, takeover as attempt n+1); tests may give another.
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
var ErrLeaseLost = lease.ErrLost

// LockKey is the lease of a source's stream.
func LockKey(cluster, source string) string {
	return "locks/wal/" + requests.Segment(cluster) + "/" + requests.Segment(source) + ".json"
}

// BucketLeaser takes stream leases in the bucket (lease package).
type BucketLeaser struct {
	Bucket bucket.Bucket
	Holder string
	Length time.Duration
}

type bucketLease struct {
	l        *lease.Lease
	lost     chan struct{}
	lostOnce sync.Once
	stop     context.CancelFunc
	done     chan struct{}
}

// Acquire implements Leaser. The stream's attempt counts every holder,
// hand-backs included: each has its own object names.
func (b *BucketLeaser) Acquire(ctx context.Context, key string) (Lease, error) {
	l, st, err := lease.Acquire(ctx, lease.Claim{Bucket: b.Bucket, Key: key, Holder: b.Holder, Length: b.Length,
		Limit: requests.DefaultMaxControlObject, Encode: lease.Lock("wal-stream")})
	if err != nil {
		return nil, err
	}
	if l == nil {
		holder := "another worker"
		if st != nil && st.Holder != "" {
			holder = st.Holder
		}
		return nil, fmt.Errorf("%w: %s", ErrHeld, holder)
	}
	bl := &bucketLease{l: l, lost: make(chan struct{}), done: make(chan struct{})}
	hctx, cancel := context.WithCancel(ctx)
	bl.stop = cancel
	go func() {
		defer close(bl.done)
		if err := l.Keep(hctx, lease.Keeping{}); err != nil {
			bl.markLost()
		}
	}()
	return bl, nil
}

func (b *bucketLease) markLost() { b.lostOnce.Do(func() { close(b.lost) }) }

func (b *bucketLease) Attempt() int          { return b.l.Attempt() }
func (b *bucketLease) Lost() <-chan struct{} { return b.lost }

// Fenced implements Lease: the lease was not lost and its last confirmed
// write is recent enough that nobody can have judged it expired.
func (b *bucketLease) Fenced() error {
	select {
	case <-b.lost:
		return fmt.Errorf("%w: %s", ErrLeaseLost, b.l.Key())
	default:
	}
	if !b.l.Valid() {
		return fmt.Errorf("%w: %s was not renewed in time", ErrLeaseLost, b.l.Key())
	}
	return nil
}

func (b *bucketLease) Release(ctx context.Context) error {
	b.stop()
	<-b.done
	select {
	case <-b.lost:
		return nil
	default:
	}
	b.markLost()
	err := b.l.Release(ctx, nil)
	if errors.Is(err, lease.ErrLost) {
		return nil
	}
	return err
}
