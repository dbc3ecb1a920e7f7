package gcs

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/gcstest"
)

// lossy passes requests on, but for the first one that match accepts, it
// loses the answer after the server applied the request (forward) or the
// request itself (!forward), as a connection reset would.
type lossy struct {
	base    http.RoundTripper
	match   func(*http.Request) bool
	forward bool
	done    atomic.Bool
}

var errLost = errors.New("connection reset by test")

func (l *lossy) RoundTrip(r *http.Request) (*http.Response, error) {
	if !l.match(r) || l.done.Swap(true) {
		return l.base.RoundTrip(r)
	}
	if !l.forward {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errLost
	}
	resp, err := l.base.RoundTrip(r)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return nil, errLost
}

func (l *lossy) fired() bool { return l.done.Load() }

// lossyBucket returns a bucket on a fresh fake-gcs-server bucket whose
// transport is l, and one that reaches the same bucket without faults.
func lossyBucket(t *testing.T, l *lossy) (faulty, clean *Bucket) {
	t.Helper()
	srv := gcstest.Shared(t)
	name := srv.NewBucket(t)
	log := logrus.New()
	log.Out = t.Output()
	open := func(wrap func(http.RoundTripper) http.RoundTripper) *Bucket {
		b, err := newBucket(t.Context(), Options{Bucket: name, Endpoint: srv.Endpoint, ChunkSize: MinChunkSize, Log: log}, wrap)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	faulty = open(func(rt http.RoundTripper) http.RoundTripper { l.base = rt; return l })
	return faulty, open(nil)
}

// isUpload matches the requests that carry an object's bytes: a
// one-request upload, or a chunk of a resumable one.
func isUpload(r *http.Request) bool {
	return strings.Contains(r.URL.Path, "/upload/")
}

// isFinalChunk matches the last chunk of a resumable upload: its
// Content-Range names the total size.
func isFinalChunk(r *http.Request) bool {
	cr := r.Header.Get("Content-Range")
	return strings.HasPrefix(cr, "bytes ") && !strings.HasSuffix(cr, "/*")
}

func TestCreateOnlyAfterLostAnswerIsOurs(t *testing.T) {
	l := &lossy{match: isUpload, forward: true}
	b, clean := lossyBucket(t, l)
	info, err := bucket.PutBytes(t.Context(), b, "lease", []byte("token 1"), bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("create-only whose answer was lost: %v", err)
	}
	if !l.fired() {
		t.Fatal("no answer was lost: the test proves nothing")
	}
	head, err := clean.Head(t.Context(), "lease")
	if err != nil || info.ETag != head.ETag || info.Size != 7 || info.ServerTime.IsZero() {
		t.Fatalf("put said %+v; the store has %+v (%v)", info, head, err)
	}
}

func TestCompareAndSwapAfterLostAnswerIsOurs(t *testing.T) {
	l := &lossy{match: isUpload, forward: true}
	b, clean := lossyBucket(t, l)
	base, err := bucket.PutBytes(t.Context(), clean, "lease", []byte("v1"), bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := bucket.PutBytes(t.Context(), b, "lease", []byte("v2"), bucket.PutOptions{IfMatch: base.ETag})
	if err != nil {
		t.Fatalf("if-match whose answer was lost: %v", err)
	}
	if !l.fired() {
		t.Fatal("no answer was lost: the test proves nothing")
	}
	data, head, err := bucket.GetBytes(t.Context(), clean, "lease")
	if err != nil || string(data) != "v2" || head.ETag != info.ETag {
		t.Fatalf("the store has %q etag %s (%v); put said etag %s", data, head.ETag, err, info.ETag)
	}
}

// TestCreateOnlyAfterLostRequestLosesToOther: the first attempt never
// reaches the store, another writer creates the key, and the repeat's 412
// is a real loss: the object does not carry this write's token.
func TestCreateOnlyAfterLostRequestLosesToOther(t *testing.T) {
	l := &lossy{forward: false}
	b, clean := lossyBucket(t, l)
	var once sync.Once
	l.match = func(r *http.Request) bool {
		if !isUpload(r) {
			return false
		}
		once.Do(func() {
			if _, err := bucket.PutBytes(t.Context(), clean, "lease", []byte("other's"), bucket.PutOptions{IfNoneMatch: true}); err != nil {
				t.Error(err)
			}
		})
		return true
	}
	_, err := bucket.PutBytes(t.Context(), b, "lease", []byte("mine"), bucket.PutOptions{IfNoneMatch: true})
	if !errors.Is(err, bucket.ErrPreconditionFailed) {
		t.Fatalf("got %v, want precondition failed", err)
	}
	if data, _, err := bucket.GetBytes(t.Context(), clean, "lease"); err != nil || string(data) != "other's" {
		t.Fatalf("the store has %q (%v), want the other writer's", data, err)
	}
}

// TestUploadAfterLostFinalAnswerIsOurs: a create-only resumable upload of
// several chunks whose last chunk was applied (the object finalized) but
// whose answer was lost.
func TestUploadAfterLostFinalAnswerIsOurs(t *testing.T) {
	l := &lossy{match: isFinalChunk, forward: true}
	b, clean := lossyBucket(t, l)
	data := bytes.Repeat([]byte("0123456789abcdef"), (3*MinChunkSize+100)/16)
	u, err := b.Upload(t.Context(), "artifact", bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(data); err != nil {
		t.Fatal(err)
	}
	info, err := u.Commit()
	if err != nil {
		t.Fatalf("commit whose answer was lost: %v", err)
	}
	if !l.fired() {
		t.Fatal("no answer was lost: the test proves nothing")
	}
	head, err := clean.Head(t.Context(), "artifact")
	if err != nil || head.ETag != info.ETag || head.Size != int64(len(data)) || info.Size != head.Size {
		t.Fatalf("head %+v %v; commit said %+v", head, err, info)
	}
}

// TestServerTimeIsTheStoresDate: ServerTime is the Date of the store's
// answer, not the worker's clock: a transport that dates every answer
// 2001-02-03 makes every call report that time.
func TestServerTimeIsTheStoresDate(t *testing.T) {
	srv := gcstest.Shared(t)
	name := srv.NewBucket(t)
	date := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	b, err := newBucket(t.Context(), Options{Bucket: name, Endpoint: srv.Endpoint}, func(rt http.RoundTripper) http.RoundTripper {
		return redate{rt, date}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	put, err := bucket.PutBytes(t.Context(), b, "k", []byte("x"), bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	head, err := b.Head(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	rc, get, err := b.Get(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	_, lost := bucket.PutBytes(t.Context(), b, "k", []byte("y"), bucket.PutOptions{IfNoneMatch: true})
	missing, _ := b.Head(t.Context(), "missing")
	for what, got := range map[string]time.Time{"put": put.ServerTime, "head": head.ServerTime, "get": get.ServerTime, "head of a missing key": missing.ServerTime} {
		if !got.Equal(date) {
			t.Errorf("%s: server time %s, want the answer's Date %s", what, got, date)
		}
	}
	if !errors.Is(lost, bucket.ErrPreconditionFailed) {
		t.Errorf("second create: %v", lost)
	}
}

type redate struct {
	base http.RoundTripper
	date time.Time
}

func (r redate) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if resp != nil {
		resp.Header.Set("Date", r.date.Format(http.TimeFormat))
	}
	return resp, err
}
