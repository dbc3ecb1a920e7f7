package s3_test

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/buckettest"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/internal/s3test"
)

// quirky is the shared versitygw behind a proxy that acts like an
// S3-compatible server with the given quirks.
func quirky(t *testing.T, quirks ...faultproxy.Quirk) (*s3test.Server, *faultproxy.Proxy) {
	t.Helper()
	srv := s3test.Shared(t)
	p := faultproxy.Start(t, srv.Endpoint, 1)
	p.SetQuirks(faultproxy.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region}, quirks...)
	return srv, p
}

func bucketAt(t *testing.T, srv *s3test.Server, endpoint, name string) *s3.Bucket {
	t.Helper()
	b, err := s3.New(t.Context(), s3.Options{
		Bucket: name, Endpoint: endpoint, Region: srv.Region,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize, Log: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWritesWithoutChecksumsOnOtherEndpoints: a server that refuses
// the CRC32 checksums aws-sdk-go-v2 sends by default since 2025 (as
// several S3-compatible servers do) still takes every kind of write
// capsule makes, because the client sends checksums only when an
// operation requires one on endpoints other than AWS.
func TestWritesWithoutChecksumsOnOtherEndpoints(t *testing.T) {
	t.Setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "")
	t.Setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "")
	srv, p := quirky(t, faultproxy.RejectChecksums)
	name := srv.NewBucket(t)
	b := bucketAt(t, srv, p.URL(), name)
	ctx := t.Context()
	if _, err := bucket.PutBytes(ctx, b, "plain", []byte("plain"), bucket.PutOptions{}); err != nil {
		t.Errorf("put: %v", err)
	}
	if _, err := bucket.PutBytes(ctx, b, "lease", []byte("claim"), bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Errorf("create-only put: %v", err)
	}
	big := make([]byte, s3.MinPartSize+1000)
	rand.Read(big)
	u, err := b.Upload(ctx, "artifact", bucket.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(big); err != nil {
		t.Errorf("upload a part: %v", err)
	}
	if _, err := u.Commit(); err != nil {
		u.Abort()
		t.Errorf("multipart upload: %v", err)
	} else if data, _, err := bucket.GetBytes(ctx, b, "artifact"); err != nil || !bytes.Equal(data, big) {
		t.Errorf("read the upload back: %d bytes, %v", len(data), err)
	}
	if n := p.Stats().Quirks[faultproxy.RejectChecksums]; n != 0 {
		t.Errorf("the proxy refused %d of capsule's requests for their checksums", n)
	}
	// The probe sends a checksum on purpose, and reports the refusal.
	probe, err := b.ProbeChecksums(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if probe.Accepted || !strings.Contains(probe.Refusal, "InvalidArgument") || probe.ClientSendsAlways() {
		t.Errorf("probe through a server that refuses checksums: %+v (%s)", probe, probe)
	}
	// Straight to versitygw, which keeps checksums.
	probe, err = bucketAt(t, srv, srv.Endpoint, name).ProbeChecksums(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if !probe.Accepted || !probe.Returned || !probe.Match {
		t.Errorf("probe on versitygw: %+v (%s)", probe, probe)
	}
	if _, err := b.Head(ctx, "probe"); err == nil {
		t.Errorf("the probe left its object behind")
	}
}

// TestChecksumModes: on AWS the SDK's default checksums stay; on other
// endpoints they are only sent when required; an explicit setting in the
// AWS configuration wins.
func TestChecksumModes(t *testing.T) {
	for _, c := range []struct {
		endpoint, env string
		want          aws.RequestChecksumCalculation
	}{
		{"", "", aws.RequestChecksumCalculationWhenSupported}, // the SDK's default
		{"https://s3.eu-west-1.amazonaws.com", "", aws.RequestChecksumCalculationWhenSupported},
		{"http://127.0.0.1:7070", "", aws.RequestChecksumCalculationWhenRequired},
		{"https://storage.googleapis.com", "", aws.RequestChecksumCalculationWhenRequired},
		{"https://s3.example.com", "when_supported", aws.RequestChecksumCalculationWhenSupported},
		{"", "when_required", aws.RequestChecksumCalculationWhenRequired},
	} {
		t.Setenv("AWS_REQUEST_CHECKSUM_CALCULATION", c.env)
		b, err := s3.New(t.Context(), s3.Options{Bucket: "b", Endpoint: c.endpoint, Region: "us-east-1", AccessKey: "k", SecretKey: "s"})
		if err != nil {
			t.Fatal(err)
		}
		if got := b.Client().Options().RequestChecksumCalculation; got != c.want {
			t.Errorf("endpoint %q, AWS_REQUEST_CHECKSUM_CALCULATION=%q: request checksums %v, want %v", c.endpoint, c.env, got, c.want)
		}
		wantResp := aws.ResponseChecksumValidationWhenSupported
		if isAWS := c.endpoint == "" || strings.Contains(c.endpoint, "amazonaws.com"); !isAWS {
			wantResp = aws.ResponseChecksumValidationWhenRequired
		}
		if got := b.Client().Options().ResponseChecksumValidation; got != wantResp {
			t.Errorf("endpoint %q: response checksums %v, want %v", c.endpoint, got, wantResp)
		}
	}
}

// TestConformanceUploadsByKeyOnly runs the conformance suite against a
// server that lists open uploads only for a whole key, as MinIO does
// (PendingUploads is the case that needs it).
func TestConformanceUploadsByKeyOnly(t *testing.T) {
	srv, p := quirky(t, faultproxy.UploadsByKeyOnly)
	name := srv.NewBucket(t)
	// The quirk is real: the server's own prefixed listing finds nothing.
	raw := bucketAt(t, srv, p.URL(), name)
	u, err := raw.Client().CreateMultipartUpload(t.Context(), &awss3.CreateMultipartUploadInput{Bucket: &name, Key: aws.String("quirk/open")})
	if err != nil {
		t.Fatal(err)
	}
	out, err := raw.Client().ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{Bucket: &name, Prefix: aws.String("quirk/")})
	if err != nil || len(out.Uploads) != 0 {
		t.Fatalf("the proxy's prefixed listing: %v, %v; want nothing", out, err)
	}
	if err := raw.AbortUpload(t.Context(), "quirk/open", aws.ToString(u.UploadId)); err != nil {
		t.Fatal(err)
	}
	buckettest.Run(t, func(t *testing.T) bucket.Bucket { return bucketAt(t, srv, p.URL(), name) })
	if p.Stats().Quirks[faultproxy.UploadsByKeyOnly] == 0 {
		t.Errorf("no listing went through the quirk")
	}
}
