package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
)

// gate holds back the bodies of artifact downloads: a reader gets only
// the bytes the test released, so a restore advances step by step, when
// the test says, with no sleep and no timing.
type gate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	closed  bool
	allowed int64
	served  int64
}

func newGate() *gate {
	g := &gate{closed: true}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// close gates what follows: no byte more until release.
func (g *gate) close() { g.mu.Lock(); g.closed, g.allowed = true, g.served; g.mu.Unlock() }

func (g *gate) open() { g.mu.Lock(); g.closed = false; g.cond.Broadcast(); g.mu.Unlock() }

func (g *gate) release(n int64) {
	g.mu.Lock()
	g.allowed += n
	g.cond.Broadcast()
	g.mu.Unlock()
}

type gatedBody struct {
	g  *gate
	rc io.ReadCloser
}

func (b *gatedBody) Read(p []byte) (int, error) {
	g := b.g
	g.mu.Lock()
	for g.closed && g.served >= g.allowed {
		g.cond.Wait()
	}
	if g.closed {
		p = p[:min(int64(len(p)), g.allowed-g.served)]
	}
	g.mu.Unlock()
	n, err := b.rc.Read(p)
	g.mu.Lock()
	g.served += int64(n)
	g.mu.Unlock()
	return n, err
}

func (b *gatedBody) Close() error { return b.rc.Close() }

// TestProgressBarInATerminal drives `capsule restore --wait` in a
// pseudo-terminal through a long restore, as an operator sees it: the
// worker reads the 24 MiB artifact through a proxy that lets it through
// an eighth at a time, and each eighth is released only once the
// terminal showed a higher percentage than before. The bar must advance
// through several percentages, with the rate and the time left, and the
// command exit 0 with the restore exact.
func TestProgressBarInATerminal(t *testing.T) {
	bin := binary(t)
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	prefix := "capsule-" + strings.ToLower(requests.NewID()[20:]) + "/"
	direct := srv.URL(name, prefix)

	g := newGate()
	g.open()
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method == http.MethodGet && strings.HasSuffix(r.Request.URL.Path, "/tree.tar") {
			r.Body = &gatedBody{g: g, rc: r.Body}
		}
		return nil
	}
	proxy := httptest.NewServer(rp)
	t.Cleanup(func() { g.open(); proxy.Close() })
	viaProxy := strings.Replace(direct, srv.Endpoint, proxy.URL, 1)

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 24 << 20
	blob := make([]byte, size)
	_, _ = rand.Read(blob) // incompressible: stored bytes track raw bytes
	if err := os.WriteFile(filepath.Join(data, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "capsule.yaml")
	cfg := fmt.Sprintf("sources:\n  data:\n    engine: files\n    path: %s\n  copy:\n    engine: files\n    path: %s\n", data, filepath.Join(dir, "copy"))
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), srv.Env()...)

	logPath := filepath.Join(dir, "worker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	worker := exec.Command(bin, "--config", config, "--bucket", viaProxy, "--log-format", "json",
		"worker", "--name", "w1", "--poll", "1s", "--lease", "3s", "--grace", "2s")
	worker.Env, worker.Stdout, worker.Stderr = env, logf, logf
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = worker.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		g.open()
		_ = worker.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = worker.Process.Kill()
			<-done
		}
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("worker log (end):\n%s", data[max(0, len(data)-3000):])
		}
	})

	backup := exec.Command(bin, "--config", config, "--bucket", direct, "backup", "data", "--wait", "-o", "json")
	backup.Env = env
	out, err := backup.Output()
	var st client.Status
	if err != nil || json.Unmarshal(out, &st) != nil || st.Result == nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}

	g.close() // from now on, the artifact comes an eighth at a time
	restore := exec.Command(bin, "--config", config, "--bucket", direct, "restore", st.ID, "--to", "copy", "--wait")
	restore.Env = env
	tty, err := pty.StartWithSize(restore, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var (
		mu     sync.Mutex
		screen bytes.Buffer
		more   = make(chan struct{}, 1)
	)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			select {
			case more <- struct{}{}:
			default:
			}
			if err != nil {
				close(more)
				return
			}
		}
	}()
	pct := regexp.MustCompile(`(\d+)% \|`)
	highest := func() int {
		mu.Lock()
		defer mu.Unlock()
		h := -1
		for _, m := range pct.FindAllStringSubmatch(screen.String(), -1) {
			n, _ := strconv.Atoi(m[1])
			h = max(h, n)
		}
		return h
	}
	// waitAbove waits until the terminal shows a percentage above p; a
	// minute is a failure, not a pace.
	waitAbove := func(p int) int {
		deadline := time.After(time.Minute)
		for {
			if h := highest(); h > p {
				return h
			}
			select {
			case _, ok := <-more:
				if !ok {
					return highest()
				}
			case <-deadline:
				return highest()
			}
		}
	}

	var seen []int
	last := 0
	for step := 1; step <= 7; step++ {
		g.release(size / 8)
		h := waitAbove(last)
		if h <= last {
			mu.Lock()
			t.Fatalf("after %d/8 of the artifact, the terminal shows no percentage above %d%%:\n%q", step, last, screen.String())
			mu.Unlock()
		}
		seen = append(seen, h)
		last = h
	}
	g.open()
	werr := restore.Wait()
	for range more {
	}
	mu.Lock()
	text := screen.String()
	mu.Unlock()
	t.Logf("percentages seen, an eighth of the artifact at a time: %v", seen)
	if werr != nil {
		t.Fatalf("restore --wait: %v\n%q", werr, text)
	}
	if len(seen) < 5 || seen[0] >= 50 || seen[len(seen)-1] < 50 {
		t.Errorf("the bar did not advance through the restore: %v", seen)
	}
	for _, want := range []string{"█", "MiB/s", "ETA", "of 24.0 MiB", "succeeded"} {
		if !strings.Contains(text, want) {
			t.Errorf("the terminal never showed %q:\n%q", want, text)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "copy", "blob"))
	if err != nil || !bytes.Equal(got, blob) {
		t.Errorf("the restored blob differs (%v)", err)
	}
}
