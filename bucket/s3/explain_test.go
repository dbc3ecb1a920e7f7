package s3_test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/internal/s3test"
)

// TestSetupErrorsSayWhatToSet meets the setup mistakes a new operator
// makes: no credentials anywhere, an endpoint where nothing listens, a
// host that does not resolve, a wrong secret. Each error names the
// problem and what to set, not the SDK's chain (no EC2 metadata).
func TestSetupErrorsSayWhatToSet(t *testing.T) {
	home := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
	}
	t.Setenv("HOME", home)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)

	for _, c := range []struct {
		name string
		opts s3.Options
		want []string
	}{
		{"no credentials", s3.Options{Bucket: name, Endpoint: srv.Endpoint, Region: srv.Region},
			[]string{"no AWS credentials found", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}},
		{"connection refused", s3.Options{Bucket: "b", Endpoint: closed, AccessKey: "k", SecretKey: "s"},
			[]string{"cannot reach the S3 endpoint " + strings.TrimPrefix(closed, "http://"), "connection refused", "endpoint="}},
		{"unknown host", s3.Options{Bucket: "b", Endpoint: "http://capsule-no-such-host.invalid:9000", AccessKey: "k", SecretKey: "s"},
			[]string{"cannot resolve the S3 endpoint's host capsule-no-such-host.invalid", "endpoint="}},
		{"wrong secret", s3.Options{Bucket: name, Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: "wrong"},
			[]string{"AWS_SECRET_ACCESS_KEY"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Log = testLogger(t)
			b, err := s3.New(t.Context(), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = b.Head(t.Context(), "some/key")
			if err == nil {
				t.Fatal("Head succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "IMDS") || strings.Contains(err.Error(), "ec2imds") {
				t.Errorf("error %q speaks of EC2 instance metadata", err)
			}
			if err != nil && (strings.Contains(err.Error(), bucket.ErrNotFound.Error())) {
				t.Errorf("error %q reads as a missing object", err)
			}
		})
	}
}
