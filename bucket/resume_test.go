package bucket_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
)

// cutBody yields data[from:to] and then fails with err: a body the
// network cut. (The S3 backend's tests cut real answers of versitygw
// through a proxy; these pin the helper's own bounds.)
type cutBody struct {
	r   *bytes.Reader
	err error
}

func (c *cutBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		err = c.err
	}
	return n, err
}

func (c *cutBody) Close() error { return nil }

func fastPolicy() bucket.RetryPolicy {
	return bucket.RetryPolicy{Initial: time.Millisecond, Max: 2 * time.Millisecond, MaxElapsed: time.Minute, Retries: 3}
}

// TestResumableBodyGivesUpWithoutProgress: every reopen brings no byte.
// The read stops after the policy's retries, says where, and is marked
// transient; a cut after progress is resumed at once each time.
func TestResumableBodyGivesUpWithoutProgress(t *testing.T) {
	data := []byte(strings.Repeat("0123456789", 10))
	info := bucket.ObjectInfo{Key: "k", Size: int64(len(data)), ETag: "e1"}
	reset := fmt.Errorf("read tcp: %w", syscall.ECONNRESET)
	var offsets []int64
	reopen := func(_ context.Context, off int64) (io.ReadCloser, error) {
		offsets = append(offsets, off)
		if off < 40 {
			// Ten more bytes, then a reset.
			return &cutBody{r: bytes.NewReader(data[off : off+10]), err: reset}, nil
		}
		return &cutBody{r: bytes.NewReader(nil), err: reset}, nil
	}
	first := &cutBody{r: bytes.NewReader(data[:10]), err: io.EOF} // ends early: an unexpected EOF
	rc := bucket.ResumableBody(t.Context(), first, info, reopen, bucket.ResumeOptions{Policy: fastPolicy()})
	got, err := io.ReadAll(rc)
	if !bytes.Equal(got, data[:40]) {
		t.Fatalf("read %q, want the first 40 bytes", got)
	}
	if !errors.Is(err, bucket.ErrTransient) || !errors.Is(err, syscall.ECONNRESET) || !strings.Contains(err.Error(), "k: gave up at byte 40 of 100 after 4 resumes") {
		t.Fatalf("error %v: want it to name the key and byte, wrap the reset, and be transient", err)
	}
	if want := []int64{10, 20, 30, 40, 40, 40, 40}; fmt.Sprint(offsets) != fmt.Sprint(want) {
		t.Fatalf("reopened at %v, want %v", offsets, want)
	}
}

// TestResumableBodyStopsWithItsContext: a canceled read does not resume.
func TestResumableBodyStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	data := []byte("0123456789")
	info := bucket.ObjectInfo{Key: "k", Size: 20, ETag: "e1"}
	reopened := 0
	rc := bucket.ResumableBody(ctx, &cutBody{r: bytes.NewReader(data), err: io.ErrUnexpectedEOF}, info,
		func(context.Context, int64) (io.ReadCloser, error) { reopened++; return nil, errors.New("unreachable") },
		bucket.ResumeOptions{Policy: fastPolicy()})
	buf := make([]byte, 10)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := rc.Read(buf); err == nil || reopened != 0 {
		t.Fatalf("read after cancel: %v, %d reopens; want the cut's error and none", err, reopened)
	}
}

// TestResumableBodyNeedsAVersion: without an ETag or a size there is no
// safe resume, and the body passes as it is.
func TestResumableBodyNeedsAVersion(t *testing.T) {
	body := &cutBody{r: bytes.NewReader(nil), err: io.EOF}
	reopen := func(context.Context, int64) (io.ReadCloser, error) { return nil, errors.New("never") }
	for _, info := range []bucket.ObjectInfo{{Key: "k", Size: 10}, {Key: "k", ETag: "e"}} {
		if rc := bucket.ResumableBody(t.Context(), body, info, reopen, bucket.ResumeOptions{}); rc != io.ReadCloser(body) {
			t.Errorf("%+v: body wrapped", info)
		}
	}
}
