package bucket

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// ErrTransient is what errors.Is finds in an error that may go away when
// the call is repeated: a network error, a timeout, a 5xx answer or
// throttling, a body cut short. Backends mark their errors so once their
// own retries have given up; a caller that can wait (a client following a
// request) may try again later, with a RetryPolicy.
var ErrTransient = errors.New("transient bucket error")

// Transient marks err as transient (errors.Is ErrTransient) without
// changing its message; nil stays nil.
func Transient(err error) error {
	if err == nil || errors.Is(err, ErrTransient) {
		return err
	}
	return &transientError{err: err}
}

type transientError struct{ err error }

func (e *transientError) Error() string        { return e.err.Error() }
func (e *transientError) Unwrap() error        { return e.err }
func (e *transientError) Is(target error) bool { return target == ErrTransient }

// RetryPolicy is how capsule repeats a bucket call that failed with a
// transient error: an exponential backoff from Initial, at most Max
// between two tries, at most Retries repeats and MaxElapsed in all, and
// never past its context's end. The S3 backend repeats its calls with
// DefaultRetry, resumes a cut body with it, and the client follows a
// request through failing status reads with it.
type RetryPolicy struct {
	Initial    time.Duration
	Max        time.Duration
	MaxElapsed time.Duration
	Retries    int
}

// DefaultRetry is the policy of the workers, the CLI and the client
// library: 200ms doubling to at most 5s, 5 repeats, a minute in all.
func DefaultRetry() RetryPolicy {
	return RetryPolicy{Initial: 200 * time.Millisecond, Max: 5 * time.Second, MaxElapsed: time.Minute, Retries: 5}
}

// BackOff returns a fresh backoff.BackOff of the policy bound to ctx: it
// says backoff.Stop once the policy is spent or ctx is done.
func (p RetryPolicy) BackOff(ctx context.Context) backoff.BackOff {
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = p.Initial
	eb.MaxInterval = p.Max
	eb.MaxElapsedTime = p.MaxElapsed
	var b backoff.BackOff = eb
	if p.Retries >= 0 {
		b = backoff.WithMaxRetries(b, uint64(p.Retries))
	}
	b.Reset()
	return backoff.WithContext(b, ctx)
}

// sleep waits d, or until ctx is done: then it returns ctx's cause.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
