package gcs

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/gcstest"
)

// dropRetention removes the retention from the object resources a store
// returns for uploads, as a store that ignores it would.
type dropRetention struct{ base http.RoundTripper }

func (d dropRetention) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := d.base.RoundTrip(r)
	if err != nil || !strings.Contains(r.URL.Path, "/upload/") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if json.Unmarshal(body, &obj) == nil {
		delete(obj, "retention")
		body, _ = json.Marshal(obj)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}

// TestUnkeptRetentionFailsTheWrite: a write that asks for a retain-until
// date fails, naming the bucket and the setting, when the object the
// store made does not carry it, and that object is removed: capsule never
// believes retained what is not. (fake-gcs-server keeps retention, so a
// transport drops it from the answers here.) And where the store keeps it,
// the object carries the date in Locked mode.
func TestUnkeptRetentionFailsTheWrite(t *testing.T) {
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
	dropping := open(func(rt http.RoundTripper) http.RoundTripper { return dropRetention{rt} })
	keeping := open(nil)
	until := time.Now().Add(time.Hour).Truncate(time.Second)

	_, err := bucket.PutBytes(t.Context(), dropping, "put", []byte("x"), bucket.PutOptions{RetainUntil: until, IfNoneMatch: true})
	if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "object retention") {
		t.Fatalf("put whose retention the store dropped: %v; want an error naming the bucket and object retention", err)
	}
	u, err := dropping.Upload(t.Context(), "upload", bucket.PutOptions{RetainUntil: until})
	if err != nil {
		t.Fatal(err)
	}
	u.Write(bytes.Repeat([]byte("y"), 2*MinChunkSize+1))
	if _, err := u.Commit(); err == nil {
		t.Fatal("upload whose retention the store dropped: committed")
	}
	for _, key := range []string{"put", "upload"} {
		if _, err := keeping.Head(t.Context(), key); !errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("%s after the failed write: %v, want it removed", key, err)
		}
	}

	if _, err := bucket.PutBytes(t.Context(), keeping, "kept", []byte("z"), bucket.PutOptions{RetainUntil: until}); err != nil {
		t.Fatal(err)
	}
	a, err := keeping.bkt.Object("kept").Attrs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if a.Retention == nil || a.Retention.Mode != "Locked" || !a.Retention.RetainUntil.Equal(until) {
		t.Fatalf("retention of the object: %+v, want Locked until %s", a.Retention, until)
	}
}
