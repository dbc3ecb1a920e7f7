package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/cnvrg/capsule/internal/testtool"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Version is the versitygw release the tests are written against; earlier
// releases do not make conditional writes atomic.
const Version = "v1.8.0"

const installHint = "bash scripts/install-tools.sh  (or: GOBIN=$PWD/.tools/bin go install github.com/versity/versitygw/cmd/versitygw@" + Version + ")"

// Server is a running versitygw.
type Server struct {
	// Endpoint is the server's base URL, e.g. http://127.0.0.1:41234.
	Endpoint  string
	Region    string
	AccessKey string
	SecretKey string

	client *s3.Client
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
}

// Start runs a versitygw of the test's own on a free loopback port and stops
// it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

var shared struct {
	once sync.Once
	s    *Server
	err  error
}

// Shared returns the versitygw shared by every test of this process,
// starting it on first use. It runs until the process exits: its data
// directory is named after the process id, and a later Shared removes the
// directories of processes that are gone. Tests still get isolation from
// NewBucket.
func Shared(t testing.TB) *Server {
	t.Helper()
	binary(t) // fail or skip in this test, not in the sync.Once
	shared.once.Do(func() {
		base := filepath.Join(os.TempDir(), "capsule-s3test")
		sweepStale(base)
		dir := filepath.Join(base, strconv.Itoa(os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			shared.err = err
			return
		}
		shared.s, shared.err = start(t, dir)
	})
	if shared.err != nil {
		t.Fatalf("shared versitygw: %v", shared.err)
	}
	return shared.s
}

// sweepStale removes the data directories of Shared servers whose test
// process has exited.
func sweepStale(base string) {
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
}

// binary finds versitygw, or fails (skips with CAPSULE_SKIP_S3=1) the test.
func binary(t testing.TB) string {
	t.Helper()
	return testtool.Tool{Name: "versitygw", Version: Version, EnvVar: "CAPSULE_VERSITYGW", SkipVar: "CAPSULE_SKIP_S3", Install: installHint}.Find(t)
}

func start(t testing.TB, dir string) (*Server, error) {
	bin := binary(t)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		Region:    "us-east-1",
		AccessKey: "capsuletest",
		SecretKey: randomHex(16),
		exited:    make(chan struct{}),
		dir:       dir,
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	s.cmd = exec.Command(bin, "--port", "127.0.0.1:"+strconv.Itoa(port), "posix", data)
	s.cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY="+s.AccessKey,
		"ROOT_SECRET_KEY="+s.SecretKey,
	)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(30 * time.Second); err != nil {
		s.stop()
		log, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("versitygw on port %d: %w; its output:\n%s", port, err, log)
	}
	s.client = s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
	return s, nil
}

// waitReady polls the port until the server answers HTTP (any status) or
// exits. An external process gives no other readiness signal.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(s.Endpoint)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited before answering: %v", s.cmd.ProcessState)
		case <-deadline:
			return fmt.Errorf("no answer within %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}

func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// NewBucket creates a bucket with a random name and returns the name. The
// bucket and everything in it are removed when the test ends.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := "capsule-test-" + randomHex(6)
	ctx := context.Background()
	if _, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := s.removeBucket(ctx, name); err != nil {
			t.Logf("remove bucket %s: %v", name, err)
		}
	})
	return name
}

func (s *Server) removeBucket(ctx context.Context, name string) error {
	uploads, err := s.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(name)})
	if err == nil {
		for _, u := range uploads.Uploads {
			s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(name), Key: u.Key, UploadId: u.UploadId})
		}
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(name)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, o := range page.Contents {
			if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(name), Key: o.Key}); err != nil {
				return err
			}
		}
	}
	_, err = s.client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(name)})
	return err
}

// URL is the s3:// URL that bucket/bucketurl opens for bucket and prefix;
// credentials come from Env.
func (s *Server) URL(bucket, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&region=%s&pathStyle=true", bucket, strings.TrimPrefix(prefix, "/"), s.Endpoint, s.Region)
}

// Env is the environment a child process needs to reach the server through
// the AWS default credential chain.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
