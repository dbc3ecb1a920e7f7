package e2e

import (
	"strings"
	"testing"

	"github.com/cnvrg/capsule/internal/s3test"
)

// TestBucketCreateS3: on a fresh versitygw, the configured bucket does not
// exist until "capsule bucket create" makes it; a second run says it
// exists and exits 0; read-only commands never create it; a worker then
// starts on it.
func TestBucketCreateS3(t *testing.T) {
	srv := s3test.Start(t)
	name := "capsule-create-" + randHex(4)
	c := newClusterAt(t, 1024, srv.URL(name, "capsule/"), srv.Env())
	c.capsule(1, "ls")
	c.capsule(1, "ls") // still no bucket: ls created none
	if out := c.capsule(0, "bucket", "create", "--wait", "10s"); !strings.HasPrefix(out, "created s3://"+name+"/capsule/ at "+srv.Endpoint) {
		t.Errorf("first create: %q", out)
	}
	if out := c.capsule(0, "bucket", "create"); !strings.HasSuffix(out, "exists already\n") {
		t.Errorf("second create: %q", out)
	}
	c.capsule(0, "ls")
	c.capsule(0, "worker", "--once", "--name", "w1")
}
