// Package client is what a user of capsule does with a bucket: submit a
// request, read its status (pending, running with progress, or its
// result), wait for it, follow results as they appear, and ask for a
// cancel. The CLI and the HTTP API are thin layers over it.
//
// Every control object is read through a size limit
// (requests.DefaultMaxControlObject, or MaxObject): a larger request or
// result is an error wrapping a *bucket.TooLargeError, a larger lease is
// ignored like a damaged one, and none is read whole.
//
// A request that waits for a worker can be explained (Explain): how long
// it has waited by the bucket's clock, and which workers left traces in
// the bucket in the last hour: holders of live leases and the workers
// named by the newest results. Workers write no heartbeat object; their
// leases and results already name them.
//
// Following a request (Wait, FollowResults, Retrying) rides out the
// bucket's transient failures as the workers do: a read that fails with
// an error worth repeating (bucket.ErrTransient, or bucket.ErrChanged: an
// object rewritten while it was read) is tried again with the backoff of
// bucket.DefaultRetry (or RetryPolicy), each failure reported to OnRetry,
// until one succeeds or the policy is spent: then the follow ends with a
// *GaveUpError naming the last error. Any other error (no such request,
// access denied, an object over the size limit) ends it at once.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// Option changes how the client reads and writes control objects.
type Option func(*options)

type options struct {
	maxObject int64
	retry     bucket.RetryPolicy
	onRetry   func(err error, wait time.Duration)
}

// RetryPolicy sets how Wait, FollowResults and Retrying repeat reads
// that failed with a transient error, instead of bucket.DefaultRetry.
func RetryPolicy(p bucket.RetryPolicy) Option {
	return func(o *options) { o.retry = p }
}

// OnRetry has fn told of every failed read that will be tried again,
// and how long until then: a CLI prints it, a service logs it.
func OnRetry(fn func(err error, wait time.Duration)) Option {
	return func(o *options) { o.onRetry = fn }
}

// MaxObject sets the size limit of control objects, written and read,
// to n bytes instead of requests.DefaultMaxControlObject: the workers'
// worker.maxControlObject. n <= 0 keeps the default.
func MaxObject(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxObject = n
		}
	}
}

func apply(opts []Option) options {
	o := options{maxObject: requests.DefaultMaxControlObject, retry: bucket.DefaultRetry()}
	for _, fn := range opts {
		fn(&o)
	}
	return o
}

// Submit validates req, fills in its apiVersion, id and creation time when
// empty, and writes it create-only. An existing request or result with
// the same id is an error: ids are never reused. A request larger than
// the control-object limit is refused: a worker would reject it.
func Submit(ctx context.Context, b bucket.Bucket, req *requests.Request, opts ...Option) error {
	o := apply(opts)
	if req.APIVersion == "" {
		req.APIVersion = requests.APIVersion
	}
	if req.ID == "" {
		req.ID = requests.NewID()
	}
	if req.CreatedAt.IsZero() {
		req.CreatedAt = time.Now().UTC()
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if _, err := b.Head(ctx, requests.ResultKey(req.ID)); err == nil {
		return fmt.Errorf("request %s already ran: %w", req.ID, bucket.ErrPreconditionFailed)
	} else if !errors.Is(err, bucket.ErrNotFound) {
		return err
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if int64(len(data)) > o.maxObject {
		tl := &bucket.TooLargeError{Key: requests.RequestKey(req.ID), Size: int64(len(data)), Limit: o.maxObject}
		return fmt.Errorf("submit %s: the request object %w of control objects (worker.maxControlObject)", req.ID, tl)
	}
	if _, err := bucket.PutBytes(ctx, b, requests.RequestKey(req.ID), data, bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json"}); err != nil {
		if errors.Is(err, bucket.ErrPreconditionFailed) {
			return fmt.Errorf("request %s already exists: %w", req.ID, bucket.ErrPreconditionFailed)
		}
		return fmt.Errorf("submit %s: %w", req.ID, err)
	}
	return nil
}

// Status is where a request stands.
type Status struct {
	ID     string          `json:"id"`
	Status requests.Status `json:"status"`
	// Request is set while it is pending or running.
	Request *requests.Request `json:"request,omitempty"`
	// Lease is set while it runs (holder, attempt, progress).
	Lease *requests.Lease `json:"lease,omitempty"`
	// Result is set once it ended.
	Result *requests.Result `json:"result,omitempty"`
	// CancelRequested is set when a cancel object waits for the worker.
	CancelRequested bool `json:"cancelRequested,omitempty"`
}

// ErrUnknownRequest means no request, lease or result has the id.
var ErrUnknownRequest = errors.New("no such request")

// GetStatus reads a request's status: its result if it ended, else its
// lease if a worker runs it, else pending. A request or result object
// over the size limit is an error (errors.Is bucket.ErrTooLarge); a lease
// over it is ignored, like a damaged one.
func GetStatus(ctx context.Context, b bucket.Reader, id string, opts ...Option) (*Status, error) {
	if err := requests.ValidateID(id); err != nil {
		return nil, fmt.Errorf("request id: %w", err)
	}
	o := apply(opts)
	st := &Status{ID: id}
	if data, _, err := bucket.GetBytesLimit(ctx, b, requests.ResultKey(id), o.maxObject); err == nil {
		var r requests.Result
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("result %s: %w", id, err)
		}
		st.Status, st.Result = r.Status, &r
		return st, nil
	} else if !errors.Is(err, bucket.ErrNotFound) {
		return nil, objectErr("result", err)
	}
	data, _, err := bucket.GetBytesLimit(ctx, b, requests.RequestKey(id), o.maxObject)
	if errors.Is(err, bucket.ErrNotFound) {
		// It may have finished between the two reads.
		data, _, err2 := bucket.GetBytesLimit(ctx, b, requests.ResultKey(id), o.maxObject)
		if err2 == nil {
			var r requests.Result
			if err := json.Unmarshal(data, &r); err == nil {
				st.Status, st.Result = r.Status, &r
				return st, nil
			}
		} else if !errors.Is(err2, bucket.ErrNotFound) {
			// Not knowing is not "no such request".
			return nil, objectErr("result", err2)
		}
		return nil, fmt.Errorf("%w: %s", ErrUnknownRequest, id)
	}
	if err != nil {
		return nil, objectErr("request", err)
	}
	var req requests.Request
	_ = json.Unmarshal(data, &req) // a malformed request is still pending until a worker rejects it
	st.Request, st.Status = &req, requests.StatusPending
	if data, _, err := bucket.GetBytesLimit(ctx, b, requests.LeaseKey(id), o.maxObject); err == nil {
		var l requests.Lease
		if json.Unmarshal(data, &l) == nil && !l.Released {
			st.Lease, st.Status = &l, requests.StatusRunning
		}
	}
	if _, err := b.Head(ctx, requests.CancelKey(id)); err == nil {
		st.CancelRequested = true
	}
	return st, nil
}

// objectErr names which control object could not be read when it was
// refused by the size limit; other errors pass as they are.
func objectErr(what string, err error) error {
	if errors.Is(err, bucket.ErrTooLarge) {
		return fmt.Errorf("%s object %w", what, err)
	}
	return err
}

// Wait polls a request's status every interval until it ends, calling
// onUpdate (if set) with each status read. A read that fails with an
// error worth repeating is tried again with the retry policy's backoff
// (see the package doc); when the policy is spent, or ctx ends during
// such failures, Wait returns a *GaveUpError naming the last error.
func Wait(ctx context.Context, b bucket.Reader, id string, interval time.Duration, onUpdate func(*Status), opts ...Option) (*Status, error) {
	o := apply(opts)
	r := newRetrier(ctx, "reading the status of "+id, o)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		st, err := GetStatus(ctx, b, id, opts...)
		if err != nil {
			if werr := r.failed(err); werr != nil {
				return nil, werr
			}
			continue
		}
		r.ok()
		if onUpdate != nil {
			onUpdate(st)
		}
		if st.Status.Ended() {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-t.C:
		}
	}
}

// Retrying calls fn until it succeeds or fails with an error not worth
// repeating, trying again after errors worth repeating with the retry
// policy's backoff; when the policy is spent, or ctx ends during such
// failures, it returns a *GaveUpError on what (e.g. "reading the status
// of <id>") naming the last error.
func Retrying(ctx context.Context, what string, fn func(ctx context.Context) error, opts ...Option) error {
	r := newRetrier(ctx, what, apply(opts))
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if werr := r.failed(err); werr != nil {
			return werr
		}
	}
}

// Retryable says whether a read that failed with err is worth repeating:
// the bucket's transient failures, and an object that changed while it
// was read (the next read gets its new version).
func Retryable(err error) bool {
	return errors.Is(err, bucket.ErrTransient) || errors.Is(err, bucket.ErrChanged)
}

// GaveUpError is a follow that stopped because reading the bucket kept
// failing with errors worth repeating: until the retry policy was spent,
// or until its context ended (Stopped: the deadline of a --timeout, say).
// Err is the last error.
type GaveUpError struct {
	// What was being done, e.g. "reading the status of <id>".
	What    string
	Tries   int
	Elapsed time.Duration
	Err     error
	Stopped error
}

func (e *GaveUpError) Error() string {
	why := "retries spent"
	if e.Stopped != nil {
		why = e.Stopped.Error()
	}
	return fmt.Sprintf("gave up %s after %d failed tries in %s (%s); the last error: %v",
		e.What, e.Tries, e.Elapsed.Round(time.Millisecond), why, e.Err)
}

// Unwrap gives the last error and, when the context ended, its cause.
func (e *GaveUpError) Unwrap() []error {
	if e.Stopped != nil {
		return []error{e.Err, e.Stopped}
	}
	return []error{e.Err}
}

// retrier paces a loop's failed reads with the retry policy: each run of
// failures in a row gets the policy afresh.
type retrier struct {
	ctx   context.Context
	what  string
	o     options
	bo    backoff.BackOff
	tries int
	start time.Time
	last  error
}

func newRetrier(ctx context.Context, what string, o options) *retrier {
	return &retrier{ctx: ctx, what: what, o: o}
}

// ok ends a run of failures.
func (r *retrier) ok() { r.bo, r.tries, r.last = nil, 0, nil }

// failed takes a failed read: it returns err when it is not worth
// repeating, a *GaveUpError when the policy is spent or the context
// ends during a run of failures, else nil after waiting for the next
// try.
func (r *retrier) failed(err error) error {
	if r.tries > 0 && r.ctx.Err() != nil {
		return r.gaveUp()
	}
	if !Retryable(err) || r.ctx.Err() != nil {
		return err
	}
	if r.bo == nil {
		r.bo, r.start = r.o.retry.BackOff(r.ctx), time.Now()
	}
	r.tries++
	r.last = err
	wait := r.bo.NextBackOff()
	if wait == backoff.Stop {
		return r.gaveUp()
	}
	if r.o.onRetry != nil {
		r.o.onRetry(err, wait)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.ctx.Done():
		return r.gaveUp()
	}
}

func (r *retrier) gaveUp() error {
	e := &GaveUpError{What: r.what, Tries: r.tries, Elapsed: time.Since(r.start), Err: r.last}
	if r.ctx.Err() != nil {
		e.Stopped = context.Cause(r.ctx)
	}
	return e
}

// Cancel asks the worker running id to stop it. A request that already
// ended cannot be canceled.
func Cancel(ctx context.Context, b bucket.Bucket, id, reason string, opts ...Option) error {
	st, err := GetStatus(ctx, b, id, opts...)
	if err != nil {
		return err
	}
	if st.Status.Ended() {
		return fmt.Errorf("request %s already ended %s", id, st.Status)
	}
	c := requests.Cancel{APIVersion: requests.APIVersion, Kind: "Cancel", ID: id, Reason: reason, RequestedAt: time.Now().UTC()}
	data, _ := json.Marshal(c)
	_, err = bucket.PutBytes(ctx, b, requests.CancelKey(id), data, bucket.PutOptions{ContentType: "application/json"})
	return err
}

// Results calls fn, in key order, for each result whose key seen does
// not report as already seen (nil: every result), and marks nothing
// itself: the caller keeps the set, so a follower catches results of
// older ids that finish late. A result that is not valid JSON, or over
// the size limit, is skipped.
func Results(ctx context.Context, b bucket.Reader, seen func(key string) bool, fn func(key string, r requests.Result) error, opts ...Option) error {
	o := apply(opts)
	return bucket.Walk(ctx, b, requests.ResultsPrefix, func(obj bucket.ObjectInfo) error {
		if seen != nil && seen(obj.Key) {
			return nil
		}
		data, _, err := bucket.GetBytesLimit(ctx, b, obj.Key, o.maxObject)
		if errors.Is(err, bucket.ErrNotFound) || errors.Is(err, bucket.ErrTooLarge) {
			return nil
		}
		if err != nil {
			return err
		}
		var r requests.Result
		if json.Unmarshal(data, &r) != nil {
			return nil
		}
		return fn(obj.Key, r)
	})
}

// FollowResults calls Results every interval until ctx ends (then it
// returns ctx's error) or fn fails. A pass that fails with an error
// worth repeating is tried again with the retry policy's backoff; when
// the policy is spent it returns a *GaveUpError naming the last error.
// The caller's seen keeps a result from being given twice across passes.
func FollowResults(ctx context.Context, b bucket.Reader, interval time.Duration, seen func(key string) bool, fn func(key string, r requests.Result) error, opts ...Option) error {
	r := newRetrier(ctx, "listing results", apply(opts))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := Results(ctx, b, seen, fn, opts...); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if werr := r.failed(err); werr != nil {
				return werr
			}
			continue
		}
		r.ok()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
