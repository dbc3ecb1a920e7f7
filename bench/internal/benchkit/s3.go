package benchkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
)

// S3 is a versitygw (posix backend) started for one benchmark run.
type S3 struct {
	Endpoint  string
	Region    string
	AccessKey string
	SecretKey string

	client *awss3.Client
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartS3 starts versitygw on a free loopback port with its data under
// dir. The binary is $CAPSULE_VERSITYGW, <repo>/.tools/bin/versitygw
// (scripts/install-tools.sh puts it there) or versitygw on $PATH. The
// server dies with this process (Pdeathsig); Stop ends it sooner.
func StartS3(dir string) (*S3, error) {
	bin, err := versitygw()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "s3data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &S3{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		Region:    "us-east-1",
		AccessKey: "capsulebench",
		SecretKey: randomHex(16),
		exited:    make(chan struct{}),
	}
	logf, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	s.cmd = exec.Command(bin, "--port", "127.0.0.1:"+strconv.Itoa(port), "posix", data)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	if err := waitHTTP(s.Endpoint, s.exited, 30*time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("versitygw (log %s): %w", logf.Name(), err)
	}
	s.client = awss3.New(awss3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
	return s, nil
}

// Stop ends the server.
func (s *S3) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// CPU is the CPU time the server has used so far.
func (s *S3) CPU() (time.Duration, error) { return ProcCPU(s.cmd.Process.Pid) }

// NewBucket creates a bucket with a random name and returns its name and
// a client for it under capsule's default prefix (capsule/), the prefix
// URL gives the worker.
func (s *S3) NewBucket(ctx context.Context) (string, bucket.Bucket, error) {
	name := "capsule-bench-" + randomHex(6)
	if _, err := s.client.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return "", nil, fmt.Errorf("create bucket %s: %w", name, err)
	}
	b, err := s3.New(ctx, s3.Options{
		Bucket: name, Endpoint: s.Endpoint, Region: s.Region, PathStyle: true,
		AccessKey: s.AccessKey, SecretKey: s.SecretKey,
	})
	if err != nil {
		return "", nil, err
	}
	return name, bucket.Prefixed(b, "capsule/"), nil
}

// URL is the bucket URL a worker opens; credentials come from Env.
func (s *S3) URL(bucketName string) string {
	return fmt.Sprintf("s3://%s/capsule/?endpoint=%s&region=%s&pathStyle=true", bucketName, s.Endpoint, s.Region)
}

// Env is what a worker process needs in its environment to reach the
// server through the AWS default credential chain.
func (s *S3) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
	}
}

func versitygw() (string, error) {
	if p := os.Getenv("CAPSULE_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("CAPSULE_VERSITYGW=%s: %w", p, err)
		}
		return p, nil
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", errors.New("versitygw not found ($CAPSULE_VERSITYGW, <repo>/.tools/bin, $PATH): run bash scripts/install-tools.sh")
}

// waitHTTP polls url until it answers HTTP (any status) or the process
// behind it exits: an external server gives no other readiness signal.
func waitHTTP(url string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before answering")
		case <-deadline:
			return fmt.Errorf("no answer within %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
