package azblob

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/azuritetest"
)

// lossy passes requests on, but for the first one that match accepts, it
// loses the answer (forward) or the request itself (!forward).
type lossy struct {
	match   func(*http.Request) bool
	forward bool
	done    atomic.Bool
}

// lost is the error http.Client returns for a connection reset.
func lost(r *http.Request) error {
	return &url.Error{Op: "Put", URL: r.URL.String(), Err: syscall.ECONNRESET}
}

func (l *lossy) Do(r *http.Request) (*http.Response, error) {
	if !l.match(r) || l.done.Swap(true) {
		return http.DefaultClient.Do(r)
	}
	if !l.forward {
		return nil, lost(r)
	}
	resp, err := http.DefaultClient.Do(r)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return nil, lost(r)
}

// lossyBucket returns a bucket whose requests go through l, and one on the
// same container that reaches Azurite directly.
func lossyBucket(t *testing.T, l *lossy) (*Bucket, *Bucket) {
	srv := azuritetest.Shared(t)
	log := logrus.New()
	log.Out = t.Output()
	o := Options{Container: srv.NewContainer(t), ServiceURL: srv.ServiceURL, Account: srv.Account, AccountKey: srv.Key, BlockSize: 1 << 20, Log: log}
	clean, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	o.Transport = l
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return b, clean
}

// isPutBlob matches Put Blob (a PUT without comp=).
func isPutBlob(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Get("comp") == ""
}

// isCommit matches Put Block List.
func isCommit(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Get("comp") == "blocklist"
}

func TestCreateOnlyAfterLostAnswerIsOurs(t *testing.T) {
	b, clean := lossyBucket(t, &lossy{match: isPutBlob, forward: true})
	info, err := bucket.PutBytes(t.Context(), b, "lease", []byte("token 1"), bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("create-only whose answer was lost: %v", err)
	}
	head, err := clean.Head(t.Context(), "lease")
	if err != nil || info.ETag != head.ETag || info.Size != 7 || info.ServerTime.IsZero() {
		t.Fatalf("put said %+v; the blob is %+v, %v", info, head, err)
	}
}

func TestCompareAndSwapAfterLostAnswerIsOurs(t *testing.T) {
	b, clean := lossyBucket(t, &lossy{match: isPutBlob, forward: true})
	base, err := bucket.PutBytes(t.Context(), clean, "lease", []byte("v1"), bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := bucket.PutBytes(t.Context(), b, "lease", []byte("v2"), bucket.PutOptions{IfMatch: base.ETag})
	if err != nil {
		t.Fatalf("if-match whose answer was lost: %v", err)
	}
	if data, head, err := bucket.GetBytes(t.Context(), clean, "lease"); err != nil || string(data) != "v2" || head.ETag != info.ETag {
		t.Fatalf("the blob holds %q etag %s (%v); put said etag %s", data, head.ETag, err, info.ETag)
	}
}

// TestCreateOnlyAfterLostRequestLosesToOther: the first attempt is lost
// on the way; another writer creates the key, with the very same bytes,
// before the retry. The retry loses its condition, and the blob is not
// ours (its token is the other writer's): the write lost.
func TestCreateOnlyAfterLostRequestLosesToOther(t *testing.T) {
	l := &lossy{forward: false}
	b, other := lossyBucket(t, l)
	body := []byte(`{"holder":"same bytes"}`)
	var once sync.Once
	l.match = func(r *http.Request) bool {
		if !isPutBlob(r) {
			return false
		}
		once.Do(func() {
			if _, err := bucket.PutBytes(t.Context(), other, "lease", body, bucket.PutOptions{IfNoneMatch: true}); err != nil {
				t.Error(err)
			}
		})
		return true
	}
	_, err := bucket.PutBytes(t.Context(), b, "lease", body, bucket.PutOptions{IfNoneMatch: true})
	if !errors.Is(err, bucket.ErrPreconditionFailed) {
		t.Fatalf("got %v, want precondition failed: the other writer won", err)
	}
}

func TestCommitAfterLostAnswerIsOurs(t *testing.T) {
	b, clean := lossyBucket(t, &lossy{match: isCommit, forward: true})
	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20+100)/16)
	u, err := b.Upload(t.Context(), "artifact", bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	u.Write(data)
	info, err := u.Commit()
	if err != nil {
		t.Fatalf("commit whose answer was lost: %v", err)
	}
	got, head, err := bucket.GetBytes(t.Context(), clean, "artifact")
	if err != nil || head.ETag != info.ETag || !bytes.Equal(got, data) || info.Size != int64(len(data)) {
		t.Fatalf("blob %+v (%d bytes, equal %v), %v; commit said %+v", head, len(got), bytes.Equal(got, data), err, info)
	}
}
