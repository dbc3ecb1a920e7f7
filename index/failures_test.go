package index_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// putResult writes results/<id>.json as a worker would.
func putResult(t *testing.T, b bucket.Bucket, r requests.Result) {
	t.Helper()
	if r.APIVersion == "" {
		r.APIVersion, r.Kind = requests.APIVersion, "Result"
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(context.Background(), b, requests.ResultKey(r.ID), data, bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
}

// countingReader counts the bodies read through it.
type countingReader struct {
	bucket.Reader
	gets atomic.Int64
}

func (c *countingReader) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	c.gets.Add(1)
	return c.Reader.Get(ctx, key)
}

// TestFailuresListed: failed, canceled and rejected backups are listed
// from their results, newest first, with the first line of the error;
// succeeded backups, other kinds, forged, oversized and unparsable
// results are not; a result dated ahead of the bucket's clock is listed
// at the time it was written.
func TestFailuresListed(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	backup := requests.KindBackup
	putResult(t, b, requests.Result{ID: "f-1", RequestKind: backup, Status: requests.StatusFailed, Cluster: "c", Source: "cnvrg/redis",
		Error: "backup cnvrg/redis: dial tcp 10.0.0.7:6379: connection refused\ngoroutine 1 [running]:\nmain.main()", Attempts: 3,
		StartedAt: now.Add(-3 * time.Minute), FinishedAt: now.Add(-2 * time.Minute)})
	putResult(t, b, requests.Result{ID: "f-2", RequestKind: backup, Status: requests.StatusCanceled, Cluster: "c", Source: "cnvrg/pg",
		Error: "canceled by request", FinishedAt: now.Add(-time.Minute)})
	putResult(t, b, requests.Result{ID: "f-3", RequestKind: backup, Status: requests.StatusRejected, Cluster: "c", Source: "cnvrg/es",
		Error: "source: unknown source \"cnvrg/es\"", FinishedAt: now.Add(-30 * time.Second)})
	putResult(t, b, requests.Result{ID: "f-4", RequestKind: backup, Status: requests.StatusFailed, Cluster: "other", Source: "cnvrg/pg",
		Error: strings.Repeat("é", 400), FinishedAt: now.Add(-40 * time.Second)})
	putResult(t, b, requests.Result{ID: "future-1", RequestKind: backup, Status: requests.StatusFailed, Cluster: "c", Source: "cnvrg/pg",
		Error: "dated 2099", FinishedAt: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)})
	// Not failed backups.
	putResult(t, b, requests.Result{ID: "ok-1", RequestKind: backup, Status: requests.StatusSucceeded, Cluster: "c", Source: "cnvrg/pg", FinishedAt: now})
	putResult(t, b, requests.Result{ID: "restore-1", RequestKind: requests.KindRestore, Status: requests.StatusFailed, Cluster: "c", Source: "cnvrg/pg", Error: "x", FinishedAt: now})
	putResult(t, b, requests.Result{ID: "forged-1", RequestKind: backup, Status: requests.StatusFailed, Cluster: "c", Source: "cnvrg/pg", Error: "x", FinishedAt: now})
	// forged-1's body under another key: its id is not its key's.
	data, _, err := bucket.GetBytes(ctx, b, requests.ResultKey("forged-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(ctx, b, requests.ResultKey("forged-2"), data, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, requests.ResultKey("forged-1")); err != nil {
		t.Fatal(err)
	}
	big := append([]byte(`{"apiVersion":"capsule/v1","kind":"Result","id":"big-1","requestKind":"backup","status":"failed","cluster":"c","source":"cnvrg/pg","error":"`), bytes.Repeat([]byte("x"), 4096)...)
	big = append(big, `"}`...)
	if _, err := bucket.PutBytes(ctx, b, requests.ResultKey("big-1"), big, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(ctx, b, requests.ResultKey("garbage-1"), []byte("{not json"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	got, err := index.Failures(ctx, b, index.FailureFilter{}, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, f := range got {
		ids = append(ids, f.ID)
	}
	if want := "future-1 f-3 f-4 f-2 f-1"; strings.Join(ids, " ") != want {
		t.Fatalf("failures listed: %v, want %s", ids, want)
	}
	byID := map[string]index.Failure{}
	for _, f := range got {
		byID[f.ID] = f
	}
	if f := byID["f-1"]; f.Error != "backup cnvrg/redis: dial tcp 10.0.0.7:6379: connection refused" || f.Status != requests.StatusFailed ||
		f.Cluster != "c" || f.Source != "cnvrg/redis" || f.Attempts != 3 || !f.FinishedAt.Equal(now.Add(-2*time.Minute)) {
		t.Errorf("f-1 listed as %+v", f)
	}
	if f := byID["f-4"]; len(f.Error) > index.MaxFailureError+len("…") || !strings.HasSuffix(f.Error, "…") || !strings.HasPrefix(f.Error, "éé") {
		t.Errorf("a long error is not clipped on a rune boundary: %q (%d bytes)", f.Error, len(f.Error))
	}
	if f := byID["future-1"]; f.FinishedAt.Year() == 2099 || f.FinishedAt.After(time.Now().Add(time.Minute)) {
		t.Errorf("a result dated 2099 is listed at %s, not when the bucket says it was written", f.FinishedAt)
	}

	only, err := index.Failures(ctx, b, index.FailureFilter{Cluster: "c", Source: "cnvrg/pg", Statuses: []requests.Status{requests.StatusCanceled}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(only) != 1 || only[0].ID != "f-2" {
		t.Errorf("cluster c, source cnvrg/pg, canceled: %+v, want f-2", only)
	}
}

// TestFailureWindow: only the newest Window results are read, and a
// reader reads each result once (results are written once): a second
// listing reads only the results written since.
func TestFailureWindow(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-time.Hour)
	for i, id := range []string{"w-1", "w-2", "w-3", "w-4", "w-5"} {
		putResult(t, b, requests.Result{ID: id, RequestKind: requests.KindBackup, Status: requests.StatusFailed, Cluster: "c", Source: "s",
			Error: "boom", FinishedAt: t0.Add(time.Duration(i) * time.Minute)})
	}
	cr := &countingReader{Reader: b}
	r := &index.FailureReader{Window: 3}
	got, err := r.List(ctx, cr, index.FailureFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ID != "w-5" || got[2].ID != "w-3" {
		t.Fatalf("window of 3: %+v, want w-5, w-4, w-3", got)
	}
	if n := cr.gets.Load(); n != 3 {
		t.Errorf("first listing read %d results, want 3", n)
	}
	putResult(t, b, requests.Result{ID: "w-6", RequestKind: requests.KindBackup, Status: requests.StatusFailed, Cluster: "c", Source: "s",
		Error: "boom", FinishedAt: t0.Add(10 * time.Minute)})
	cr.gets.Store(0)
	got, err = r.List(ctx, cr, index.FailureFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ID != "w-6" || got[2].ID != "w-4" {
		t.Fatalf("after one more: %+v, want w-6, w-5, w-4", got)
	}
	if n := cr.gets.Load(); n != 1 {
		t.Errorf("second listing read %d results, want only the new one", n)
	}
}
