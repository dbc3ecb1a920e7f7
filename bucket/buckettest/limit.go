package buckettest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/cnvrg/capsule/bucket"
)

// Counted wraps a bucket and counts the body bytes read through Get, per
// key, so that a test can prove an object was refused without being read
// whole. Everything else goes to the wrapped bucket unchanged.
type Counted struct {
	bucket.Bucket

	mu   sync.Mutex
	read map[string]int64
}

// Count returns b wrapped in a Counted.
func Count(b bucket.Bucket) *Counted {
	return &Counted{Bucket: b, read: map[string]int64{}}
}

// Get opens the body through a counter.
func (c *Counted) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	rc, info, err := c.Bucket.Get(ctx, key)
	if err != nil {
		return rc, info, err
	}
	return &countingBody{ReadCloser: rc, c: c, key: key}, info, nil
}

// Read returns the body bytes read of key so far.
func (c *Counted) Read(key string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read[key]
}

// ReadUnder returns the body bytes read so far of every key under prefix.
func (c *Counted) ReadUnder(prefix string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for k, v := range c.read {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

type countingBody struct {
	io.ReadCloser
	c   *Counted
	key string
}

func (r *countingBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.c.mu.Lock()
	r.c.read[r.key] += int64(n)
	r.c.mu.Unlock()
	return n, err
}

// sizeless reports no size on Get, as an S3 response without a
// Content-Length (a chunked one) does.
type sizeless struct{ bucket.Bucket }

func (s sizeless) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	rc, info, err := s.Bucket.Get(ctx, key)
	info.Size = 0
	return rc, info, err
}

// testGetBytesLimit checks bucket.GetBytesLimit on this backend: an
// object of exactly the limit is read, one byte more is refused from the
// size the store reports without reading the body, and a body that runs
// past the reported size is cut after limit+1 bytes.
func testGetBytesLimit(t *testing.T, b bucket.Bucket) {
	const limit = 4096
	objects := map[string][]byte{
		"limit/empty": {},
		"limit/under": randomBytes(limit - 1),
		"limit/at":    randomBytes(limit),
		"limit/over":  randomBytes(limit + 1),
		"limit/huge":  make([]byte, 8<<20),
	}
	etags := map[string]string{}
	for key, data := range objects {
		etags[key] = put(t, b, key, data, bucket.PutOptions{}).ETag
	}
	for _, c := range []struct {
		name string
		// reported is false when the store's size is hidden.
		reported bool
	}{{"size reported", true}, {"size not reported", false}} {
		t.Run(c.name, func(t *testing.T) {
			cb := Count(b)
			var r bucket.Reader = cb
			if !c.reported {
				r = sizeless{cb}
			}
			for _, key := range []string{"limit/empty", "limit/under", "limit/at"} {
				got, info, err := bucket.GetBytesLimit(ctx(t), r, key, limit)
				if err != nil {
					t.Fatalf("%s (%d bytes, limit %d): %v", key, len(objects[key]), limit, err)
				}
				if !bytes.Equal(got, objects[key]) || info.ETag != etags[key] {
					t.Fatalf("%s: got %d bytes etag %s, want %d bytes etag %s", key, len(got), info.ETag, len(objects[key]), etags[key])
				}
			}
			for _, key := range []string{"limit/over", "limit/huge"} {
				got, info, err := bucket.GetBytesLimit(ctx(t), r, key, limit)
				var tl *bucket.TooLargeError
				if !errors.Is(err, bucket.ErrTooLarge) || !errors.As(err, &tl) || got != nil {
					t.Fatalf("%s (%d bytes, limit %d): got %d bytes, error %v; want a *TooLargeError", key, len(objects[key]), limit, len(got), err)
				}
				if tl.Key != key || tl.Limit != limit || info.ETag != etags[key] || info.LastModified.IsZero() {
					t.Errorf("%s: error %+v info %+v: want the key, the limit and the object's info", key, tl, info)
				}
				wantSize, wantRead := int64(len(objects[key])), int64(0)
				if !c.reported {
					wantSize, wantRead = limit+1, limit+1
				}
				if tl.Size != wantSize || tl.SizeUnknown == c.reported {
					t.Errorf("%s: error says size %d (unknown: %v), want %d (unknown: %v)", key, tl.Size, tl.SizeUnknown, wantSize, !c.reported)
				}
				if n := cb.Read(key); n != wantRead {
					t.Errorf("%s: %d body bytes read, want %d", key, n, wantRead)
				}
				if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "4 KiB limit") {
					t.Errorf("%s: error %q does not name the key and the limit", key, err)
				}
			}
			_, _, err := bucket.GetBytesLimit(ctx(t), r, "limit/missing", limit)
			wantErr(t, "missing", err, bucket.ErrNotFound)
		})
	}
}
