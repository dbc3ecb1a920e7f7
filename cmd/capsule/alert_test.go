package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
)

// hookServer is a webhook receiver: it answers 500 to the first fail
// POSTs, then 200, and keeps every body.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	raw    []string
	fail   int
	posts  int
}

func newHookServer(t *testing.T, fail int) *hookServer {
	h := &hookServer{fail: fail}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.posts++
		if h.posts <= h.fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var m map[string]any
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &m) != nil {
			t.Errorf("webhook got %s %s %q", r.Method, r.Header.Get("Content-Type"), body)
		}
		h.bodies = append(h.bodies, m)
		h.raw = append(h.raw, string(body))
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) received() ([]map[string]any, []string, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.bodies...), append([]string(nil), h.raw...), h.posts
}

// TestWebhookOnFailedRequest configures a worker's webhook and a
// source's own, runs a backup that fails, and checks what a Slack-like
// receiver gets: one POST per hook (the worker's after a 500 and a
// retry), a "text" line naming the source, the request and the error,
// the structured fields, and no secret though the error quoted one.
func TestWebhookOnFailedRequest(t *testing.T) {
	e := newCLIEnv(t)
	workerHook := newHookServer(t, 1)
	sourceHook := newHookServer(t, 0)
	otherHook := newHookServer(t, 0)
	t.Setenv("CAPSULE_TEST_SOURCE_HOOK", sourceHook.URL+"/hook")
	// The path quotes a credential, as a driver's error quotes a URL.
	cfg := fmt.Sprintf(`worker:
  webhooks:
    - url: %s/services/T000/B000/XXXX
      events: [failed, verify-failed]
sources:
  broken:
    engine: files
    path: %q
    webhookEnv: CAPSULE_TEST_SOURCE_HOOK
  data:
    engine: files
    path: %s
    webhook: %s
`, workerHook.URL, "/nonexistent/postgres://u:s3cr3tpw@db/x", e.data, otherHook.URL)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(e.must("backup", "broken", "--no-check"))
	_, errOut, code := e.run("--log-level", "info", "--log-format", "json", "worker", "--once", "--name", "w1", "--unsafe-bucket", "--max-attempts", "1")
	if code != 0 {
		t.Fatalf("worker: exit %d\n%s", code, errOut)
	}
	for _, h := range []*hookServer{workerHook, sourceHook} {
		bodies, raw, posts := h.received()
		if len(bodies) != 1 {
			t.Fatalf("webhook got %d events (%d POSTs), want 1\nworker log:\n%s", len(bodies), posts, errOut)
		}
		b := bodies[0]
		text, _ := b["text"].(string)
		if b["event"] != "failed" || b["source"] != "broken" || b["request_id"] != id || b["kind"] != "Backup" || b["worker"] != "w1" || b["cluster"] == "" {
			t.Errorf("webhook fields: %v", b)
		}
		if !strings.HasPrefix(text, "capsule: Backup of broken failed (cluster ") || !strings.Contains(text, id) || !strings.Contains(text, "nonexistent") {
			t.Errorf("webhook text %q", text)
		}
		if strings.Contains(raw[0], "s3cr3tpw") {
			t.Errorf("webhook carries the secret: %s", raw[0])
		}
	}
	if _, _, posts := workerHook.received(); posts != 2 {
		t.Errorf("worker's webhook got %d POSTs, want 2 (a 500, then the retry)", posts)
	}
	if _, _, posts := otherHook.received(); posts != 0 {
		t.Errorf("the webhook of source data heard of source broken: %d POSTs", posts)
	}
	if strings.Contains(errOut, "XXXX") || strings.Contains(errOut, "s3cr3tpw") {
		t.Errorf("the worker's log shows the webhook's URL path or the secret:\n%s", errOut)
	}
	if !strings.Contains(errOut, `"msg":"webhook delivered"`) {
		t.Errorf("no delivery in the log:\n%s", errOut)
	}
}

// TestWorkerStartupSummary starts a worker whose config has a source it
// can serve and one whose password variable is unset: the log has a
// summary line naming the sources, engines, bucket and what is missing,
// and a warning that names the source and the variable.
func TestWorkerStartupSummary(t *testing.T) {
	e := newCLIEnv(t)
	cfg := fmt.Sprintf("sources:\n  data:\n    engine: files\n    path: %s\n  db:\n    engine: files\n    path: %s\n    passwordEnv: CAPSULE_TEST_UNSET_PW\n", e.data, e.data)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := e.run("--log-level", "info", "--log-format", "json", "worker", "--once", "--name", "w1", "--unsafe-bucket")
	if code != 0 {
		t.Fatalf("worker: exit %d\n%s", code, errOut)
	}
	var summary, warning map[string]any
	sc := bufio.NewScanner(strings.NewReader(errOut))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		switch m["msg"] {
		case "worker starting":
			summary = m
		case "this worker cannot serve the source: its requests will fail here":
			warning = m
		}
	}
	if summary == nil || summary["sources"] != "data" || summary["missing"] != "db" || summary["engines"] != "files" ||
		!strings.Contains(fmt.Sprint(summary["bucket"]), e.bucketDir) || summary["worker"] != "w1" {
		t.Errorf("summary line: %v\n%s", summary, errOut)
	}
	if warning == nil || warning["source"] != "db" || !strings.Contains(fmt.Sprint(warning["problems"]), "CAPSULE_TEST_UNSET_PW") ||
		!strings.Contains(fmt.Sprint(warning["problems"]), "worker's environment") {
		t.Errorf("warning line: %v\n%s", warning, errOut)
	}
}
