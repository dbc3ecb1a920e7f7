package faultproxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/buckettest"
	capsules3 "github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/internal/s3test"
)

// world is a bucket on the real versitygw, a proxy in front of it, an SDK
// client through the proxy (no retries: every fault shows) and one that
// goes straight to the server (to see what was applied).
type world struct {
	bucket string
	proxy  *faultproxy.Proxy
	via    *s3.Client
	direct *s3.Client
}

func sdkClient(srv *s3test.Server, endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region:       srv.Region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, ""),
		Retryer:      aws.NopRetryer{},
	})
}

func newWorld(t *testing.T, seed uint64) *world {
	t.Helper()
	srv := s3test.Shared(t)
	p := faultproxy.Start(t, srv.Endpoint, seed)
	return &world{bucket: srv.NewBucket(t), proxy: p, via: sdkClient(srv, p.URL()), direct: sdkClient(srv, srv.Endpoint)}
}

func (w *world) put(t *testing.T, c *s3.Client, key string, data []byte) error {
	t.Helper()
	_, err := c.PutObject(t.Context(), &s3.PutObjectInput{Bucket: &w.bucket, Key: &key, Body: bytes.NewReader(data)})
	return err
}

// stored reads key straight from the server; nil when it is missing.
func (w *world) stored(t *testing.T, key string) []byte {
	t.Helper()
	out, err := w.direct.GetObject(t.Context(), &s3.GetObjectInput{Bucket: &w.bucket, Key: &key})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil
	}
	if err != nil {
		t.Fatalf("get %s from the server: %v", key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("read %s from the server: %v", key, err)
	}
	return data
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func apiError(err error) (code string, status int) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}

// TestConformanceThroughProxy runs the bucket conformance suite with
// capsule's S3 bucket (aws-sdk-go-v2, SigV4) pointed at the proxy with no
// fault: the proxy passes signed requests, multipart uploads and
// conditional writes unchanged.
func TestConformanceThroughProxy(t *testing.T) {
	srv := s3test.Shared(t)
	p := faultproxy.Start(t, srv.Endpoint, 1)
	name := srv.NewBucket(t)
	log := logrus.New()
	log.Out = t.Output()
	buckettest.Run(t, func(t *testing.T) bucket.Bucket {
		b, err := capsules3.New(t.Context(), capsules3.Options{
			Bucket: name, Endpoint: p.URL(), Region: srv.Region,
			AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
			PartSize: capsules3.MinPartSize, Log: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
	st := p.Stats()
	t.Logf("through the proxy: %s", st)
	if st.Total() != 0 {
		t.Errorf("%d faults injected with no rule", st.Total())
	}
	for _, op := range []faultproxy.Op{faultproxy.GetObject, faultproxy.HeadObject, faultproxy.PutObject, faultproxy.ConditionalPut,
		faultproxy.CreateMultipartUpload, faultproxy.UploadPart, faultproxy.CompleteMultipartUpload,
		faultproxy.ListObjectsV2, faultproxy.DeleteObject} {
		if st.Requests[op] == 0 {
			t.Errorf("no %s went through the proxy", op)
		}
	}
}

// TestClassify sends each operation through the proxy with the SDK and
// checks the one operation the proxy counted for it.
func TestClassify(t *testing.T) {
	w := newWorld(t, 1)
	ctx := t.Context()
	b := &w.bucket
	key := aws.String("dir/obj")
	part := randomBytes(capsules3.MinPartSize)
	var upload *s3.CreateMultipartUploadOutput
	var etag *string
	steps := []struct {
		op   faultproxy.Op
		call func() error
	}{
		{faultproxy.PutObject, func() error { return w.put(t, w.via, *key, []byte("one")) }},
		{faultproxy.ConditionalPut, func() error {
			_, err := w.via.PutObject(ctx, &s3.PutObjectInput{Bucket: b, Key: aws.String("dir/new"), Body: strings.NewReader("x"), IfNoneMatch: aws.String("*")})
			return err
		}},
		{faultproxy.GetObject, func() error {
			out, err := w.via.GetObject(ctx, &s3.GetObjectInput{Bucket: b, Key: key})
			if err == nil {
				etag = out.ETag
				out.Body.Close()
			}
			return err
		}},
		{faultproxy.ConditionalPut, func() error {
			_, err := w.via.PutObject(ctx, &s3.PutObjectInput{Bucket: b, Key: key, Body: strings.NewReader("two"), IfMatch: etag})
			return err
		}},
		{faultproxy.HeadObject, func() error { _, err := w.via.HeadObject(ctx, &s3.HeadObjectInput{Bucket: b, Key: key}); return err }},
		{faultproxy.ListObjectsV2, func() error {
			_, err := w.via.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: b, Prefix: aws.String("dir/")})
			return err
		}},
		{faultproxy.CreateMultipartUpload, func() (err error) {
			upload, err = w.via.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: b, Key: aws.String("dir/big")})
			return err
		}},
		{faultproxy.UploadPart, func() error {
			out, err := w.via.UploadPart(ctx, &s3.UploadPartInput{Bucket: b, Key: aws.String("dir/big"), UploadId: upload.UploadId, PartNumber: aws.Int32(1), Body: bytes.NewReader(part)})
			if err == nil {
				etag = out.ETag
			}
			return err
		}},
		{faultproxy.ListParts, func() error {
			_, err := w.via.ListParts(ctx, &s3.ListPartsInput{Bucket: b, Key: aws.String("dir/big"), UploadId: upload.UploadId})
			return err
		}},
		{faultproxy.ListMultipartUploads, func() error {
			_, err := w.via.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: b, Prefix: aws.String("dir/")})
			return err
		}},
		{faultproxy.CompleteMultipartUpload, func() error {
			_, err := w.via.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: b, Key: aws.String("dir/big"), UploadId: upload.UploadId,
				MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{ETag: etag, PartNumber: aws.Int32(1)}}}})
			return err
		}},
		{faultproxy.CreateMultipartUpload, func() (err error) {
			upload, err = w.via.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: b, Key: aws.String("dir/aborted")})
			return err
		}},
		{faultproxy.AbortMultipartUpload, func() error {
			_, err := w.via.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: b, Key: aws.String("dir/aborted"), UploadId: upload.UploadId})
			return err
		}},
		{faultproxy.DeleteObject, func() error {
			_, err := w.via.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: b, Key: key})
			return err
		}},
	}
	for i, s := range steps {
		before := w.proxy.Stats().Requests
		if err := s.call(); err != nil {
			t.Fatalf("step %d (%s): %v", i, s.op, err)
		}
		after := w.proxy.Stats().Requests
		for op, n := range after {
			want := before[op]
			if op == s.op {
				want++
			}
			if n != want {
				t.Errorf("step %d (%s): the proxy counted %d %s, want %d", i, s.op, n-before[op], op, want-before[op])
			}
		}
	}
}

func TestKeyFilters(t *testing.T) {
	for _, c := range []struct {
		key               string
		artifact, control bool
	}{
		{"capsule-ab/backups/e2e/data/01j/1/data.tar.zst", true, false},
		{"backups/e2e/data/01j/2/dump.pgc", true, false},
		{"capsule-ab/backups/e2e/data/01j/backupIndex.json", false, false},
		{"capsule-ab/backups/e2e/leases/01j/1/data.tar.zst", true, false},
		{"capsule-ab/leases/01j.json", false, true},
		{"requests/01j.json", false, true},
		{"capsule-ab/results/01j.json", false, true},
		{"capsule-ab/locks/gc.json", false, true},
		{"capsule-ab/mybackups/x", false, false},
	} {
		if got := faultproxy.Artifacts(c.key); got != c.artifact {
			t.Errorf("Artifacts(%q) = %v", c.key, got)
		}
		if got := faultproxy.Control(c.key); got != c.control {
			t.Errorf("Control(%q) = %v", c.key, got)
		}
	}
	if !faultproxy.Under("leases/")("p/leases/x.json") || faultproxy.Under("leases/")("p/myleases/x.json") {
		t.Error("Under matches the wrong keys")
	}
}

// TestFilteredRule: a rule on artifact GETs faults those only.
func TestFilteredRule(t *testing.T) {
	w := newWorld(t, 1)
	art, idx, res := "p/backups/c/s/id/1/data.tar.zst", "p/backups/c/s/id/backupIndex.json", "p/results/id.json"
	for _, k := range []string{art, idx, res} {
		if err := w.put(t, w.direct, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	w.proxy.SetRules(faultproxy.Rule{Filter: faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.GetObject}, Keys: faultproxy.Artifacts}, Rate: 1, Kinds: []faultproxy.Kind{faultproxy.SlowDown}})
	get := func(k string) error {
		out, err := w.via.GetObject(t.Context(), &s3.GetObjectInput{Bucket: &w.bucket, Key: &k})
		if err == nil {
			out.Body.Close()
		}
		return err
	}
	if code, _ := apiError(get(art)); code != "SlowDown" {
		t.Errorf("artifact GET: code %q, want SlowDown", code)
	}
	for _, k := range []string{idx, res} {
		if err := get(k); err != nil {
			t.Errorf("GET %s: %v", k, err)
		}
	}
	if err := w.put(t, w.via, art+".2", []byte("x")); err != nil {
		t.Errorf("artifact PUT (not selected): %v", err)
	}
	st := w.proxy.Stats()
	if st.Total() != 1 || st.Matched[faultproxy.GetObject] != 1 || st.Requests[faultproxy.GetObject] != 3 {
		t.Errorf("stats %s: want 3 GETs, 1 matched and faulted", st)
	}
}

// TestFaultKinds performs each kind of fault on a PutObject (or a GET for
// the cut) against the real server and checks what the client saw and
// what the server kept.
func TestFaultKinds(t *testing.T) {
	w := newWorld(t, 7)
	noAnswer := func(t *testing.T, err error) {
		t.Helper()
		// The SDK wraps a send error in a ResponseError with no
		// response (status 0).
		if code, status := apiError(err); err == nil || code != "" || status != 0 {
			t.Fatalf("got %v, want a connection error with no HTTP answer", err)
		}
	}
	answer := func(code string, status int) func(*testing.T, error) {
		return func(t *testing.T, err error) {
			t.Helper()
			if c, s := apiError(err); c != code || s != status {
				t.Fatalf("got %v (code %q, status %d), want %s %d", err, c, s, code, status)
			}
		}
	}
	for _, c := range []struct {
		kind    faultproxy.Kind
		check   func(*testing.T, error)
		applied bool
	}{
		{faultproxy.SlowDown, answer("SlowDown", 503), false},
		{faultproxy.InternalError, answer("InternalError", 500), false},
		{faultproxy.Reset, noAnswer, false},
		{faultproxy.AppliedReset, noAnswer, true},
		{faultproxy.AppliedError, answer("InternalError", 500), true},
	} {
		t.Run(string(c.kind), func(t *testing.T) {
			key := "kinds/" + string(c.kind)
			// Large enough that the request is still being sent when a
			// reset comes.
			data := randomBytes(1 << 20)
			w.proxy.SetRules(faultproxy.Rule{Filter: faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.PutObject}}, Rate: 1, Kinds: []faultproxy.Kind{c.kind}})
			before := w.proxy.Stats().Of(c.kind)
			err := w.put(t, w.via, key, data)
			w.proxy.Off()
			c.check(t, err)
			got := w.stored(t, key)
			switch {
			case c.applied && !bytes.Equal(got, data):
				t.Errorf("the write was not applied (%d bytes stored)", len(got))
			case !c.applied && got != nil:
				t.Errorf("the write reached the server")
			}
			if n := w.proxy.Stats().Of(c.kind) - before; n != 1 {
				t.Errorf("counted %d %s faults, want 1", n, c.kind)
			}
		})
	}

	t.Run("cut", func(t *testing.T) {
		key := "kinds/cut"
		data := randomBytes(256 << 10)
		if err := w.put(t, w.direct, key, data); err != nil {
			t.Fatal(err)
		}
		w.proxy.SetRules(faultproxy.Rule{Rate: 1, Kinds: []faultproxy.Kind{faultproxy.Cut}})
		defer w.proxy.Off()
		// A PUT cannot be cut: with no other kind allowed it passes.
		if err := w.put(t, w.via, key+".put", []byte("x")); err != nil {
			t.Fatalf("PUT under a cut-only rule: %v", err)
		}
		out, err := w.via.GetObject(t.Context(), &s3.GetObjectInput{Bucket: &w.bucket, Key: &key})
		if err != nil {
			t.Fatalf("the headers of a cut answer should arrive: %v", err)
		}
		if aws.ToInt64(out.ContentLength) != int64(len(data)) {
			t.Errorf("Content-Length %d, want %d", aws.ToInt64(out.ContentLength), len(data))
		}
		got, err := io.ReadAll(out.Body)
		out.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reading the cut body: %v, want unexpected EOF", err)
		}
		if len(got) == 0 || len(got) >= len(data) || !bytes.Equal(got, data[:len(got)]) {
			t.Errorf("read %d of %d bytes, want a true prefix", len(got), len(data))
		}
		f := w.proxy.Faults()
		if last := f[len(f)-1]; last.Kind != faultproxy.Cut || last.Op != faultproxy.GetObject || !strings.HasPrefix(last.Detail, strconv.Itoa(len(got))+" of ") {
			t.Errorf("last fault %+v, want a cut GetObject after %d bytes", last, len(got))
		}
	})

	t.Run("slow", func(t *testing.T) {
		key := "kinds/slow"
		const delay = 300 * time.Millisecond
		w.proxy.SetRules(faultproxy.Rule{Rate: 1, Kinds: []faultproxy.Kind{faultproxy.Slow}, Delay: delay})
		defer w.proxy.Off()
		start := time.Now()
		if err := w.put(t, w.via, key, []byte("slow")); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < delay {
			t.Errorf("answered after %s, want at least %s", d, delay)
		}
		if got := w.stored(t, key); string(got) != "slow" {
			t.Errorf("stored %q", got)
		}
	})
}

// outcomes sends n HEADs through p, one after another, and says which
// got a fault.
func outcomes(t *testing.T, w *world, n int) []bool {
	t.Helper()
	got := make([]bool, n)
	for i := range got {
		_, err := w.via.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: &w.bucket, Key: aws.String("seed/x")})
		code, status := apiError(err)
		switch {
		case status == 503:
			got[i] = true
		case code != "NotFound" && status != 404:
			t.Fatalf("HEAD %d: %v", i, err)
		}
	}
	return got
}

// TestSeedDecides: the same seed gives the same sequence of faults for the
// same sequence of requests; another seed another one.
func TestSeedDecides(t *testing.T) {
	rule := faultproxy.Rule{Rate: 0.5, Kinds: []faultproxy.Kind{faultproxy.SlowDown}}
	run := func(seed uint64) []bool {
		w := newWorld(t, seed)
		w.proxy.SetRules(rule)
		return outcomes(t, w, 40)
	}
	a, b, c := run(42), run(42), run(43)
	faults := 0
	for i := range a {
		if a[i] {
			faults++
		}
	}
	if faults == 0 || faults == len(a) {
		t.Fatalf("%d faults of %d at rate 0.5", faults, len(a))
	}
	if !equal(a, b) {
		t.Errorf("seed 42 twice: %v and %v", a, b)
	}
	if equal(a, c) {
		t.Errorf("seeds 42 and 43 gave the same 40 outcomes")
	}
}

func equal(a, b []bool) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

// TestRulesChangeAtRuntime: rules are replaced and removed while the proxy
// runs, and the counters follow.
func TestRulesChangeAtRuntime(t *testing.T) {
	w := newWorld(t, 1)
	w.proxy.SetRules(faultproxy.Rule{Rate: 1, Kinds: []faultproxy.Kind{faultproxy.InternalError}})
	if code, _ := apiError(w.put(t, w.via, "rt/a", []byte("a"))); code != "InternalError" {
		t.Fatalf("rate 1: code %q", code)
	}
	w.proxy.SetRules(faultproxy.Rule{Filter: faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.GetObject}}, Rate: 1})
	if err := w.put(t, w.via, "rt/a", []byte("a")); err != nil {
		t.Fatalf("a PUT under a GET rule: %v", err)
	}
	w.proxy.Off()
	if _, err := w.via.GetObject(t.Context(), &s3.GetObjectInput{Bucket: &w.bucket, Key: aws.String("rt/a")}); err != nil {
		t.Fatalf("after Off: %v", err)
	}
	st := w.proxy.Stats()
	if st.Total() != 1 || st.Faults[faultproxy.PutObject][faultproxy.InternalError] != 1 || st.Requests[faultproxy.PutObject] != 2 {
		t.Errorf("stats %s", st)
	}
}

// TestHold parks a GET until it is released.
func TestHold(t *testing.T) {
	w := newWorld(t, 1)
	if err := w.put(t, w.direct, "hold/a", []byte("held")); err != nil {
		t.Fatal(err)
	}
	h := w.proxy.Hold(faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.GetObject}, Keys: faultproxy.Under("hold/")})
	var wg sync.WaitGroup
	var got []byte
	var gerr error
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		out, err := w.via.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &w.bucket, Key: aws.String("hold/a")})
		if err != nil {
			gerr = err
			return
		}
		defer out.Body.Close()
		got, gerr = io.ReadAll(out.Body)
	}()
	<-h.Held()
	// Other requests pass meanwhile.
	if err := w.put(t, w.via, "hold/b", []byte("b")); err != nil {
		t.Fatalf("a PUT while a GET is held: %v", err)
	}
	select {
	case <-done:
		t.Fatal("the held GET finished before Release")
	default:
	}
	h.Release()
	wg.Wait()
	if gerr != nil || string(got) != "held" {
		t.Fatalf("released GET: %q, %v", got, gerr)
	}
	if h.Count() != 1 {
		t.Errorf("held %d requests, want 1", h.Count())
	}
}
