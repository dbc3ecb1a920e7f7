package client_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/buckettest"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
)

const huge = 64 << 20

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func newBucket(t *testing.T) (bucket.Bucket, *buckettest.Counted) {
	t.Helper()
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	return b, buckettest.Count(b)
}

func putHuge(t *testing.T, b bucket.Bucket, key string) {
	t.Helper()
	if _, err := b.Put(context.Background(), key, io.LimitReader(zeros{}, huge), huge, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func putRaw(t *testing.T, b bucket.Bucket, key, body string) {
	t.Helper()
	if _, err := bucket.PutBytes(context.Background(), b, key, []byte(body), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestStatusOfOversizedObjects(t *testing.T) {
	ctx := context.Background()
	b, cb := newBucket(t)

	// A request over the limit is an error that names it; unread.
	putHuge(t, b, requests.RequestKey("huge-request"))
	_, err := client.GetStatus(ctx, cb, "huge-request")
	if !errors.Is(err, bucket.ErrTooLarge) || !strings.Contains(err.Error(), "request object requests/huge-request.json is 67108864 bytes, over the 1 MiB limit") {
		t.Errorf("status of a huge request: %v", err)
	}
	// So is a result.
	putHuge(t, b, requests.ResultKey("huge-result"))
	_, err = client.GetStatus(ctx, cb, "huge-result")
	if !errors.Is(err, bucket.ErrTooLarge) || !strings.Contains(err.Error(), "result object results/huge-result.json") {
		t.Errorf("status of a huge result: %v", err)
	}
	// A lease over the limit is ignored like a damaged one.
	if err := client.Submit(ctx, b, &requests.Request{Kind: requests.KindBackup, ID: "huge-lease", Source: "data"}); err != nil {
		t.Fatal(err)
	}
	putHuge(t, b, requests.LeaseKey("huge-lease"))
	st, err := client.GetStatus(ctx, cb, "huge-lease")
	if err != nil || st.Status != requests.StatusPending || st.Lease != nil {
		t.Errorf("status with a huge lease: %+v, %v; want pending", st, err)
	}
	// A lower limit applies to small objects too.
	if _, err := client.GetStatus(ctx, cb, "huge-lease", client.MaxObject(16)); !errors.Is(err, bucket.ErrTooLarge) {
		t.Errorf("status through a 16-byte limit: %v", err)
	}
	for _, key := range []string{requests.RequestKey("huge-request"), requests.ResultKey("huge-result"), requests.LeaseKey("huge-lease")} {
		if n := cb.Read(key); n != 0 {
			t.Errorf("%d bytes of the oversized %s were read", n, key)
		}
	}
}

func TestResultsSkipsOversizedResults(t *testing.T) {
	ctx := context.Background()
	b, cb := newBucket(t)
	putRaw(t, b, requests.ResultKey("a-good"), `{"apiVersion":"capsule/v1","kind":"Result","id":"a-good","status":"succeeded"}`)
	putHuge(t, b, requests.ResultKey("b-huge"))
	putRaw(t, b, requests.ResultKey("c-good"), `{"apiVersion":"capsule/v1","kind":"Result","id":"c-good","status":"failed"}`)
	var got []string
	err := client.Results(ctx, cb, nil, func(key string, r requests.Result) error {
		got = append(got, r.ID)
		return nil
	})
	if err != nil || strings.Join(got, ",") != "a-good,c-good" {
		t.Errorf("results %v, %v; want a-good,c-good", got, err)
	}
	if n := cb.Read(requests.ResultKey("b-huge")); n != 0 {
		t.Errorf("%d bytes of the oversized result were read", n)
	}
}

func TestSubmitRefusesARequestOverTheLimit(t *testing.T) {
	ctx := context.Background()
	b, _ := newBucket(t)
	req := &requests.Request{Kind: requests.KindRestore, ID: "big-options", BackupID: "b1", Options: map[string]string{"note": strings.Repeat("x", 70<<10)}}
	err := client.Submit(ctx, b, req, client.MaxObject(64<<10))
	if !errors.Is(err, bucket.ErrTooLarge) || !strings.Contains(err.Error(), "over the 64 KiB limit") {
		t.Fatalf("submit of a request over 64 KiB: %v", err)
	}
	if _, err := b.Head(ctx, requests.RequestKey("big-options")); !errors.Is(err, bucket.ErrNotFound) {
		t.Errorf("the refused request was written: %v", err)
	}
	// The default limit (1 MiB) takes it.
	if err := client.Submit(ctx, b, req); err != nil {
		t.Errorf("submit under the default limit: %v", err)
	}
}
