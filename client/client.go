// Package client is what a user of capsule does with a bucket: submit a
// request, read its status (pending, running with progress, or its
// result), wait for it, follow results as they appear, and ask for a
// cancel. The CLI and the HTTP API are thin layers over it.
//
// Every control object is read through a size limit
// (requests.DefaultMaxControlObject, or MaxObject): a larger request or
// result is an error wrapping a *bucket.TooLargeError, a larger lease is
// ignored like a damaged one, and none is read whole.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// Option changes how the client reads and writes control objects.
type Option func(*options)

type options struct {
	maxObject int64
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
	o := options{maxObject: requests.DefaultMaxControlObject}
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
		if data, _, err2 := bucket.GetBytesLimit(ctx, b, requests.ResultKey(id), o.maxObject); err2 == nil {
			var r requests.Result
			if err := json.Unmarshal(data, &r); err == nil {
				st.Status, st.Result = r.Status, &r
				return st, nil
			}
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
// onUpdate (if set) with each status read.
func Wait(ctx context.Context, b bucket.Reader, id string, interval time.Duration, onUpdate func(*Status), opts ...Option) (*Status, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		st, err := GetStatus(ctx, b, id, opts...)
		if err != nil {
			return nil, err
		}
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
