package s3

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/s3test"
)

// lossy passes requests on, but for the first one that match accepts, it
// loses the answer (forward) or the request itself (!forward).
type lossy struct {
	match   func(*http.Request) bool
	forward bool
	done    atomic.Bool
}

var errLost = errors.New("connection reset by test")

func (l *lossy) Do(r *http.Request) (*http.Response, error) {
	if !l.match(r) || l.done.Swap(true) {
		return http.DefaultClient.Do(r)
	}
	if !l.forward {
		return nil, errLost
	}
	resp, err := http.DefaultClient.Do(r)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return nil, errLost
}

func lossyBucket(t *testing.T, l *lossy) (*Bucket, *Bucket) {
	srv := s3test.Shared(t)
	log := logrus.New()
	log.Out = t.Output()
	b, err := New(t.Context(), Options{
		Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: MinPartSize, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	clean := *b
	opts := b.client.Options()
	opts.HTTPClient = l
	b.client = s3.New(opts)
	return b, &clean
}

func isPut(r *http.Request) bool {
	return r.Method == http.MethodPut && !strings.Contains(r.URL.RawQuery, "partNumber")
}

func TestCreateOnlyAfterLostAnswerIsOurs(t *testing.T) {
	b, _ := lossyBucket(t, &lossy{match: isPut, forward: true})
	info, err := bucket.PutBytes(t.Context(), b, "lease", []byte("token 1"), bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("create-only whose answer was lost: %v", err)
	}
	if info.ETag == "" || info.Size != 7 || info.ServerTime.IsZero() {
		t.Fatalf("info %+v", info)
	}
}

func TestCompareAndSwapAfterLostAnswerIsOurs(t *testing.T) {
	b, clean := lossyBucket(t, &lossy{match: isPut, forward: true})
	base, err := bucket.PutBytes(t.Context(), clean, "lease", []byte("v1"), bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(t.Context(), b, "lease", []byte("v2"), bucket.PutOptions{IfMatch: base.ETag}); err != nil {
		t.Fatalf("if-match whose answer was lost: %v", err)
	}
}

func TestCreateOnlyAfterLostRequestLosesToOther(t *testing.T) {
	var other *Bucket
	l := &lossy{forward: false}
	b, clean := lossyBucket(t, l)
	other = clean
	// The first attempt is lost on the way; another writer creates the
	// key before the retry.
	var once sync.Once
	l.match = func(r *http.Request) bool {
		if !isPut(r) {
			return false
		}
		once.Do(func() {
			if _, err := bucket.PutBytes(t.Context(), other, "lease", []byte("other's"), bucket.PutOptions{IfNoneMatch: true}); err != nil {
				t.Error(err)
			}
		})
		return true
	}
	_, err := bucket.PutBytes(t.Context(), b, "lease", []byte("mine"), bucket.PutOptions{IfNoneMatch: true})
	if !errors.Is(err, bucket.ErrPreconditionFailed) {
		t.Fatalf("got %v, want precondition failed", err)
	}
}

func TestCompleteAfterLostAnswerIsOurs(t *testing.T) {
	isComplete := func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.Contains(r.URL.RawQuery, "uploadId")
	}
	b, clean := lossyBucket(t, &lossy{match: isComplete, forward: true})
	data := bytes.Repeat([]byte("0123456789abcdef"), (MinPartSize*2+100)/16)
	u, err := b.Upload(t.Context(), "artifact", bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	u.Write(data)
	info, err := u.Commit()
	if err != nil {
		t.Fatalf("commit whose answer was lost: %v", err)
	}
	head, err := clean.Head(t.Context(), "artifact")
	if err != nil || head.ETag != info.ETag || head.Size != int64(len(data)) || info.Size != head.Size {
		t.Fatalf("head %+v %v; commit said %+v", head, err, info)
	}
}
