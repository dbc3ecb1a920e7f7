package alert_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/alert"
)

type receiver struct {
	mu     sync.Mutex
	status []int // answers, in turn; 200 after them
	bodies []string
	posts  int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.posts++
	if len(r.status) > 0 {
		code := r.status[0]
		r.status = r.status[1:]
		w.WriteHeader(code)
		return
	}
	r.bodies = append(r.bodies, string(b))
}

func send(t *testing.T, hooks []alert.Hook, evs ...alert.Event) {
	t.Helper()
	n, err := alert.New(hooks, alert.Options{InitialInterval: time.Millisecond, MaxElapsed: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		n.Notify(e)
	}
	n.Close(context.Background())
}

// TestDelivery: a 503 and a 429 are retried, a 400 is final; a hook
// limited to events or sources hears only those; the body is Slack's
// shape plus the fields, redacted.
func TestDelivery(t *testing.T) {
	retried := &receiver{status: []int{503, 429}}
	refused := &receiver{status: []int{400}}
	onlyMissed := &receiver{}
	onlyDB := &receiver{}
	servers := map[*receiver]string{}
	for _, r := range []*receiver{retried, refused, onlyMissed, onlyDB} {
		srv := httptest.NewServer(r)
		t.Cleanup(srv.Close)
		servers[r] = srv.URL
	}
	send(t, []alert.Hook{
		{URL: servers[retried]}, {URL: servers[refused]},
		{URL: servers[onlyMissed], Events: []string{alert.Missed}},
		{URL: servers[onlyDB], Sources: []string{"db"}},
	},
		alert.Event{Type: alert.Failed, Source: "files", Kind: "Backup", RequestID: "r1", Cluster: "prod",
			Error: "dial postgres://capsule:hunter22@db:5432/app failed\nsecond line"},
		alert.Event{Type: alert.Missed, Source: "db", RequestID: "r2", Error: "no backup in the slot"},
	)
	if retried.posts != 4 || len(retried.bodies) != 2 {
		t.Errorf("retried: %d POSTs, %d delivered; want 4 and 2", retried.posts, len(retried.bodies))
	}
	if refused.posts != 2 || len(refused.bodies) != 1 {
		t.Errorf("a 400 was retried: %d POSTs, %d delivered", refused.posts, len(refused.bodies))
	}
	if len(onlyMissed.bodies) != 1 || !strings.Contains(onlyMissed.bodies[0], `"event":"missed"`) {
		t.Errorf("events filter: %q", onlyMissed.bodies)
	}
	if len(onlyDB.bodies) != 1 || !strings.Contains(onlyDB.bodies[0], `"source":"db"`) {
		t.Errorf("sources filter: %q", onlyDB.bodies)
	}
	var failed map[string]any
	for _, b := range retried.bodies {
		if strings.Contains(b, `"event":"failed"`) {
			_ = json.Unmarshal([]byte(b), &failed)
		}
		if strings.Contains(b, "hunter22") {
			t.Errorf("a body carries the password: %s", b)
		}
	}
	if failed == nil {
		t.Fatal("no failed event delivered")
	}
	if want := "capsule: Backup of files failed (cluster prod, request r1): dial postgres://capsule:"; !strings.HasPrefix(failed["text"].(string), want) ||
		strings.Contains(failed["text"].(string), "second line") {
		t.Errorf("text %q, want it to start %q and hold the first line only", failed["text"], want)
	}
	for _, k := range []string{"event", "cluster", "source", "kind", "request_id", "error", "time"} {
		if _, ok := failed[k]; !ok {
			t.Errorf("body lacks %s: %v", k, failed)
		}
	}
}

func TestNewRefusesBadHooks(t *testing.T) {
	for _, h := range []alert.Hook{{URL: "hooks.slack.com/x"}, {URL: "ftp://h/x"}, {URL: "https://h/x", Events: []string{"fail"}}} {
		if _, err := alert.New([]alert.Hook{h}, alert.Options{}); err == nil || strings.Contains(err.Error(), "/x") {
			t.Errorf("New(%+v) = %v: want an error that does not quote the URL", h, err)
		}
	}
}
