package bucketcheck_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/azblob"
	"github.com/cnvrg/capsule/bucket/bucketcheck"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/internal/azuritetest"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/internal/gcstest"
	"github.com/cnvrg/capsule/internal/s3test"
)

func testLogger(t *testing.T) logrus.FieldLogger {
	l := logrus.New()
	l.Out = t.Output()
	return l
}

// s3Bucket is a fresh versitygw bucket, reached at endpoint (the server's,
// or a proxy's in front of it), scoped to capsule/ as bucketurl does.
func s3Bucket(t *testing.T, srv *s3test.Server, endpoint, name string) (bucket.Bucket, *s3.Bucket) {
	t.Helper()
	raw, err := s3.New(t.Context(), s3.Options{
		Bucket: name, Endpoint: endpoint, Region: srv.Region,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize, Log: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return bucket.Prefixed(raw, "capsule/"), raw
}

// withProxy is the shared versitygw, a fresh bucket, and a proxy in front
// with the given quirks.
func withProxy(t *testing.T, quirks ...faultproxy.Quirk) (via, direct bucket.Bucket, p *faultproxy.Proxy) {
	t.Helper()
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	p = faultproxy.Start(t, srv.Endpoint, 7)
	p.SetQuirks(faultproxy.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region}, quirks...)
	via, _ = s3Bucket(t, srv, p.URL(), name)
	direct, _ = s3Bucket(t, srv, srv.Endpoint, name)
	return via, direct, p
}

// multipart is more than one part of the test buckets (s3.MinPartSize).
const multipart = s3.MinPartSize + 4<<10

func full() bucketcheck.Options {
	o := bucketcheck.Full()
	o.Rounds = 3
	o.UploadSize = multipart
	return o
}

func checksumProbe(raw *s3.Bucket) func(context.Context, string) (bucketcheck.Result, error) {
	return func(ctx context.Context, key string) (bucketcheck.Result, error) {
		p, err := raw.ProbeChecksums(ctx, "capsule/"+key)
		return bucketcheck.Result{Status: bucketcheck.Info, Detail: p.String()}, err
	}
}

func show(t *testing.T, rep *bucketcheck.Report) {
	t.Helper()
	t.Logf("check of %s: safe %v in %.3fs", rep.Prefix, rep.Safe, rep.Seconds)
	for _, r := range rep.Results {
		t.Logf("%-18s %-4s critical=%-5v %s", r.Property, r.Status, r.Critical, r.Detail)
	}
}

func want(t *testing.T, rep *bucketcheck.Report, prop string, status bucketcheck.Status, detail string) bucketcheck.Result {
	t.Helper()
	r, ok := rep.Result(prop)
	if !ok {
		t.Fatalf("no result for %s", prop)
	}
	if r.Status != status || !strings.Contains(r.Detail, detail) {
		t.Errorf("%s: %s %q, want %s with %q", prop, r.Status, r.Detail, status, detail)
	}
	return r
}

// left lists what is under check/ and the open uploads there.
func left(t *testing.T, b bucket.Bucket) []string {
	t.Helper()
	var keys []string
	if err := bucket.Walk(context.Background(), b, bucketcheck.Folder, func(o bucket.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if ul, ok := b.(bucket.UploadLister); ok {
		ups, err := ul.ListUploads(context.Background(), bucketcheck.Folder)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range ups {
			keys = append(keys, "upload "+u.Key)
		}
	}
	return keys
}

func wantSafe(t *testing.T, rep *bucketcheck.Report, err error) {
	t.Helper()
	show(t, rep)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if !rep.Safe || rep.Err() != nil {
		t.Fatalf("safe %v: %v", rep.Safe, rep.Err())
	}
	for _, r := range rep.Results {
		if r.Status != bucketcheck.Pass && r.Status != bucketcheck.Info {
			t.Errorf("%s: %s: %s", r.Property, r.Status, r.Detail)
		}
	}
}

func TestSafeOnDirectory(t *testing.T) {
	raw, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(raw, "capsule/")
	rep, err := bucketcheck.Run(t.Context(), b, full())
	wantSafe(t, rep, err)
	for _, p := range []string{bucketcheck.CreateOnly, bucketcheck.IfMatch, bucketcheck.ConditionalUpload, bucketcheck.PendingUploads, bucketcheck.ClockSkew, bucketcheck.Cleanup} {
		want(t, rep, p, bucketcheck.Pass, "")
	}
	if l := left(t, b); len(l) > 0 {
		t.Errorf("left behind: %q", l)
	}
}

func TestSafeOnVersitygw(t *testing.T) {
	srv := s3test.Shared(t)
	b, raw := s3Bucket(t, srv, srv.Endpoint, srv.NewBucket(t))
	o := full()
	o.Checksums = checksumProbe(raw)
	rep, err := bucketcheck.Run(t.Context(), b, o)
	wantSafe(t, rep, err)
	want(t, rep, bucketcheck.ConditionalUpload, bucketcheck.Pass, "5124 KiB")
	want(t, rep, bucketcheck.PendingUploads, bucketcheck.Pass, "listed under its folder")
	want(t, rep, bucketcheck.Checksums, bucketcheck.Info, "accepts a CRC32 checksum on a write and returns it")
	if rep.ClockSkewSeconds == nil {
		t.Errorf("no clock skew measured")
	}
	if l := left(t, b); len(l) > 0 {
		t.Errorf("left behind: %q", l)
	}
}

// TestStartupIsSafeOnVersitygw: the worker's part passes too, and does
// not list uploads.
func TestStartupIsSafeOnVersitygw(t *testing.T) {
	srv := s3test.Shared(t)
	b, _ := s3Bucket(t, srv, srv.Endpoint, srv.NewBucket(t))
	rep, err := bucketcheck.Run(t.Context(), b, bucketcheck.Startup())
	wantSafe(t, rep, err)
	if _, ok := rep.Result(bucketcheck.PendingUploads); ok {
		t.Errorf("the start-up check lists uploads")
	}
}

// TestIgnoredIfNoneMatchIsUnsafe: in front of versitygw, a proxy drops
// If-None-Match from every write, as Google Cloud Storage's S3 interface
// ignores it. Every writer of a race wins: the check must say the bucket
// is unsafe and name the property, and leave nothing behind.
func TestIgnoredIfNoneMatchIsUnsafe(t *testing.T) {
	via, direct, p := withProxy(t, faultproxy.IgnoreIfNoneMatch)
	rep, err := bucketcheck.Run(t.Context(), via, full())
	show(t, rep)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if rep.Safe {
		t.Fatalf("a bucket that ignores If-None-Match passed")
	}
	want(t, rep, bucketcheck.CreateOnly, bucketcheck.Fail, "create-only writes are not exclusive (8 of 8 writers won in round 1)")
	want(t, rep, bucketcheck.ConditionalUpload, bucketcheck.Fail, "a create-only streaming upload over an existing object succeeded")
	want(t, rep, bucketcheck.IfMatch, bucketcheck.Pass, "")
	err = rep.Err()
	if !errors.Is(err, bucketcheck.ErrUnsafe) || !strings.Contains(err.Error(), "create-only writes are not exclusive") {
		t.Errorf("Err() = %v", err)
	}
	if p.Stats().Quirks[faultproxy.IgnoreIfNoneMatch] == 0 {
		t.Errorf("no request lost its If-None-Match at the proxy")
	}
	if l := left(t, direct); len(l) > 0 {
		t.Errorf("left behind: %q", l)
	}
}

// TestIgnoredIfMatchIsUnsafe: a server that ignores If-Match lets a stale
// compare-and-swap through.
func TestIgnoredIfMatchIsUnsafe(t *testing.T) {
	via, _, _ := withProxy(t, faultproxy.IgnoreIfMatch)
	rep, err := bucketcheck.Run(t.Context(), via, bucketcheck.Startup())
	show(t, rep)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	want(t, rep, bucketcheck.IfMatch, bucketcheck.Fail, "an If-Match write with a stale ETag succeeded")
	want(t, rep, bucketcheck.CreateOnly, bucketcheck.Pass, "")
	if rep.Safe || !errors.Is(rep.Err(), bucketcheck.ErrUnsafe) {
		t.Errorf("safe %v, %v", rep.Safe, rep.Err())
	}
}

// TestRefusedConditionalWritesAreUnsafe: Backblaze B2 answers a
// conditional write 501 NotImplemented. That is a finding (the bucket is
// unsafe), not a passing fault to retry until the check gives up.
func TestRefusedConditionalWritesAreUnsafe(t *testing.T) {
	via, direct, _ := withProxy(t, faultproxy.RejectConditional)
	rep, err := bucketcheck.Run(t.Context(), via, bucketcheck.Startup())
	show(t, rep)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	want(t, rep, bucketcheck.CreateOnly, bucketcheck.Fail, "create-only writes are refused (8 of 8 writers in round 1)")
	want(t, rep, bucketcheck.CreateOnly, bucketcheck.Fail, "NotImplemented")
	if rep.Safe {
		t.Errorf("safe")
	}
	if l := left(t, direct); len(l) > 0 {
		t.Errorf("left behind: %q", l)
	}
}

// TestUploadsListedByKeyOnly: on a server that lists open uploads only
// for a whole key (MinIO), the S3 bucket still finds an upload by its
// folder.
func TestUploadsListedByKeyOnly(t *testing.T) {
	via, direct, p := withProxy(t, faultproxy.UploadsByKeyOnly)
	rep, err := bucketcheck.Run(t.Context(), via, full())
	wantSafe(t, rep, err)
	want(t, rep, bucketcheck.PendingUploads, bucketcheck.Pass, "listed under its folder")
	if p.Stats().Quirks[faultproxy.UploadsByKeyOnly] == 0 {
		t.Errorf("no listing went through the quirk")
	}
	if l := left(t, direct); len(l) > 0 {
		t.Errorf("left behind: %q", l)
	}
}

// TestClockSkew: this machine's clock two minutes behind the bucket's
// fails the check; twenty seconds is a warning.
func TestClockSkew(t *testing.T) {
	srv := s3test.Shared(t)
	b, _ := s3Bucket(t, srv, srv.Endpoint, srv.NewBucket(t))
	for _, c := range []struct {
		off    time.Duration
		status bucketcheck.Status
		detail string
	}{
		{-2 * time.Minute, bucketcheck.Fail, "ahead of this machine's"},
		{2 * time.Minute, bucketcheck.Fail, "behind this machine's"},
		{20 * time.Second, bucketcheck.Warn, "more than 10s"},
	} {
		o := bucketcheck.Startup()
		o.Now = func() time.Time { return time.Now().Add(c.off) }
		rep, err := bucketcheck.Run(t.Context(), b, o)
		show(t, rep)
		if err != nil {
			t.Fatal(err)
		}
		want(t, rep, bucketcheck.ClockSkew, c.status, c.detail)
		if safe := c.status != bucketcheck.Fail; rep.Safe != safe {
			t.Errorf("clock %s off: safe %v, want %v", c.off, rep.Safe, safe)
		}
		if s := rep.ClockSkewSeconds; s == nil || (*s+c.off.Seconds()) > 2 || (*s+c.off.Seconds()) < -2 {
			t.Errorf("clock %s off: measured skew %v", c.off, s)
		}
	}
}

// TestCleanupWhenCanceled: a check whose context ends half way still
// removes what it wrote.
func TestCleanupWhenCanceled(t *testing.T) {
	srv := s3test.Shared(t)
	b, _ := s3Bucket(t, srv, srv.Endpoint, srv.NewBucket(t))
	ctx, cancel := context.WithCancel(t.Context())
	o := bucketcheck.Startup()
	o.Checksums = func(ctx context.Context, key string) (bucketcheck.Result, error) {
		cancel()
		return bucketcheck.Result{}, ctx.Err()
	}
	rep, err := bucketcheck.Run(ctx, b, o)
	show(t, rep)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("check: %v, want canceled", err)
	}
	if rep.Safe {
		t.Errorf("a check that did not finish says safe")
	}
	want(t, rep, bucketcheck.Checksums, bucketcheck.Skip, "not finished")
	want(t, rep, bucketcheck.Cleanup, bucketcheck.Pass, "removed the")
	if l := left(t, b); len(l) > 0 {
		t.Errorf("left behind: %q", l)
	}
}

// TestSweepsCrashedChecks: what a check that crashed left (older than an
// hour) is removed by the next; a younger folder (a check running now)
// stays.
func TestSweepsCrashedChecks(t *testing.T) {
	dir := t.TempDir()
	raw, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(raw, "capsule/")
	for _, k := range []string{"check/crashed/race-1", "check/crashed/cas-2", "check/running/race-1"} {
		if _, err := bucket.PutBytes(t.Context(), b, k, []byte("x"), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, k := range []string{"check/crashed/race-1", "check/crashed/cas-2"} {
		if err := os.Chtimes(filepath.Join(dir, "capsule", k), old, old); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := bucketcheck.Run(t.Context(), b, bucketcheck.Startup())
	wantSafe(t, rep, err)
	want(t, rep, bucketcheck.Cleanup, bucketcheck.Pass, "and 2 left by earlier checks")
	if l := left(t, b); len(l) != 1 || l[0] != "check/running/race-1" {
		t.Errorf("left: %q, want only the running check's object", l)
	}
}

// TestSafeOnAzurite: the full check passes on the Azure Blob backend
// (Azurite): create-only and If-Match races have one winner, a streamed
// upload keeps its conditions, and uncommitted blocks are listed as the
// open uploads they stand for.
func TestSafeOnAzurite(t *testing.T) {
	srv := azuritetest.Shared(t)
	raw, err := azblob.New(azblob.Options{
		Container: srv.NewContainer(t), ServiceURL: srv.ServiceURL,
		Account: srv.Account, AccountKey: srv.Key, BlockSize: 1 << 20, Log: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(raw, "capsule/")
	o := full()
	o.UploadSize = 2<<20 + 4<<10 // three blocks
	rep, err := bucketcheck.Run(t.Context(), b, o)
	wantSafe(t, rep, err)
	for _, p := range []string{bucketcheck.CreateOnly, bucketcheck.IfMatch, bucketcheck.ConditionalUpload, bucketcheck.ClockSkew, bucketcheck.Cleanup} {
		want(t, rep, p, bucketcheck.Pass, "")
	}
	if l := left(t, b); len(l) > 0 {
		t.Errorf("left behind: %q", l)
	}
}

// TestSafeOnFakeGCS: the full check passes on the native GCS backend
// (fake-gcs-server), whose generation preconditions make the races
// exclusive.
func TestSafeOnFakeGCS(t *testing.T) {
	srv := gcstest.Shared(t)
	raw, err := gcs.New(t.Context(), gcs.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, ChunkSize: 1 << 20, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	b := bucket.Prefixed(raw, "capsule/")
	o := full()
	o.UploadSize = 3<<20 + 4<<10
	rep, err := bucketcheck.Run(t.Context(), b, o)
	show(t, rep)
	if err != nil || !rep.Safe || rep.Err() != nil {
		t.Fatalf("safe %v: %v, %v", rep.Safe, err, rep.Err())
	}
	// GCS keeps no listable open uploads (an unfinished resumable upload
	// is invisible), so that property is skipped, not failed.
	want(t, rep, bucketcheck.PendingUploads, bucketcheck.Skip, "keeps no open uploads")
	for _, p := range []string{bucketcheck.CreateOnly, bucketcheck.IfMatch, bucketcheck.ConditionalUpload, bucketcheck.ClockSkew, bucketcheck.Cleanup} {
		want(t, rep, p, bucketcheck.Pass, "")
	}
	if l := left(t, b); len(l) > 0 {
		t.Errorf("left behind: %q", l)
	}
}
