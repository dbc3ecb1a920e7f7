package api_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/buckettest"
	"github.com/cnvrg/capsule/requests"
)

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// putHuge writes n zero bytes at key as a stream.
func putHuge(t *testing.T, b bucket.Bucket, key string, n int64) {
	t.Helper()
	if _, err := b.Put(context.Background(), key, io.LimitReader(zeros{}, n), n, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// GET /v1/requests/{id} reads control objects through the size limit: a
// huge request or result is a JSON 500 object_too_large naming the object
// and the limit, answered without reading it; a huge lease is ignored.
func TestHugeObjectsInRequestStatus(t *testing.T) {
	b := fsBucket(t)
	cb := buckettest.Count(b)
	h := newHarness(t, cb, nil)
	const huge = 64 << 20
	putHuge(t, b, requests.RequestKey("huge-request"), huge)
	putHuge(t, b, requests.ResultKey("huge-result"), huge)
	putRaw := func(key, body string) {
		if _, err := bucket.PutBytes(context.Background(), b, key, []byte(body), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	putRaw(requests.RequestKey("huge-lease"), `{"apiVersion":"capsule/v1","kind":"Backup","id":"huge-lease","source":"pg"}`)
	putHuge(t, b, requests.LeaseKey("huge-lease"), huge)

	for id, key := range map[string]string{"huge-request": requests.RequestKey("huge-request"), "huge-result": requests.ResultKey("huge-result")} {
		r := h.get("/v1/requests/" + id)
		wantStatus(t, id, r, 500, api.CodeObjectTooLarge)
		if e := r.apiError(t); !strings.Contains(e.Message, key+" is 67108864 bytes, over the 1 MiB limit") {
			t.Errorf("%s: message %q does not name the object, its size and the limit", id, e.Message)
		}
	}
	r := h.get("/v1/requests/huge-lease")
	wantStatus(t, "huge lease", r, 200, "")
	if !strings.Contains(string(r.body), `"status":"pending"`) {
		t.Errorf("huge lease: %s, want pending", r.body)
	}
	// Canceling reads the status first, through the same limit.
	wantStatus(t, "cancel of a huge request", h.post("/v1/requests/huge-request/cancel", nil), 500, api.CodeObjectTooLarge)
	for _, key := range []string{requests.RequestKey("huge-request"), requests.ResultKey("huge-result"), requests.LeaseKey("huge-lease")} {
		if n := cb.Read(key); n != 0 {
			t.Errorf("the API read %d bytes of %s", n, key)
		}
	}
}

// With a lower configured limit (worker.maxControlObject), a request
// object over it is refused when read, and a submitted request whose
// JSON would be over it is the client's 413.
func TestConfiguredControlObjectLimit(t *testing.T) {
	b := fsBucket(t)
	h := newHarness(t, b, func(c *api.Config) { c.MaxControlObject = 64 << 10 })
	body := `{"apiVersion":"capsule/v1","kind":"Backup","id":"padded","source":"pg"`
	if _, err := bucket.PutBytes(context.Background(), b, requests.RequestKey("padded"), []byte(body+strings.Repeat(" ", 100<<10)+"}"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r := h.get("/v1/requests/padded")
	wantStatus(t, "request over 64 KiB", r, 500, api.CodeObjectTooLarge)
	if e := r.apiError(t); !strings.Contains(e.Message, "over the 64 KiB limit") {
		t.Errorf("message %q does not name the limit", e.Message)
	}
	big := `{"kind":"Restore","backupId":"b1","options":{"note":"` + strings.Repeat("x", 70<<10) + `"}}`
	r = h.post("/v1/requests", []byte(big))
	wantStatus(t, "submit over 64 KiB", r, 413, api.CodeTooLarge)
	if e := r.apiError(t); !strings.Contains(e.Message, "over the 64 KiB limit") {
		t.Errorf("message %q does not name the limit", e.Message)
	}
}

// Canceling a malformed (small) request answers like GET does: the
// status without the half-parsed request, as openapi.yaml describes it.
func TestCancelOfAMalformedRequest(t *testing.T) {
	b := fsBucket(t)
	h := newHarness(t, b, nil)
	if _, err := bucket.PutBytes(context.Background(), b, requests.RequestKey("malformed"), []byte("\x00\x00 not json"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r := h.post("/v1/requests/malformed/cancel", nil)
	wantStatus(t, "cancel of a malformed request", r, 202, "")
	if strings.Contains(string(r.body), `"request"`) {
		t.Errorf("cancel shows the half-parsed request: %s", r.body)
	}
}
