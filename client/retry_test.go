package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
)

// flaky is a fault injector in front of a real bucket: Get of a key fails
// with what fail returns for the n-th Get of that key (nil: the real
// Get). The CLI's test (cmd/capsule) runs the same loop against versitygw
// behind a fault proxy; this one makes the failures exact.
type flaky struct {
	bucket.Bucket
	fail func(key string, n int) error

	mu   sync.Mutex
	gets map[string]int
}

func (f *flaky) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	f.mu.Lock()
	if f.gets == nil {
		f.gets = map[string]int{}
	}
	f.gets[key]++
	n := f.gets[key]
	f.mu.Unlock()
	if err := f.fail(key, n); err != nil {
		return nil, bucket.ObjectInfo{}, err
	}
	return f.Bucket.Get(ctx, key)
}

// reset is what a backend gives up with after its own retries.
func reset(key string) error {
	return bucket.Transient(fmt.Errorf("get %s: read tcp 127.0.0.1:1->127.0.0.1:2: %w", key, syscall.ECONNRESET))
}

func fast() client.Option {
	return client.RetryPolicy(bucket.RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxElapsed: time.Minute, Retries: 5})
}

// ended writes a request and its succeeded result.
func ended(t *testing.T, b bucket.Bucket, id string) {
	t.Helper()
	req := &requests.Request{Kind: requests.KindBackup, ID: id, Source: "data"}
	if err := client.Submit(context.Background(), b, req); err != nil {
		t.Fatal(err)
	}
	res := requests.Result{APIVersion: requests.APIVersion, Kind: "Result", ID: id, RequestKind: requests.KindBackup, Status: requests.StatusSucceeded, Attempts: 1}
	data, _ := json.Marshal(res)
	putRaw(t, b, requests.ResultKey(id), string(data))
}

// TestWaitRidesOutTransientErrors: the first three reads of the result
// fail as a connection reset would after the backend's retries, and one
// read finds the object rewritten under it. Wait reports each failure,
// keeps following and returns the result.
func TestWaitRidesOutTransientErrors(t *testing.T) {
	b, _ := newBucket(t)
	ended(t, b, "r1")
	fb := &flaky{Bucket: b, fail: func(key string, n int) error {
		switch {
		case key != requests.ResultKey("r1"):
			return nil
		case n <= 3:
			return reset(key)
		case n == 4:
			return fmt.Errorf("read %s: %w: replaced after 10 of its 400 bytes were read", key, bucket.ErrChanged)
		}
		return nil
	}}
	var retried []error
	st, err := client.Wait(t.Context(), fb, "r1", time.Millisecond, nil, fast(),
		client.OnRetry(func(err error, wait time.Duration) { retried = append(retried, err) }))
	if err != nil || st.Status != requests.StatusSucceeded {
		t.Fatalf("wait: %+v, %v; want the succeeded result", st, err)
	}
	if len(retried) != 4 || !errors.Is(retried[0], syscall.ECONNRESET) || !errors.Is(retried[3], bucket.ErrChanged) {
		t.Fatalf("retries reported: %v; want the three resets and the change", retried)
	}
}

// TestWaitGivesUpNamingTheError: reads keep failing. Wait gives up when
// the policy is spent, says how often it tried, and names the last
// error, which stays in the chain.
func TestWaitGivesUpNamingTheError(t *testing.T) {
	b, _ := newBucket(t)
	ended(t, b, "r1")
	fb := &flaky{Bucket: b, fail: func(key string, _ int) error { return reset(key) }}
	_, err := client.Wait(t.Context(), fb, "r1", time.Millisecond, nil, fast())
	var gu *client.GaveUpError
	if !errors.As(err, &gu) || gu.Tries != 6 || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("wait: %v; want a *GaveUpError after 6 tries wrapping the reset", err)
	}
	for _, want := range []string{"gave up reading the status of r1 after 6 failed tries", "retries spent", "get " + requests.ResultKey("r1"), "connection reset"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestWaitGivesUpAtItsDeadline: the caller's timeout ends a run of
// failures; the error says so and still names the last failure.
func TestWaitGivesUpAtItsDeadline(t *testing.T) {
	b, _ := newBucket(t)
	ended(t, b, "r1")
	fb := &flaky{Bucket: b, fail: func(key string, _ int) error { return reset(key) }}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	slow := client.RetryPolicy(bucket.RetryPolicy{Initial: time.Hour, Max: time.Hour, MaxElapsed: 10 * time.Hour, Retries: 5})
	_, err := client.Wait(ctx, fb, "r1", time.Millisecond, nil, slow)
	var gu *client.GaveUpError
	if !errors.As(err, &gu) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("wait: %v; want a *GaveUpError at the deadline naming the reset", err)
	}
}

// TestWaitFailsFastOnPermanentErrors: no such request, or an error that
// repeating does not cure, ends the wait at once, without a retry.
func TestWaitFailsFastOnPermanentErrors(t *testing.T) {
	b, _ := newBucket(t)
	ended(t, b, "r1")
	denied := errors.New("get capsule/results/r1.json: api error AccessDenied: Access Denied")
	fb := &flaky{Bucket: b, fail: func(key string, _ int) error {
		if key == requests.ResultKey("r1") {
			return denied
		}
		return nil
	}}
	retries := 0
	onRetry := client.OnRetry(func(error, time.Duration) { retries++ })
	if _, err := client.Wait(t.Context(), fb, "nope", time.Millisecond, nil, fast(), onRetry); !errors.Is(err, client.ErrUnknownRequest) {
		t.Errorf("wait for an unknown request: %v, want ErrUnknownRequest", err)
	}
	if _, err := client.Wait(t.Context(), fb, "r1", time.Millisecond, nil, fast(), onRetry); !errors.Is(err, denied) {
		t.Errorf("wait with access denied: %v, want it as it is", err)
	}
	if retries != 0 {
		t.Errorf("%d retries of permanent errors", retries)
	}
}

// TestStatusDoesNotMistakeAFailedReadForNoRequest: the request object is
// gone (the request finished) and the second read of its result fails.
// That is not "no such request": the failure is returned, and a retry
// finds the result.
func TestStatusDoesNotMistakeAFailedReadForNoRequest(t *testing.T) {
	b, _ := newBucket(t)
	ended(t, b, "r1")
	if err := b.Delete(t.Context(), requests.RequestKey("r1")); err != nil {
		t.Fatal(err)
	}
	fb := &flaky{Bucket: b, fail: func(key string, n int) error {
		switch {
		case key == requests.ResultKey("r1") && n == 1:
			return fmt.Errorf("get %s: %w", key, bucket.ErrNotFound) // not there yet
		case key == requests.ResultKey("r1") && n == 2:
			return reset(key)
		}
		return nil
	}}
	_, err := client.GetStatus(t.Context(), fb, "r1")
	if errors.Is(err, client.ErrUnknownRequest) || !errors.Is(err, bucket.ErrTransient) {
		t.Fatalf("status: %v; want the transient failure, not ErrUnknownRequest", err)
	}
	st, err := client.Wait(t.Context(), fb, "r1", time.Millisecond, nil, fast())
	if err != nil || st.Status != requests.StatusSucceeded {
		t.Fatalf("wait: %+v %v", st, err)
	}
}

// TestFollowResultsRidesOutTransientErrors: a pass over results/ that
// fails is tried again, and every result is given once.
func TestFollowResultsRidesOutTransientErrors(t *testing.T) {
	b, _ := newBucket(t)
	ended(t, b, "r1")
	ended(t, b, "r2")
	fb := &flaky{Bucket: b, fail: func(key string, n int) error {
		if key == requests.ResultKey("r2") && n <= 2 {
			return reset(key)
		}
		return nil
	}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	seen := map[string]bool{}
	var got []string
	err := client.FollowResults(ctx, fb, time.Millisecond, func(k string) bool { return seen[k] }, func(k string, r requests.Result) error {
		seen[k] = true
		got = append(got, r.ID)
		if len(got) == 2 {
			cancel()
		}
		return nil
	}, fast())
	if !errors.Is(err, context.Canceled) || strings.Join(got, ",") != "r1,r2" {
		t.Fatalf("follow: %v, results %v; want r1,r2 once each, then the cancel", err, got)
	}
}
