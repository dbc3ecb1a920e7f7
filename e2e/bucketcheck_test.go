package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketcheck"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/requests"
)

// googleLike is a proxy in front of the cluster's versitygw that drops
// If-None-Match from every write, as Google Cloud Storage's S3 interface
// ignores it.
func (c *cluster) googleLike() *faultproxy.Proxy {
	c.t.Helper()
	p := faultproxy.Start(c.t, c.srv.Endpoint, 1)
	p.SetQuirks(faultproxy.Credentials{AccessKey: c.srv.AccessKey, SecretKey: c.srv.SecretKey, Region: c.srv.Region}, faultproxy.IgnoreIfNoneMatch)
	return p
}

// checkLeft lists what the bucket holds under check/.
func (c *cluster) checkLeft() []string {
	var keys []string
	_ = bucket.Walk(context.Background(), c.b, bucketcheck.Folder, func(o bucket.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	})
	return keys
}

type checkJSON struct {
	Bucket  string               `json:"bucket"`
	Safe    bool                 `json:"safe"`
	Unsafe  string               `json:"unsafe"`
	Results []bucketcheck.Result `json:"results"`
}

// TestBucketCheckCLI: "capsule bucket check" on versitygw passes every
// property and exits 0; through a proxy that drops If-None-Match it names
// the broken property and exits 2; either way it leaves nothing behind.
func TestBucketCheckCLI(t *testing.T) {
	c := newCluster(t, 1024)
	p := c.googleLike()

	// The configured bucket (CAPSULE_BUCKET), multipart uploads.
	out := c.capsule(0, "bucket", "check", "--rounds", "3")
	t.Logf("versitygw:\n%s", out)
	for _, prop := range []string{"create-only", "if-match", "conditional-upload", "pending-uploads", "clock-skew", "cleanup"} {
		if !regexp.MustCompile(`(?m)^` + prop + `\s+pass\s`).MatchString(out) {
			t.Errorf("no pass for %s", prop)
		}
	}
	if !regexp.MustCompile(`(?m)^checksums\s+info\s+accepts a CRC32 checksum`).MatchString(out) || !strings.Contains(out, "is safe for capsule") {
		t.Errorf("output:\n%s", out)
	}

	// A URL argument, JSON.
	var rep checkJSON
	out = c.capsule(0, "bucket", "check", "-o", "json", "--rounds", "2", c.url)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if !rep.Safe || rep.Unsafe != "" || len(rep.Results) != 7 || !strings.HasPrefix(rep.Bucket, "s3://") {
		t.Errorf("json report: %+v", rep)
	}

	// Through the proxy: unsafe, exit 2, the property named on stdout
	// and in the error.
	via := c.urlVia(p)
	stdout, stderr, code := c.cliVia(via, "bucket", "check", "--rounds", "2", "--upload-size-mib", "1")
	t.Logf("through the proxy (exit %d):\n%s%s", code, stdout, stderr)
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if !regexp.MustCompile(`(?m)^create-only\s+FAIL\s+create-only writes are not exclusive \(8 of 8 writers won in round 1\)`).MatchString(stdout) ||
		!strings.Contains(stdout, "is UNSAFE for capsule") {
		t.Errorf("stdout does not name the broken property:\n%s", stdout)
	}
	if regexp.MustCompile(`(?m)^pending-uploads`).MatchString(stdout) || !strings.Contains(stderr, "pending-uploads is not checked: on S3 an upload is open only beyond one part (") {
		t.Errorf("pending uploads checked with uploads that open none:\n%s%s", stdout, stderr)
	}
	if !strings.Contains(stderr, "capsule: the bucket failed capsule's safety check: create-only writes are not exclusive (8 of 8 writers won in round 1)") {
		t.Errorf("stderr:\n%s", stderr)
	}
	stdout, _, code = c.cliVia(c.url, "bucket", "check", "-o", "json", "--rounds", "1", "--upload-size-mib", "1", via)
	rep = checkJSON{}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 2 || rep.Safe || !strings.Contains(rep.Unsafe, "create-only writes are not exclusive") {
		t.Errorf("json through the proxy: exit %d, %+v, %v\n%s", code, rep, err, stdout)
	}

	// A URL that names no bucket: exit 1, as for every command.
	if _, stderr, code := c.cliVia(c.url, "bucket", "check", "ftp://bucket/"); code != 1 || !strings.Contains(stderr, `unknown scheme "ftp"`) {
		t.Errorf("bad URL: exit %d, %s", code, stderr)
	}
	if l := c.checkLeft(); len(l) > 0 {
		t.Errorf("left behind under check/: %q", l)
	}
}

// startWorkerArgs starts a worker on bucketURL with extra flags.
func (c *cluster) startWorkerArgs(name, bucketURL string, extra ...string) *workerProc {
	c.t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	args := append([]string{"--config", c.config, "--log-format", "json", "worker", "--name", name, "--concurrency", "2"}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append([]string{}, c.env...), "CAPSULE_BUCKET="+bucketURL)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	w := &workerProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(w.done) }()
	c.mu.Lock()
	c.workers = append(c.workers, w)
	c.mu.Unlock()
	return w
}

// TestWorkerRefusesUnsafeBucket: a worker pointed at a bucket that
// ignores If-None-Match refuses to start: it exits non-zero naming the
// broken property, and a pending request gets no lease. With
// --unsafe-bucket a worker claims and runs it, saying loudly that the
// bucket is unsafe.
func TestWorkerRefusesUnsafeBucket(t *testing.T) {
	c := newCluster(t, 1024)
	p := c.googleLike()
	via := c.urlVia(p)
	ids := c.submitBackups(1)

	w := c.startWorkerArgs("refuser", via)
	// It exits; a worker that claims instead shows in the bucket.
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-w.done:
			break wait
		case <-deadline:
			t.Fatalf("the worker on an unsafe bucket is still running after 60s")
		case <-tick.C:
			if l, r := c.leases(), c.result(ids[0]); len(l) > 0 || r != nil {
				t.Fatalf("the worker claimed on a bucket that ignores If-None-Match: leases %v, result %+v", l, r)
			}
		}
	}
	log, _ := os.ReadFile(w.log)
	if code := w.cmd.ProcessState.ExitCode(); code == 0 {
		t.Errorf("the worker exited 0 on an unsafe bucket")
	}
	if !strings.Contains(string(log), "refusing to claim requests: the bucket failed capsule's safety check: create-only writes are not exclusive (8 of 8 writers won in round 1)") {
		t.Errorf("the worker's log does not say why it refused:\n%s", tail(log, 3000))
	}
	if l := c.leases(); len(l) > 0 {
		t.Errorf("leases written on an unsafe bucket: %v", l)
	}
	if r := c.result(ids[0]); r != nil {
		t.Errorf("request %s ended %s on an unsafe bucket", ids[0], r.Status)
	}
	if _, err := c.b.Head(context.Background(), requests.RequestKey(ids[0])); err != nil {
		t.Errorf("the request is gone: %v", err)
	}
	if l := c.checkLeft(); len(l) > 0 {
		t.Errorf("left behind under check/: %q", l)
	}

	u := c.startWorkerArgs("override", via, "--unsafe-bucket")
	res := c.waitResults(ids, 60*time.Second)
	if r := res[ids[0]]; r == nil || r.Status != requests.StatusSucceeded || r.Worker != "override" {
		t.Errorf("with --unsafe-bucket: %+v", r)
	}
	data, _ := os.ReadFile(u.log)
	if !strings.Contains(string(data), "UNSAFE BUCKET: claiming requests anyway because of --unsafe-bucket") {
		t.Errorf("the overriding worker does not say the bucket is unsafe:\n%s", tail(data, 3000))
	}
}
