package sqstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/cnvrg/capsule/internal/testtool"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// Version is the goaws release the tests are written against.
const Version = "v0.5.4"

const installHint = "bash scripts/install-tools.sh  (or: GOBIN=$PWD/.tools/bin go install github.com/Admiral-Piett/goaws/app/cmd@" + Version + " && mv .tools/bin/cmd .tools/bin/goaws)"

// Server is a running goaws.
type Server struct {
	// Endpoint is the server's base URL, e.g. http://127.0.0.1:41234.
	Endpoint  string
	Region    string
	AccessKey string
	SecretKey string

	client   *sqs.Client
	cmd      *exec.Cmd
	exited   chan struct{}
	stopOnce sync.Once
}

// Start runs a goaws of the test's own on a free port and stops it when
// the test ends. goaws keeps its queues in memory.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binary(t)
	dir := t.TempDir()
	s, err := start(bin, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			// What the server said helps explain a lost message.
			if log, err := os.ReadFile(filepath.Join(dir, "goaws.log")); err == nil {
				t.Logf("goaws log:\n%s", tail(log, 20000))
			}
		}
	})
	return s
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// binary finds goaws, or fails (skips with CAPSULE_SKIP_SQS=1) the test.
func binary(t testing.TB) string {
	t.Helper()
	return testtool.Tool{Name: "goaws", Version: Version, EnvVar: "CAPSULE_GOAWS", SkipVar: "CAPSULE_SKIP_SQS", Install: installHint}.Find(t)
}

// config is goaws's configuration: one environment, no queues (tests make
// their own), no region in queue URLs (goaws would put it in front of the
// host name, which then does not resolve). Messages stay hidden for 5s
// after a receive, not SQS's 30s: on a loaded machine the answer to a
// receive is now and then lost on the way (the SDK reads "use of closed
// network connection" and retries), and its messages must come back
// within a test's patience.
const config = `Local:
  Host: 127.0.0.1
  Port: "%d"
  AccountId: "100010001000"
  LogToFile: false
  QueueAttributeDefaults:
    VisibilityTimeout: 5
    ReceiveMessageWaitTimeSeconds: 0
`

func start(bin, dir string) (*Server, error) {
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
	}
	cfgPath := filepath.Join(dir, "goaws.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, config, port), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "goaws.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	s.cmd = exec.Command(bin, "-config", cfgPath, "-loglevel", "warn", "Local")
	s.cmd.Dir = dir // goaws looks for goaws.yaml under its working directory too
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
		s.Stop()
		log, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("goaws on port %d: %w; its output:\n%s", port, err, log)
	}
	s.client = sqs.New(sqs.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
	return s, nil
}

// waitReady polls /health until the server answers or exits. An external
// process gives no other readiness signal.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(s.Endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health: %s", resp.Status)
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

// Stop stops the server now (a queue outage); later calls do nothing.
// Start's cleanup calls it too.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
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
	})
}

// Client is an SQS client for the server.
func (s *Server) Client() *sqs.Client { return s.client }

// Env is the environment a child process (or notify.NewClient) needs to
// reach the server through the AWS default credential chain.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
	}
}

// NewQueue creates a queue with a random name and returns its URL. It is
// deleted when the test ends (unless the server was stopped).
func (s *Server) NewQueue(t testing.TB) string {
	t.Helper()
	name := "capsule-test-" + randomHex(6)
	ctx := context.Background()
	out, err := s.client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
	if err != nil {
		t.Fatalf("create queue %s: %v", name, err)
	}
	url := aws.ToString(out.QueueUrl)
	t.Cleanup(func() {
		select {
		case <-s.exited:
			return
		default:
		}
		if _, err := s.client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}); err != nil {
			t.Logf("delete queue %s: %v", name, err)
		}
	})
	return url
}

// Send puts one message on the queue.
func (s *Server) Send(ctx context.Context, queueURL, body string) error {
	_, err := s.client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(queueURL), MessageBody: aws.String(body)})
	return err
}

// Depth returns how many messages the queue holds, visible or in flight
// (goaws counts both in ApproximateNumberOfMessages).
func (s *Server) Depth(ctx context.Context, queueURL string) (int, error) {
	out, err := s.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(queueURL),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages},
	})
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
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
