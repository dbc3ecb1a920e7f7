package bucket

import (
	"context"
	"io"
	"strings"
)

// Prefixed returns a view of b in which every key is relative to prefix.
// An empty prefix returns b itself. A prefix should end in "/". The view
// is an UploadLister when b is one.
func Prefixed(b Bucket, prefix string) Bucket {
	if prefix == "" {
		return b
	}
	if ul, ok := b.(UploadLister); ok {
		return &prefixedLister{prefixed: prefixed{b: b, p: prefix}, ul: ul}
	}
	return &prefixed{b: b, p: prefix}
}

// Unprefixed returns the bucket a Prefixed view was made of, and the
// view's prefix: the whole bucket, for reading what lives beside
// capsule's prefix (the old cnvrg-capsule service's backups). For any
// other bucket it returns b itself and "". A wrapper around a view (a
// metrics decorator, say) hides the view: call it on the view itself.
func Unprefixed(b Bucket) (Bucket, string) {
	switch v := b.(type) {
	case *prefixed:
		return v.b, v.p
	case *prefixedLister:
		return v.b, v.p
	}
	return b, ""
}

// PrefixOf returns the prefix of the Prefixed view b is, or wraps: it
// looks through decorators that implement Unwrap() Bucket (the metrics'
// instrumented bucket does). "" when there is none.
func PrefixOf(b Bucket) string {
	for {
		if u, ok := b.(interface{ Unwrap() Bucket }); ok {
			b = u.Unwrap()
			continue
		}
		_, p := Unprefixed(b)
		return p
	}
}

type prefixed struct {
	b Bucket
	p string
}

func (p *prefixed) strip(info ObjectInfo) ObjectInfo {
	info.Key = strings.TrimPrefix(info.Key, p.p)
	return info
}

func (p *prefixed) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	rc, info, err := p.b.Get(ctx, p.p+key)
	return rc, p.strip(info), err
}

func (p *prefixed) Head(ctx context.Context, key string) (ObjectInfo, error) {
	info, err := p.b.Head(ctx, p.p+key)
	return p.strip(info), err
}

func (p *prefixed) List(ctx context.Context, prefix string, opts ListOptions) (ListPage, error) {
	if opts.StartAfter != "" {
		opts.StartAfter = p.p + opts.StartAfter
	}
	page, err := p.b.List(ctx, p.p+prefix, opts)
	for i := range page.Objects {
		page.Objects[i] = p.strip(page.Objects[i])
	}
	return page, err
}

func (p *prefixed) Put(ctx context.Context, key string, body io.Reader, size int64, opts PutOptions) (ObjectInfo, error) {
	info, err := p.b.Put(ctx, p.p+key, body, size, opts)
	return p.strip(info), err
}

func (p *prefixed) Delete(ctx context.Context, key string) error {
	return p.b.Delete(ctx, p.p+key)
}

func (p *prefixed) Upload(ctx context.Context, key string, opts PutOptions) (Upload, error) {
	u, err := p.b.Upload(ctx, p.p+key, opts)
	if err != nil {
		return nil, err
	}
	return &prefixedUpload{Upload: u, p: p}, nil
}

type prefixedUpload struct {
	Upload
	p *prefixed
}

func (u *prefixedUpload) Commit() (ObjectInfo, error) {
	info, err := u.Upload.Commit()
	return u.p.strip(info), err
}

type prefixedLister struct {
	prefixed
	ul UploadLister
}

func (p *prefixedLister) ListUploads(ctx context.Context, prefix string) ([]PendingUpload, error) {
	ups, err := p.ul.ListUploads(ctx, p.p+prefix)
	for i := range ups {
		ups[i].Key = strings.TrimPrefix(ups[i].Key, p.p)
	}
	return ups, err
}

func (p *prefixedLister) AbortUpload(ctx context.Context, key, uploadID string) error {
	return p.ul.AbortUpload(ctx, p.p+key, uploadID)
}

// DeleteBatch is the underlying bucket's batch delete of the keys under
// the prefix; errors.ErrUnsupported when it has none.
func (p *prefixed) DeleteBatch(ctx context.Context, keys []string) ([]error, error) {
	bd, ok := p.b.(BatchDeleter)
	if !ok {
		return nil, errNoBatch
	}
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = p.p + k
	}
	return bd.DeleteBatch(ctx, full)
}
