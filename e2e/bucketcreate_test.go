package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/internal/s3test"
)

// TestBucketCreateS3: on a fresh versitygw, the worker's bucket does not
// exist until "capsule bucket create" makes it; a second run says it
// exists and exits 0; read-only commands never create it.
func TestBucketCreateS3(t *testing.T) {
	srv := s3test.Start(t)
	name := "capsule-create-" + randHex(4)
	url := srv.URL(name, "capsule/")
	run := func(want int, args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"--bucket", url}, args...)...)
		cmd.Env = append(os.Environ(), srv.Env()...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want {
			t.Fatalf("capsule %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	if _, errOut := run(1, "ls"); !strings.Contains(errOut, "NoSuchBucket") && !strings.Contains(errOut, "not found") {
		t.Errorf("ls before create: %s", errOut)
	}
	out, _ := run(0, "bucket", "create", "--wait", "10s")
	if !strings.HasPrefix(out, "created s3://"+name+"/capsule/ at "+srv.Endpoint) {
		t.Errorf("first create: %q", out)
	}
	out, _ = run(0, "bucket", "create")
	if !strings.HasSuffix(out, "exists already\n") {
		t.Errorf("second create: %q", out)
	}
	run(0, "ls")
	// The worker starts on it and runs what is pending (nothing).
	run(0, "worker", "--once", "--name", "w1")
}
