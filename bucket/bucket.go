package bucket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) when an object does not exist.
var ErrNotFound = errors.New("object not found")

// ErrPreconditionFailed is returned (wrapped) when a conditional write lost:
// the key already existed for a create-only Put, or its ETag no longer matched
// for an If-Match Put.
var ErrPreconditionFailed = errors.New("precondition failed")

// ErrRetained is returned (wrapped) by Delete when the store refuses
// because S3 Object Lock (a retain-until date or a legal hold) still keeps
// the object. Retrying before the retention ends fails the same way.
var ErrRetained = errors.New("object is retained by object lock")

// ObjectInfo describes one object.
type ObjectInfo struct {
	// Key is the object's key relative to the bucket (and its prefix).
	Key  string
	Size int64
	// ETag identifies one version of the object's body, without quotes.
	// Every write of a key gives it a new ETag unless the bytes are the
	// same (S3 semantics); capsule's control objects always differ.
	ETag         string
	LastModified time.Time
	// ServerTime is the store's clock when it answered (the Date header of
	// an S3 response). Zero in List results. Lease expiry is judged by it,
	// never by the worker's own clock.
	ServerTime time.Time
}

// PutOptions are the conditions and settings of a write.
type PutOptions struct {
	// IfNoneMatch makes the write create-only: it fails with
	// ErrPreconditionFailed when the key exists.
	IfNoneMatch bool
	// IfMatch makes the write succeed only while the object's ETag equals
	// this value; ErrPreconditionFailed otherwise (also when it is gone).
	IfMatch     string
	ContentType string
	// RetainUntil, when set, asks the store to keep the object immutable
	// until then (S3 Object Lock, compliance mode). Stores that cannot
	// fail the write rather than ignore it.
	RetainUntil time.Time
}

// ListOptions page through a listing. Keys come in ascending byte order.
type ListOptions struct {
	// StartAfter lists keys strictly greater than this key.
	StartAfter string
	// Limit caps one page; 0 means the backend's default (1000).
	Limit int
}

// ListPage is one page of a listing.
type ListPage struct {
	Objects []ObjectInfo
	// Truncated is true when more keys follow the last one in Objects.
	Truncated bool
}

// Reader is the read side of a bucket.
type Reader interface {
	// Get opens an object's body. ErrNotFound when missing. The caller
	// closes the body. The body is the version Get opened, whole: a
	// backend whose body can be cut by the network resumes it from the
	// byte reached, of the same version (ResumableBody), and a read that
	// cannot go on because the object was replaced or deleted meanwhile
	// fails with ErrChanged; it never yields bytes of two versions. A
	// failure that may pass when repeated is marked ErrTransient.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// Head returns an object's metadata. ErrNotFound when missing.
	Head(ctx context.Context, key string) (ObjectInfo, error)
	// List returns keys that start with prefix, in ascending order.
	List(ctx context.Context, prefix string, opts ListOptions) (ListPage, error)
}

// Bucket is an object store with conditional writes. Implementations are
// safe for concurrent use by many goroutines and, for the shared store,
// by many processes.
type Bucket interface {
	Reader
	// Put writes a whole object of known size, with optional conditions.
	// The returned info carries the new ETag and the server's time.
	Put(ctx context.Context, key string, body io.Reader, size int64, opts PutOptions) (ObjectInfo, error)
	// Delete removes an object. Deleting a missing key is not an error.
	// Deletes are never conditional (some S3 servers ignore If-Match on
	// DELETE). ErrRetained when Object Lock keeps the object.
	Delete(ctx context.Context, key string) error
	// Upload starts a streaming write of an object of unknown size (a
	// multipart upload on S3, with parts in flight concurrently). Nothing is
	// visible under key until Commit succeeds; Abort discards everything.
	// Only IfNoneMatch, ContentType and RetainUntil of opts apply.
	Upload(ctx context.Context, key string, opts PutOptions) (Upload, error)
}

// Upload is a streaming write in progress. Write is not safe for
// concurrent use. Exactly one of Commit or Abort must be called.
type Upload interface {
	io.Writer
	// Commit finishes the object and makes it visible.
	Commit() (ObjectInfo, error)
	// Abort discards what was written. Safe after a failed Commit.
	Abort() error
}

// PendingUpload is a streaming write that was started and neither
// committed nor aborted: in progress, or left behind by a crashed writer.
type PendingUpload struct {
	// Key is the key the upload would create.
	Key string
	// UploadID identifies the upload to AbortUpload.
	UploadID string
	// Initiated is when the upload started (S3), or when it was last
	// written to (bucket/fs), by the store's clock.
	Initiated time.Time
}

// UploadLister is implemented by buckets whose streaming writes can outlive
// their writer (multipart uploads on S3, temporary files in a directory), so
// that a garbage collector can find and discard them. Not part of Bucket:
// callers check for it with a type assertion.
type UploadLister interface {
	// ListUploads returns the pending uploads of keys that start with
	// prefix, in no particular order.
	ListUploads(ctx context.Context, prefix string) ([]PendingUpload, error)
	// AbortUpload discards a pending upload. An upload that is already
	// gone (committed or aborted) is not an error.
	AbortUpload(ctx context.Context, key, uploadID string) error
}

// PutBytes writes a small object from memory.
func PutBytes(ctx context.Context, b Bucket, key string, data []byte, opts PutOptions) (ObjectInfo, error) {
	return b.Put(ctx, key, strings.NewReader(string(data)), int64(len(data)), opts)
}

// GetBytes reads a whole object into memory, however large it is. Use it
// only for objects whose size capsule controls (tests, its own
// artifacts); anything another party may have written goes through
// GetBytesLimit.
func GetBytes(ctx context.Context, b Reader, key string) ([]byte, ObjectInfo, error) {
	rc, info, err := b.Get(ctx, key)
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, info, fmt.Errorf("read %s: %w", key, err)
	}
	return data, info, nil
}

// ErrTooLarge is what a *TooLargeError matches with errors.Is: an object
// was refused by a size limit.
var ErrTooLarge = errors.New("object too large")

// TooLargeError says GetBytesLimit refused an object larger than its limit
// without reading it whole.
type TooLargeError struct {
	Key string
	// Size is the object's size as the store reported it. When the store
	// reported a size within the limit (or none) and the body went on
	// past the limit anyway, SizeUnknown is set and Size is the bytes
	// read before the read stopped (Limit+1): a lower bound.
	Size        int64
	SizeUnknown bool
	Limit       int64
}

func (e *TooLargeError) Error() string {
	if e.SizeUnknown {
		return fmt.Sprintf("%s is more than %d bytes, over the %s limit", e.Key, e.Size-1, FormatSize(e.Limit))
	}
	return fmt.Sprintf("%s is %d bytes, over the %s limit", e.Key, e.Size, FormatSize(e.Limit))
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// GetBytesLimit reads a whole object of at most limit bytes into memory.
// A larger object is a *TooLargeError (errors.Is ErrTooLarge): refused
// from the size the store reports before its body is read, or, should the
// body run on past that size, after limit+1 bytes. With the error comes
// the object's info (ETag, times), so a caller can still act on the
// object as a damaged one.
func GetBytesLimit(ctx context.Context, b Reader, key string, limit int64) ([]byte, ObjectInfo, error) {
	if limit <= 0 {
		return nil, ObjectInfo{}, fmt.Errorf("read %s: size limit must be positive, got %d", key, limit)
	}
	rc, info, err := b.Get(ctx, key)
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	if info.Size > limit {
		return nil, info, &TooLargeError{Key: key, Size: info.Size, Limit: limit}
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(info.Size, 0)+bytes.MinRead))
	if _, err := buf.ReadFrom(io.LimitReader(rc, limit+1)); err != nil {
		return nil, info, fmt.Errorf("read %s: %w", key, err)
	}
	if int64(buf.Len()) > limit {
		return nil, info, &TooLargeError{Key: key, Size: int64(buf.Len()), SizeUnknown: true, Limit: limit}
	}
	return buf.Bytes(), info, nil
}

// FormatSize writes a byte count for people: in KiB, MiB or GiB when it
// is a whole number of them, else in bytes.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// Walk calls fn for every object under prefix, in ascending key order,
// following pages until the listing ends or fn returns an error.
func Walk(ctx context.Context, b Reader, prefix string, fn func(ObjectInfo) error) error {
	after := ""
	for {
		page, err := b.List(ctx, prefix, ListOptions{StartAfter: after})
		if err != nil {
			return err
		}
		for _, o := range page.Objects {
			if err := fn(o); err != nil {
				return err
			}
			after = o.Key
		}
		if !page.Truncated || len(page.Objects) == 0 {
			return nil
		}
	}
}
