package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestServe runs `capsule serve` on a free port over a local bucket: it
// answers, takes a request with the token, refuses one without, and
// shuts down cleanly when its context ends.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	// serve only reads the bucket and never creates one.
	if err := os.Mkdir(filepath.Join(dir, "bucket"), 0o755); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	a := newApp(io.Discard, pw, func(string) string { return "" })
	cmd := a.root()
	cmd.SetArgs([]string{"serve", "--bucket", "file://" + filepath.Join(dir, "bucket"), "--listen", "127.0.0.1:0",
		"--api-token-file", tokenFile, "--log-level", "error", "--log-format", "text"})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- cmd.ExecuteContext(ctx)
		pw.Close()
	}()

	// The first line that names the address says it is serving.
	lines := bufio.NewScanner(pr)
	addr := ""
	re := regexp.MustCompile(`serving the API and the page on (http://[0-9.:]+)/ \(writes enabled\)`)
	for addr == "" && lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" {
		t.Fatalf("serve never said where it listens: %v", <-done)
	}
	go io.Copy(io.Discard, pr) // keep draining the log

	res, err := http.Get(addr + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", res, err)
	}
	res.Body.Close()
	post := func(token string) int {
		req, _ := http.NewRequest("POST", addr+"/v1/requests", strings.NewReader(`{"kind":"Backup","source":"data"}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := post(""); code != 401 {
		t.Errorf("POST without the token: %d, want 401", code)
	}
	if code := post("s3cret-token"); code != 201 {
		t.Errorf("POST with the token: %d, want 201", code)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "bucket", "*", "requests", "*.json"))
	if len(matches) != 1 {
		t.Errorf("requests in the bucket: %v", matches)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after its context ended: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop 15s after its context ended")
	}
}

func TestServeRefusesABadTokenFile(t *testing.T) {
	a := newApp(io.Discard, io.Discard, func(string) string { return "" })
	cmd := a.root()
	cmd.SetArgs([]string{"serve", "--bucket", "file://" + t.TempDir(), "--listen", "127.0.0.1:0", "--api-token-file", "/nonexistent/token"})
	err := cmd.ExecuteContext(t.Context())
	if err == nil || !strings.Contains(err.Error(), "--api-token-file") {
		t.Errorf("missing token file: %v", err)
	}
}
