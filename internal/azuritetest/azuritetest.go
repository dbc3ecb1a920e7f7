// Package azuritetest runs Azurite, Microsoft's Azure Storage emulator, for
// tests: Start gives a test its own blob service, Shared one per test
// process, and (*Server).NewContainer a fresh, empty container.
//
// Azurite is the npm package azurite at Version, installed by
// scripts/install-tools.sh into <repo>/.tools/azurite with its
// azurite-blob command linked from <repo>/.tools/bin; it runs on the
// machine's Node.js. The command is found through $CAPSULE_AZURITE, then
// <repo>/.tools/bin/azurite-blob, then $PATH. When it is missing the test
// fails with the command that installs it, unless CAPSULE_SKIP_AZURITE=1,
// when it is skipped.
//
// Each server listens on a loopback port the kernel picks (Azurite says
// which), keeps its blobs in a directory of its own, sends no telemetry,
// and has one account, capsuletest, with a random key.
package azuritetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/cnvrg/capsule/internal/testtool"
)

// Version is the azurite release the tests are written against: the
// newest whose declared Node.js support (>=10) includes the Node.js 20 of
// capsule's machines; 3.36 and later declare Node.js 21 or 22.
const Version = "3.35.0"

const installHint = "bash scripts/install-tools.sh  (or: npm install --prefix .tools/azurite azurite@" + Version +
	" && ln -sf ../azurite/node_modules/.bin/azurite-blob .tools/bin/azurite-blob)"

// Account is the storage account every server has.
const Account = "capsuletest"

// Server is a running Azurite blob service.
type Server struct {
	// ServiceURL is the blob service's base URL, with the account as its
	// first path segment: http://127.0.0.1:PORT/capsuletest.
	ServiceURL string
	Account    string
	// Key is the account's shared key (base64).
	Key string

	client *service.Client
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
}

// Start runs an Azurite of the test's own and stops it when the test ends.
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

// Shared returns the Azurite shared by every test of this process,
// starting it on first use. It runs until the process exits: its data
// directory is named after the process id, and a later Shared removes the
// directories of processes that are gone. Tests still get isolation from
// NewContainer.
func Shared(t testing.TB) *Server {
	t.Helper()
	command(t) // fail or skip in this test, not in the sync.Once
	shared.once.Do(func() {
		base := filepath.Join(os.TempDir(), "capsule-azuritetest")
		sweepStale(base)
		dir := filepath.Join(base, strconv.Itoa(os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			shared.err = err
			return
		}
		shared.s, shared.err = start(t, dir)
	})
	if shared.err != nil {
		t.Fatalf("shared azurite: %v", shared.err)
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

// command finds azurite-blob, or fails (skips with CAPSULE_SKIP_AZURITE=1)
// the test.
func command(t testing.TB) string {
	t.Helper()
	return testtool.Tool{Name: "azurite-blob", Version: Version, EnvVar: "CAPSULE_AZURITE", SkipVar: "CAPSULE_SKIP_AZURITE", Install: installHint}.Find(t)
}

// listening is the line Azurite prints once it accepts requests.
var listening = regexp.MustCompile(`successfully listens on (http://127\.0\.0\.1:[0-9]+)`)

func start(t testing.TB, dir string) (*Server, error) {
	bin := command(t)
	key := make([]byte, 64)
	rand.Read(key)
	s := &Server{
		Account: Account,
		Key:     base64.StdEncoding.EncodeToString(key),
		exited:  make(chan struct{}),
		dir:     dir,
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "azurite.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	s.cmd = exec.Command(bin,
		"--blobHost", "127.0.0.1",
		"--blobPort", "0", // the kernel picks a free port; Azurite prints it
		"--location", data,
		// The SDK speaks a newer service version than this Azurite
		// knows; what capsule uses is older than both.
		"--skipApiVersionCheck",
		"--disableTelemetry",
		// Longer than Go's idle connections wait between requests of
		// a test, so that no request meets a connection the server has
		// just closed.
		"--blobKeepAliveTimeout", "120",
		"--silent",
	)
	// The key reaches the child through its environment, not its argv.
	s.cmd.Env = append(os.Environ(), "AZURITE_ACCOUNTS="+s.Account+":"+s.Key)
	ready := &watcher{re: listening, found: make(chan string, 1)}
	s.cmd.Stdout, s.cmd.Stderr = multi{logf, ready}, logf
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	const timeout = 2 * time.Minute // Node.js loads Azurite slowly on a busy machine
	select {
	case endpoint := <-ready.found:
		s.ServiceURL = endpoint + "/" + s.Account
	case <-s.exited:
		log, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("azurite exited before listening (%v); its output:\n%s", s.cmd.ProcessState, log)
	case <-time.After(timeout):
		s.stop()
		log, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("azurite did not listen within %s; its output:\n%s", timeout, log)
	}
	cred, err := service.NewSharedKeyCredential(s.Account, s.Key)
	if err != nil {
		s.stop()
		return nil, err
	}
	if s.client, err = service.NewClientWithSharedKeyCredential(s.ServiceURL, cred, nil); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// watcher is an io.Writer that reports the first match of re's first
// group in what is written through it, line by line.
type watcher struct {
	re    *regexp.Regexp
	found chan string
	mu    sync.Mutex
	line  []byte
	done  bool
}

func (w *watcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.line = append(w.line, p...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			return len(p), nil
		}
		if m := w.re.FindSubmatch(w.line[:i]); m != nil {
			w.found <- string(m[1])
			w.done, w.line = true, nil
			return len(p), nil
		}
		w.line = w.line[i+1:]
	}
}

// multi writes to every writer and ignores their errors: the watcher
// must not stop the log, nor the log the watcher.
type multi []interface{ Write([]byte) (int, error) }

func (m multi) Write(p []byte) (int, error) {
	for _, w := range m {
		w.Write(p)
	}
	return len(p), nil
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

// NewContainer creates a container with a random name and returns the
// name. The container and everything in it are removed when the test
// ends.
func (s *Server) NewContainer(t testing.TB) string {
	t.Helper()
	name := "capsule-test-" + randomHex(6)
	if _, err := s.client.CreateContainer(context.Background(), name, nil); err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := s.client.DeleteContainer(context.Background(), name, nil); err != nil {
			t.Logf("remove container %s: %v", name, err)
		}
	})
	return name
}

// ConnectionString is a connection string for the server's account.
func (s *Server) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;", s.Account, s.Key, s.ServiceURL)
}

// URL is the azblob:// URL that bucket/bucketurl opens for container and
// prefix; the key comes from Env.
func (s *Server) URL(container, prefix string) string {
	return fmt.Sprintf("azblob://%s/%s?account=%s&endpoint=%s", container, prefix, s.Account, url.QueryEscape(s.ServiceURL))
}

// Env is the environment a child process needs to reach the server with
// the account key.
func (s *Server) Env() []string {
	return []string{"AZURE_STORAGE_KEY=" + s.Key}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
