package gcstest

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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/cnvrg/capsule/internal/testtool"
)

// Version is the fake-gcs-server release the tests are written against.
const Version = "v1.56.1"

const installHint = "bash scripts/install-tools.sh  (or: GOBIN=$PWD/.tools/bin go install github.com/fsouza/fake-gcs-server@" + Version + ")"

// Server is a running fake-gcs-server.
type Server struct {
	// Endpoint is the server's base URL, e.g. http://127.0.0.1:41234.
	Endpoint string

	client *storage.Client
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start runs a fake-gcs-server of the test's own on a free loopback port
// and stops it when the test ends.
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

// Shared returns the fake-gcs-server shared by every test of this
// process, starting it on first use. It runs until the process exits (the
// kernel kills it with its parent on Linux); its log is in a directory
// named after the process id, and a later Shared removes those of
// processes that are gone. Tests still get isolation from NewBucket.
func Shared(t testing.TB) *Server {
	t.Helper()
	binary(t) // fail or skip in this test, not in the sync.Once
	shared.once.Do(func() {
		base := filepath.Join(os.TempDir(), "capsule-gcstest")
		sweepStale(base)
		dir := filepath.Join(base, strconv.Itoa(os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			shared.err = err
			return
		}
		shared.s, shared.err = start(t, dir)
	})
	if shared.err != nil {
		t.Fatalf("shared fake-gcs-server: %v", shared.err)
	}
	return shared.s
}

// sweepStale removes the directories of Shared servers whose test process
// has exited.
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

// binary finds fake-gcs-server, or fails (skips with CAPSULE_SKIP_GCS=1)
// the test.
func binary(t testing.TB) string {
	t.Helper()
	return testtool.Tool{Name: "fake-gcs-server", Version: Version, EnvVar: "CAPSULE_FAKE_GCS_SERVER", SkipVar: "CAPSULE_SKIP_GCS", Install: installHint}.Find(t)
}

func start(t testing.TB, dir string) (*Server, error) {
	bin := binary(t)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Endpoint: "http://127.0.0.1:" + strconv.Itoa(port), exited: make(chan struct{})}
	logf, err := os.Create(filepath.Join(dir, "fake-gcs-server.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	// -public-host: XML API reads (GET /BUCKET/OBJECT, what the Go client
	// reads with) are routed by host name; any port of 127.0.0.1 (a
	// test's fault proxy too) is this server. -external-url: where the
	// resumable upload sessions it hands out live.
	s.cmd = exec.Command(bin,
		"-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port),
		"-backend", "memory", "-public-host", "127.0.0.1", "-external-url", s.Endpoint,
		"-log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = sysProcAttr()
	// The server must not see the test's emulator variables or
	// credentials.
	s.cmd.Env = filterEnv(os.Environ(), "STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")
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
		return nil, fmt.Errorf("fake-gcs-server on port %d: %w; its output:\n%s", port, err, log)
	}
	s.client, err = storage.NewClient(context.Background(),
		option.WithEndpoint(s.Endpoint+"/storage/v1/"), option.WithoutAuthentication())
	if err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func filterEnv(env []string, drop ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			keep = keep && name != d
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// waitReady polls the health check until the server answers or exits. An
// external process gives no other readiness signal.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(s.Endpoint + "/_internal/healthcheck")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health check: %s", resp.Status)
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
	if err := s.client.Bucket(name).Create(ctx, "capsule-test", nil); err != nil {
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
	b := s.client.Bucket(name)
	it := b.Objects(ctx, nil)
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return err
		}
		if err := b.Object(a.Name).Delete(ctx); err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
			return err
		}
	}
	return b.Delete(ctx)
}

// URL is the gs:// URL that bucket/bucketurl opens for bucket and prefix
// on this server.
func (s *Server) URL(bucket, prefix string) string {
	return fmt.Sprintf("gs://%s/%s?endpoint=%s", bucket, strings.TrimPrefix(prefix, "/"), s.Endpoint)
}

// Real returns the name of the real GCS bucket that
// CAPSULE_TEST_GCS_BUCKET names (reached with Application Default
// Credentials), or skips the test, saying why, when it is not set.
func Real(t testing.TB, why string) string {
	t.Helper()
	name := os.Getenv("CAPSULE_TEST_GCS_BUCKET")
	if name == "" {
		t.Skipf("%s; set CAPSULE_TEST_GCS_BUCKET (and Application Default Credentials) to run it against a real bucket", why)
	}
	return name
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
