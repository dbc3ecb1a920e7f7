// Package client is what a user of capsule does with a bucket: submit a
// request, read its status (pending, running with progress, or its
// result), wait for it, follow results as they appear, and ask for a
// cancel. The CLI and the HTTP API are thin layers over it.
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

// Submit validates req, fills in its apiVersion, id and creation time when
// empty, and writes it create-only. An existing request or result with
// the same id is an error: ids are never reused.
func Submit(ctx context.Context, b bucket.Bucket, req *requests.Request) error {
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
// lease if a worker runs it, else pending.
func GetStatus(ctx context.Context, b bucket.Reader, id string) (*Status, error) {
	if err := requests.ValidateID(id); err != nil {
		return nil, fmt.Errorf("request id: %w", err)
	}
	st := &Status{ID: id}
	if data, _, err := bucket.GetBytes(ctx, b, requests.ResultKey(id)); err == nil {
		var r requests.Result
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("result %s: %w", id, err)
		}
		st.Status, st.Result = r.Status, &r
		return st, nil
	} else if !errors.Is(err, bucket.ErrNotFound) {
		return nil, err
	}
	data, _, err := bucket.GetBytes(ctx, b, requests.RequestKey(id))
	if errors.Is(err, bucket.ErrNotFound) {
		// It may have finished between the two reads.
		if data, _, err2 := bucket.GetBytes(ctx, b, requests.ResultKey(id)); err2 == nil {
			var r requests.Result
			if err := json.Unmarshal(data, &r); err == nil {
				st.Status, st.Result = r.Status, &r
				return st, nil
			}
		}
		return nil, fmt.Errorf("%w: %s", ErrUnknownRequest, id)
	}
	if err != nil {
		return nil, err
	}
	var req requests.Request
	_ = json.Unmarshal(data, &req) // a malformed request is still pending until a worker rejects it
	st.Request, st.Status = &req, requests.StatusPending
	if data, _, err := bucket.GetBytes(ctx, b, requests.LeaseKey(id)); err == nil {
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

// Wait polls a request's status every interval until it ends, calling
// onUpdate (if set) with each status read.
func Wait(ctx context.Context, b bucket.Reader, id string, interval time.Duration, onUpdate func(*Status)) (*Status, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		st, err := GetStatus(ctx, b, id)
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
func Cancel(ctx context.Context, b bucket.Bucket, id, reason string) error {
	st, err := GetStatus(ctx, b, id)
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
// older ids that finish late.
func Results(ctx context.Context, b bucket.Reader, seen func(key string) bool, fn func(key string, r requests.Result) error) error {
	return bucket.Walk(ctx, b, requests.ResultsPrefix, func(o bucket.ObjectInfo) error {
		if seen != nil && seen(o.Key) {
			return nil
		}
		data, _, err := bucket.GetBytes(ctx, b, o.Key)
		if errors.Is(err, bucket.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var r requests.Result
		if json.Unmarshal(data, &r) != nil {
			return nil
		}
		return fn(o.Key, r)
	})
}
