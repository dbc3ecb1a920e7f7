package azblob_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/azblob"
	"github.com/cnvrg/capsule/internal/azuritetest"
	"github.com/cnvrg/capsule/internal/faultproxy"
)

// viaProxy returns a bucket on a fresh container reached through a fault
// proxy, and one that reaches the same container directly. The proxy
// reads Azure's path-style URLs (/ACCOUNT/CONTAINER/BLOB) as S3's: a blob
// GET is a GetObject of "CONTAINER/BLOB", a listing a GetObject of
// "CONTAINER".
func viaProxy(t *testing.T, seed uint64) (faulty, clean *azblob.Bucket, p *faultproxy.Proxy) {
	t.Helper()
	srv := azuritetest.Shared(t)
	name := srv.NewContainer(t)
	base, _ := strings.CutSuffix(srv.ServiceURL, "/"+srv.Account)
	p = faultproxy.Start(t, base, seed)
	clean = newBucket(t, srv, name)
	proxied := *srv
	proxied.ServiceURL = p.URL() + "/" + srv.Account
	return newBucket(t, &proxied, name), clean, p
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// blobGets selects GETs of blobs (not listings) whose name keys accepts.
func blobGets(keys func(string) bool) faultproxy.Filter {
	return faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.GetObject}, Keys: func(k string) bool {
		_, blob, ok := strings.Cut(k, "/")
		return ok && (keys == nil || keys(blob))
	}}
}

// TestGetResumesCutBodies: half of the GETs (resumes included) have
// their body cut part way. Every read through Get and GetBytesLimit must
// give the blob's exact bytes: the body resumes from the byte it reached,
// with a ranged GET of the same version.
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
	p.SetRules(faultproxy.Rule{Filter: blobGets(nil), Rate: 0.5, Kinds: []faultproxy.Kind{faultproxy.Cut}})
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

// TestResumeNeverSplicesAReplacedObject: the first GET's body is cut,
// and the blob is replaced before the resume reaches Azurite. The
// resume's If-Match gets 412: the read fails with bucket.ErrChanged,
// naming the blob, after delivering only bytes of the version it opened.
func TestResumeNeverSplicesAReplacedObject(t *testing.T) {
	b, clean, p := viaProxy(t, 1)
	const key = "data/replaced"
	old := randomBytes(2 << 20)
	if _, err := bucket.PutBytes(t.Context(), clean, key, old, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	p.SetRules(faultproxy.Rule{Filter: blobGets(nil), Rate: 1, Kinds: []faultproxy.Kind{faultproxy.Cut}})
	rc, _, err := b.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// The first answer is on its way, cut; park the resume until the
	// blob is replaced.
	p.Off()
	hold := p.Hold(blobGets(nil))
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
		t.Fatalf("read of a replaced blob: %d bytes, error %v; want an error naming %s that wraps bucket.ErrChanged", len(got), err, key)
	}
	if len(got) == 0 || len(got) >= len(old) || !bytes.Equal(got, old[:len(got)]) {
		t.Fatalf("read %d bytes before the error; want a part of the old version", len(got))
	}
	if errors.Is(err, bucket.ErrTransient) {
		t.Errorf("a replaced blob is not a transient failure: %v", err)
	}
}

// TestBrokenListingsAndErrorAnswersAreRetried: listings and the 404
// answers of missing blobs are GETs too, broken on the way: cut part way
// (an answer with a Content-Length), or reset after the server answered
// (Azurite sends these chunked, and the proxy cuts only what has a
// length). Both are repeated: List still lists, a missing blob is still
// ErrNotFound.
func TestBrokenListingsAndErrorAnswersAreRetried(t *testing.T) {
	b, clean, p := viaProxy(t, 5)
	for _, k := range []string{"l/a", "l/b", "l/c"} {
		if _, err := bucket.PutBytes(t.Context(), clean, k, []byte(k), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p.SetRules(faultproxy.Rule{Filter: faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.GetObject}}, Rate: 0.4, Kinds: []faultproxy.Kind{faultproxy.Cut}})
	for i := range 10 {
		page, err := b.List(t.Context(), "l/", bucket.ListOptions{})
		if err != nil || len(page.Objects) != 3 {
			t.Fatalf("list %d: %d objects, error %v", i, len(page.Objects), err)
		}
		if _, _, err := b.Get(t.Context(), "l/missing"); !errors.Is(err, bucket.ErrNotFound) {
			t.Fatalf("get %d of a missing blob: %v, want ErrNotFound", i, err)
		}
	}
	cutListings, cutBlobs := 0, 0
	for _, f := range p.Faults() {
		if strings.Contains(f.Key, "/") {
			cutBlobs++
		} else {
			cutListings++
		}
	}
	t.Logf("proxy: %s; %d listings and %d blob answers broken", p.Stats(), cutListings, cutBlobs)
	if cutListings == 0 || cutBlobs == 0 {
		t.Fatal("no listing or no 404 answer was cut: the test proves too little (change the seed)")
	}
}
