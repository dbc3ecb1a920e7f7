package gcs_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/internal/gcstest"
)

// viaProxy returns a bucket on a fresh fake-gcs-server bucket reached
// through a fault proxy, and one that reaches the same bucket directly.
func viaProxy(t *testing.T, seed uint64) (faulty, clean *gcs.Bucket, p *faultproxy.Proxy) {
	t.Helper()
	srv := gcstest.Shared(t)
	name := srv.NewBucket(t)
	p = faultproxy.Start(t, srv.Endpoint, seed)
	return newBucket(t, p.URL(), name), newBucket(t, srv.Endpoint, name), p
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// objectReads selects the GETs that read an object's bytes: the Go client
// reads through the XML API (GET /BUCKET/OBJECT), which the proxy, made
// for S3's path-style requests, classifies as GetObject. JSON API calls
// (/storage/v1/...) are left alone.
func objectReads() faultproxy.Filter {
	return faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.GetObject}, Keys: func(key string) bool {
		return !strings.HasPrefix(key, "v1/")
	}}
}

// TestGetResumesCutBodies: half of the reads (resumes included) have
// their body cut part way. Every read through Get and GetBytesLimit must
// give the object's exact bytes: the body resumes from the byte it
// reached, from the same generation.
func TestGetResumesCutBodies(t *testing.T) {
	b, clean, p := viaProxy(t, 3)
	objects := map[string][]byte{
		"data/large": randomBytes(5 << 20),
		"data/small": []byte(`{"apiVersion":"capsule/v1","kind":"Result","id":"01abc","status":"succeeded","attempts":1,"worker":"w1"}`),
	}
	for key, data := range objects {
		if _, err := bucket.PutBytes(t.Context(), clean, key, data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p.SetRules(faultproxy.Rule{Filter: objectReads(), Rate: 0.5, Kinds: []faultproxy.Kind{faultproxy.Cut}})
	const reads = 8
	for i := range reads {
		for key, want := range objects {
			rc, info, err := b.Get(t.Context(), key)
			if err != nil {
				t.Fatalf("get %s: %v", key, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, want) || info.Size != int64(len(want)) {
				t.Fatalf("read %d of %s: %d bytes (equal: %v), error %v; want its %d bytes", i, key, len(got), bytes.Equal(got, want), err, len(want))
			}
			got, _, err = bucket.GetBytesLimit(t.Context(), b, key, int64(len(want)))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("GetBytesLimit %d of %s: %d bytes (equal: %v), error %v", i, key, len(got), bytes.Equal(got, want), err)
			}
		}
	}
	stats := p.Stats()
	t.Logf("proxy: %s", stats)
	if cuts := stats.Of(faultproxy.Cut); cuts < reads {
		t.Fatalf("only %d bodies cut: the test proves too little (change the seed)", cuts)
	}
	if opened := 2 * reads * len(objects); stats.Requests[faultproxy.GetObject] <= opened {
		t.Fatalf("%d GETs for %d reads: no resume happened", stats.Requests[faultproxy.GetObject], opened)
	}
}

// TestResumeNeverSplicesAReplacedObject: the first read's body is cut,
// and the object is replaced before the resume reaches the store. The
// resume asks for the generation it opened, which is gone: the read
// fails with bucket.ErrChanged, naming the object, after delivering only
// bytes of the version it opened.
func TestResumeNeverSplicesAReplacedObject(t *testing.T) {
	b, clean, p := viaProxy(t, 1)
	const key = "data/replaced"
	old := randomBytes(2 << 20)
	if _, err := bucket.PutBytes(t.Context(), clean, key, old, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	p.SetRules(faultproxy.Rule{Filter: objectReads(), Rate: 1, Kinds: []faultproxy.Kind{faultproxy.Cut}})
	rc, _, err := b.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// The first answer is on its way, cut; park the resume until the
	// object is replaced.
	p.Off()
	hold := p.Hold(objectReads())
	replaced := make(chan error, 1)
	readDone := make(chan struct{})
	go func() {
		defer hold.Release()
		select {
		case <-hold.Held():
		case <-readDone:
			replaced <- errors.New("the read ended without a resume")
			return
		}
		_, err := bucket.PutBytes(t.Context(), clean, key, randomBytes(len(old)), bucket.PutOptions{})
		replaced <- err
	}()
	got, err := io.ReadAll(rc)
	close(readDone)
	if perr := <-replaced; perr != nil {
		t.Fatalf("%v (read %d bytes, error %v)", perr, len(got), err)
	}
	if !errors.Is(err, bucket.ErrChanged) || !strings.Contains(err.Error(), key) {
		t.Fatalf("read of a replaced object: %d bytes, error %v; want an error naming %s that wraps bucket.ErrChanged", len(got), err, key)
	}
	if len(got) == 0 || len(got) >= len(old) || !bytes.Equal(got, old[:len(got)]) {
		t.Fatalf("read %d bytes before the error; want a part of the old version", len(got))
	}
	t.Logf("%d bytes read, then: %v", len(got), err)
	if errors.Is(err, bucket.ErrTransient) {
		t.Errorf("a replaced object is not a transient failure: %v", err)
	}
}
