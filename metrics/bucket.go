package metrics

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/cnvrg/capsule/bucket"
)

// InstrumentBucket returns b with every call counted by operation and
// outcome, and timed, in r. An upload is one operation, from Upload to
// its Commit or Abort. The result is a bucket.UploadLister when b is one
// (garbage collection aborts the uploads crashed workers left open).
func InstrumentBucket(b bucket.Bucket, r *Registry) bucket.Bucket {
	if ul, ok := b.(bucket.UploadLister); ok {
		return &instrumentedLister{instrumented: instrumented{b: b, r: r}, ul: ul}
	}
	return &instrumented{b: b, r: r}
}

type instrumentedLister struct {
	instrumented
	ul bucket.UploadLister
}

func (i *instrumentedLister) ListUploads(ctx context.Context, prefix string) ([]bucket.PendingUpload, error) {
	ups, err := i.ul.ListUploads(ctx, prefix)
	i.r.bucketOps.WithLabelValues("list_uploads", outcome(err)).Inc()
	return ups, err
}

func (i *instrumentedLister) AbortUpload(ctx context.Context, key, uploadID string) error {
	err := i.ul.AbortUpload(ctx, key, uploadID)
	i.r.bucketOps.WithLabelValues("abort_upload", outcome(err)).Inc()
	return err
}

type instrumented struct {
	b bucket.Bucket
	r *Registry
}

var _ bucket.Bucket = (*instrumented)(nil)

// Unwrap returns the instrumented bucket (bucket.PrefixOf looks through it).
func (i *instrumented) Unwrap() bucket.Bucket { return i.b }

// outcome names how a call ended.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, bucket.ErrNotFound):
		return "not_found"
	case errors.Is(err, bucket.ErrPreconditionFailed):
		return "precondition_failed"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

func (i *instrumented) done(op string, start time.Time, err error) {
	i.r.bucketOps.WithLabelValues(op, outcome(err)).Inc()
	i.r.bucketTime.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (i *instrumented) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	start := time.Now()
	rc, info, err := i.b.Get(ctx, key)
	i.done("get", start, err)
	return rc, info, err
}

func (i *instrumented) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	start := time.Now()
	info, err := i.b.Head(ctx, key)
	i.done("head", start, err)
	return info, err
}

func (i *instrumented) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	start := time.Now()
	page, err := i.b.List(ctx, prefix, opts)
	i.done("list", start, err)
	return page, err
}

func (i *instrumented) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	start := time.Now()
	info, err := i.b.Put(ctx, key, body, size, opts)
	i.done("put", start, err)
	return info, err
}

func (i *instrumented) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := i.b.Delete(ctx, key)
	i.done("delete", start, err)
	return err
}

// DeleteBatch counts one delete_batch call, when the bucket has a batch
// delete (bucket.DeleteKeys deletes one key at a time otherwise).
func (i *instrumented) DeleteBatch(ctx context.Context, keys []string) ([]error, error) {
	bd, ok := i.b.(bucket.BatchDeleter)
	if !ok {
		return nil, bucket.NoBatch()
	}
	start := time.Now()
	perKey, err := bd.DeleteBatch(ctx, keys)
	if !errors.Is(err, errors.ErrUnsupported) {
		i.done("delete_batch", start, err)
	}
	return perKey, err
}

func (i *instrumented) Upload(ctx context.Context, key string, opts bucket.PutOptions) (bucket.Upload, error) {
	start := time.Now()
	u, err := i.b.Upload(ctx, key, opts)
	if err != nil {
		i.done("upload", start, err)
		return nil, err
	}
	return &instrumentedUpload{Upload: u, i: i, start: start}, nil
}

type instrumentedUpload struct {
	bucket.Upload
	i        *instrumented
	start    time.Time
	finished bool
}

func (u *instrumentedUpload) Commit() (bucket.ObjectInfo, error) {
	info, err := u.Upload.Commit()
	if !u.finished {
		u.finished = true
		u.i.done("upload", u.start, err)
	}
	return info, err
}

// Abort counts the upload as canceled unless Commit already counted it
// (an Abort after a failed Commit).
func (u *instrumentedUpload) Abort() error {
	err := u.Upload.Abort()
	if !u.finished {
		u.finished = true
		u.i.done("upload", u.start, context.Canceled)
	}
	return err
}
