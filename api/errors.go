package api

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// Error is the body of every error response. Code is stable; Message is
// for people; Field names the bad parameter or body field, if one is.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// The error codes.
const (
	CodeInvalidRequest    = "invalid_request"    // 400: the body is not a valid request
	CodeInvalidParameter  = "invalid_parameter"  // 400: a path or query parameter is bad
	CodeUnauthorized      = "unauthorized"       // 401: missing or wrong bearer token
	CodeReadOnly          = "read_only"          // 403: writes are off (no token file)
	CodeNotFound          = "not_found"          // 404
	CodeMethodNotAllowed  = "method_not_allowed" // 405
	CodeConflict          = "conflict"           // 409: the id is taken, or the request already ended
	CodeTooLarge          = "too_large"          // 413: body over 1 MiB
	CodeBucketUnavailable = "bucket_unavailable" // 503: the bucket did not answer
	CodeUnavailable       = "unavailable"        // 503: the token file cannot be read
	CodeInternal          = "internal"           // 500: a genuine internal error
	CodeObjectTooLarge    = "object_too_large"   // 500: an object in the bucket is over the size limit
)

func writeError(w http.ResponseWriter, status int, code, field, msg string) {
	writeJSON(w, status, Error{Code: code, Message: msg, Field: field})
}

// bucketError marks an error that came from the bucket itself (not a
// missing key or a lost condition): the store is unreachable or failing.
type bucketError struct{ err error }

func (e *bucketError) Error() string { return e.err.Error() }
func (e *bucketError) Unwrap() error { return e.err }

// reachable marks the bucket's own failures as *bucketError, so that
// they are told apart from errors in what was read (damaged objects).
type reachable struct{ b bucket.Bucket }

var _ bucket.Bucket = reachable{}

func mark(err error) error {
	if err == nil || errors.Is(err, bucket.ErrNotFound) || errors.Is(err, bucket.ErrPreconditionFailed) {
		return err
	}
	return &bucketError{err}
}

func (r reachable) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	rc, info, err := r.b.Get(ctx, key)
	if err != nil {
		return nil, info, mark(err)
	}
	return readCloser{rc}, info, nil
}

func (r reachable) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	info, err := r.b.Head(ctx, key)
	return info, mark(err)
}

func (r reachable) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	page, err := r.b.List(ctx, prefix, opts)
	return page, mark(err)
}

func (r reachable) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	info, err := r.b.Put(ctx, key, body, size, opts)
	return info, mark(err)
}

func (r reachable) Delete(ctx context.Context, key string) error { return mark(r.b.Delete(ctx, key)) }

func (r reachable) Upload(ctx context.Context, key string, opts bucket.PutOptions) (bucket.Upload, error) {
	u, err := r.b.Upload(ctx, key, opts)
	return u, mark(err)
}

// readCloser marks a failure while reading a body as the bucket's.
type readCloser struct{ io.ReadCloser }

func (r readCloser) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = mark(err)
	}
	return n, err
}

// fail answers with the error response that err deserves.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if rec, ok := w.(*recorder); ok {
		rec.err = err
	}
	var fe *requests.FieldError
	var be *bucketError
	switch {
	case errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, fe.Field, fe.Error())
	case errors.Is(err, client.ErrUnknownRequest):
		writeError(w, http.StatusNotFound, CodeNotFound, "", "no request has this id")
	case errors.Is(err, index.ErrBackupNotFound):
		writeError(w, http.StatusNotFound, CodeNotFound, "", "no backup has this id in this cluster")
	case errors.Is(err, bucket.ErrPreconditionFailed):
		writeError(w, http.StatusConflict, CodeConflict, "id", err.Error())
	case errors.Is(err, bucket.ErrTooLarge):
		// The bucket holds something no reader takes whole: damaged or
		// hostile content, not the caller's fault nor a failing store.
		writeError(w, http.StatusInternalServerError, CodeObjectTooLarge, "", err.Error())
	case errors.As(err, &be), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled) || r.Context().Err() != nil:
		writeError(w, http.StatusServiceUnavailable, CodeBucketUnavailable, "", "the bucket did not answer; try again")
	default:
		writeError(w, http.StatusInternalServerError, CodeInternal, "", "internal error")
	}
}
