// Package reqcount counts the requests a caller makes of a bucket, for
// tests and benchmarks that hold a cost to a number of requests.
package reqcount

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/cnvrg/capsule/bucket"
)

// Bucket wraps a bucket.Bucket and counts each call by operation. Every
// call is one request of the store (a List is one page).
type Bucket struct {
	B bucket.Bucket

	gets, heads, lists, puts, deletes, uploads atomic.Int64
}

var _ bucket.Bucket = (*Bucket)(nil)

// Counts is a snapshot of the counters.
type Counts struct {
	Get, Head, List, Put, Delete, Upload int64
}

// Total is every request.
func (c Counts) Total() int64 { return c.Get + c.Head + c.List + c.Put + c.Delete + c.Upload }

// Counts returns the counters.
func (b *Bucket) Counts() Counts {
	return Counts{Get: b.gets.Load(), Head: b.heads.Load(), List: b.lists.Load(), Put: b.puts.Load(), Delete: b.deletes.Load(), Upload: b.uploads.Load()}
}

// Reset sets every counter to zero.
func (b *Bucket) Reset() {
	for _, c := range []*atomic.Int64{&b.gets, &b.heads, &b.lists, &b.puts, &b.deletes, &b.uploads} {
		c.Store(0)
	}
}

// Get counts one GET.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	b.gets.Add(1)
	return b.B.Get(ctx, key)
}

// Head counts one HEAD.
func (b *Bucket) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	b.heads.Add(1)
	return b.B.Head(ctx, key)
}

// List counts one LIST page.
func (b *Bucket) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	b.lists.Add(1)
	return b.B.List(ctx, prefix, opts)
}

// Put counts one PUT.
func (b *Bucket) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	b.puts.Add(1)
	return b.B.Put(ctx, key, body, size, opts)
}

// Delete counts one DELETE.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	b.deletes.Add(1)
	return b.B.Delete(ctx, key)
}

// Upload counts one streaming write.
func (b *Bucket) Upload(ctx context.Context, key string, opts bucket.PutOptions) (bucket.Upload, error) {
	b.uploads.Add(1)
	return b.B.Upload(ctx, key, opts)
}
