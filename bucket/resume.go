package bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cenkalti/backoff/v4"
)

// ErrChanged is what errors.Is finds in a read that stopped because the
// object was replaced or deleted after its body was opened: a cut body is
// resumed only from the same version (the same ETag), never spliced with
// another one.
var ErrChanged = errors.New("object changed while it was read")

// Reopen opens an object's body again from byte offset to its end (a
// ranged GET, Range: bytes=offset-) only while the object is still the
// version that was first opened (If-Match on its ETag). It returns the
// version's bytes from offset on and nothing else: a store that would
// send other bytes (another version, another range) is an error. When
// the object is another version or gone: an error wrapping
// ErrPreconditionFailed or ErrNotFound; a failure worth trying again:
// one wrapping ErrTransient.
type Reopen func(ctx context.Context, offset int64) (io.ReadCloser, error)

// ResumeOptions tune ResumableBody.
type ResumeOptions struct {
	// Policy paces resumes that bring no byte; DefaultRetry() when zero.
	Policy RetryPolicy
	// OnResume, if set, is told of every resume: the offset it reopened
	// at, the how-manieth resume in a row without a byte in between it
	// is (1 after progress), and the read error it resumes from. A
	// backend logs or counts resumes there.
	OnResume func(offset int64, tries int, cause error)
}

// ResumableBody makes the body of a Get survive a cut: when a read fails
// before info.Size bytes came (a connection reset, an unexpected EOF,
// any read error but its context's end) it reopens the object with
// reopen from the byte reached and reads on, so the caller sees one
// continuous stream of the version whose ETag info carries: every byte
// once, in order. The first resume after progress is immediate; resumes
// that bring no byte are paced and bounded by opts.Policy, after which
// the read fails with the last error (errors.Is ErrTransient). A resume
// that finds the object replaced or gone fails the read with ErrChanged,
// naming the object and how far it was read.
//
// Any backend with a ranged, conditional GET uses it in its Get. Without
// an ETag or a known size (info.Size > 0) nothing can be resumed safely,
// and body is returned as it is.
func ResumableBody(ctx context.Context, body io.ReadCloser, info ObjectInfo, reopen Reopen, opts ResumeOptions) io.ReadCloser {
	if info.ETag == "" || info.Size <= 0 || reopen == nil {
		return body
	}
	if opts.Policy == (RetryPolicy{}) {
		opts.Policy = DefaultRetry()
	}
	return &resumable{ctx: ctx, info: info, reopen: reopen, opts: opts, body: body}
}

type resumable struct {
	ctx    context.Context
	info   ObjectInfo
	reopen Reopen
	opts   ResumeOptions

	// off is the bytes delivered so far.
	off int64
	// bo paces resumes since the last byte; nil after progress.
	bo    backoff.BackOff
	tries int
	err   error

	// mu guards body and closed: Close may come from another goroutine
	// while a Read waits on the network (and unblocks it).
	mu     sync.Mutex
	body   io.ReadCloser
	closed bool
}

func (r *resumable) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		r.mu.Lock()
		body, closed := r.body, r.closed
		r.mu.Unlock()
		if closed {
			r.err = fmt.Errorf("read %s: body closed", r.info.Key)
			return 0, r.err
		}
		n, err := body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.bo, r.tries = nil, 0
		}
		switch {
		case r.off > r.info.Size:
			r.err = fmt.Errorf("read %s: the store sent more than the object's %d bytes", r.info.Key, r.info.Size)
			return n - int(r.off-r.info.Size), r.err
		case err == nil:
			return n, nil
		case err == io.EOF && r.off == r.info.Size:
			return n, io.EOF
		case err == io.EOF:
			err = io.ErrUnexpectedEOF // the body ended before its size
		}
		if r.off == r.info.Size || r.ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			// All bytes came (an error after them is not a cut), or
			// the caller gave up.
			r.err = err
			return n, err
		}
		if rerr := r.resume(err); rerr != nil {
			r.err = rerr
			return n, rerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// resume reopens the object at r.off after cause broke the body.
func (r *resumable) resume(cause error) error {
	r.mu.Lock()
	old := r.body
	r.mu.Unlock()
	old.Close()
	for {
		if r.bo == nil {
			r.bo = r.opts.Policy.BackOff(r.ctx)
		} else {
			d := r.bo.NextBackOff()
			if d == backoff.Stop {
				if err := r.ctx.Err(); err != nil {
					return fmt.Errorf("read %s: %w", r.info.Key, context.Cause(r.ctx))
				}
				return fmt.Errorf("read %s: gave up at byte %d of %d after %d resumes in a row brought no byte: %w",
					r.info.Key, r.off, r.info.Size, r.tries, Transient(cause))
			}
			if err := sleep(r.ctx, d); err != nil {
				return fmt.Errorf("read %s: %w", r.info.Key, err)
			}
		}
		r.tries++
		body, err := r.reopen(r.ctx, r.off)
		switch {
		case err == nil:
			r.mu.Lock()
			closed := r.closed
			if !closed {
				r.body = body
			}
			r.mu.Unlock()
			if closed {
				body.Close()
				return fmt.Errorf("read %s: body closed", r.info.Key)
			}
			if r.opts.OnResume != nil {
				r.opts.OnResume(r.off, r.tries, cause)
			}
			return nil
		case errors.Is(err, ErrPreconditionFailed) || errors.Is(err, ErrNotFound):
			return fmt.Errorf("read %s: %w: replaced or deleted after %d of its %d bytes were read (ETag %s); not resumed from another version: %v",
				r.info.Key, ErrChanged, r.off, r.info.Size, r.info.ETag, err)
		case errors.Is(err, ErrTransient) && r.ctx.Err() == nil:
			cause = err
		default:
			return fmt.Errorf("read %s: resume at byte %d of %d: %w", r.info.Key, r.off, r.info.Size, err)
		}
	}
}

func (r *resumable) Close() error {
	r.mu.Lock()
	body := r.body
	already := r.closed
	r.closed = true
	r.mu.Unlock()
	if already {
		return nil
	}
	return body.Close()
}
