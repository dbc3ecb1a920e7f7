package api_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/pgserver/pgservertest"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/jackc/pglogrepl"
)

// pageNode is what testdata/page.js prints of each element.
type pageNode struct {
	Tag      string            `json:"tag"`
	Attrs    map[string]string `json:"attrs"`
	Text     string            `json:"text"`
	Children []pageNode        `json:"children"`
}

// find calls f with every element and the data-source of the article it
// is in.
func (n pageNode) find(source string, f func(n pageNode, source string)) {
	if n.Tag == "article" {
		source = n.Attrs["data-source"]
	}
	if n.Tag != "" {
		f(n, source)
	}
	for _, c := range n.Children {
		c.find(source, f)
	}
}

// renderPage runs the page's script (ui/app.js) in Node against the API
// at url and returns what it drew.
func renderPage(t *testing.T, url string) pageNode {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node on PATH: the page test runs app.js in Node (e2e/browser runs it in Chromium)")
	}
	out, err := exec.Command(node, "testdata/page.js", "ui/app.js", url+"/").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("page.js: %v: %s", err, stderr)
	}
	var root pageNode
	if err := json.Unmarshal(out, &root); err != nil {
		t.Fatalf("page.js printed %q: %v", out, err)
	}
	return root
}

// The page shows each point-in-time source's recoverable window, as the
// API computes it from the bucket (base backups of a real PostgreSQL
// and its WAL streamed into the bucket); a source with a base backup
// but no WAL says no restore is possible yet; other sources show none.
func TestPageShowsTheRecoverableWindow(t *testing.T) {
	ctx := context.Background()
	srv, _ := pgservertest.Replication(t, "capsule-api-pitr-")
	b := fsBucket(t)
	src := engines.Source{Name: "cnvrg/pg", Engine: "postgres", Config: map[string]any{"url": srv.URL("postgres"), "pitr": true, "allowSuperuser": true}}
	nowal := engines.Source{Name: "cnvrg/pg-nowal", Engine: "postgres", Config: src.Config}

	// The WAL stream.
	var mu sync.Mutex
	var end pglogrepl.LSN
	wrote := make(chan struct{}, 1)
	s, err := pitr.NewStream(pitr.StreamConfig{
		Bucket: b, Cluster: requests.DefaultCluster, Source: src, Retry: 200 * time.Millisecond, Log: enginetest.TestLog(t),
		Leaser: &pitr.BucketLeaser{Bucket: b, Holder: "w1", Length: 6 * time.Second},
		Written: func(sg pitr.Segment, _ pitr.Header) {
			mu.Lock()
			end = max(end, sg.End)
			mu.Unlock()
			select {
			case wrote <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(sctx) }()
	t.Cleanup(func() { stop(); <-done })

	x, err := executor.New(executor.Config{Bucket: b, Engines: engines.NewRegistry(postgres.New()), Sources: sourceMap{src.Name: src, nowal.Name: nowal},
		Worker: "test", Version: "test", Log: enginetest.TestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{src.Name, nowal.Name} {
		req := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Source: name}
		out := x.Run(ctx, req, 1, nil)
		if err := x.Commit(ctx, out); err != nil || out.Result.Status != requests.StatusSucceeded {
			t.Fatalf("base backup of %s: %v %s %s", name, err, out.Result.Status, out.Result.Error)
		}
	}
	// Wait until the bucket has the WAL past both backups.
	conn, err := srv.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	var lsnText string
	err = conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsnText)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := pglogrepl.ParseLSN(lsnText)
	timeout := time.After(2 * time.Minute)
	for {
		mu.Lock()
		got := end
		mu.Unlock()
		if got >= want {
			break
		}
		select {
		case <-wrote:
		case <-timeout:
			t.Fatalf("the stream did not reach %s (at %s)", want, got)
		}
	}
	// A source of another engine: no window is asked for.
	other := &index.BackupIndex{APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: "redis-1", RequestID: "redis-1",
		Cluster: requests.DefaultCluster, Source: "cnvrg/redis", Engine: "redis", Format: "test/v1", CapsuleVersion: "test",
		Status: requests.StatusSucceeded, Attempt: 1, StartedAt: time.Now().Add(-time.Minute).UTC(), FinishedAt: time.Now().UTC(),
		Artifacts: []index.Artifact{{Name: "dump", Key: requests.ArtifactKey(requests.DefaultCluster, "cnvrg/redis", "redis-1", 1, "dump"), SHA256: strings.Repeat("0", 64), Compression: "zstd"}}}
	if err := index.Write(ctx, b, other); err != nil {
		t.Fatal(err)
	}

	win, err := pitr.RecoverableWindow(ctx, b, requests.DefaultCluster, src.Name, nil)
	if err != nil || win == nil {
		t.Fatalf("window: %v %v", win, err)
	}
	handler, err := api.New(api.Config{Bucket: b, Log: enginetest.TestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(handler)
	defer hs.Close()

	cards := map[string]pageNode{}
	renderPage(t, hs.URL).find("", func(n pageNode, source string) {
		if strings.Contains(n.Attrs["class"], "error") {
			t.Errorf("the page shows an error: %s", n.Text)
		}
		if !strings.Contains(" "+n.Attrs["class"]+" ", " pitr ") {
			return
		}
		if _, dup := cards[source]; dup {
			t.Errorf("two windows on %s", source)
		}
		cards[source] = n
	})
	c, ok := cards[src.Name]
	switch {
	case !ok:
		t.Fatalf("no window on %s (cards: %v)", src.Name, cards)
	case c.Attrs["data-pitr"] != "window":
		t.Errorf("%s's card is %q: %s", src.Name, c.Attrs["data-pitr"], c.Text)
	case c.Attrs["data-earliest"] != win.Earliest.Format(time.RFC3339Nano) || c.Attrs["data-latest"] != win.Latest.Format(time.RFC3339Nano):
		t.Errorf("%s's card shows %s – %s, want the API's %s – %s", src.Name, c.Attrs["data-earliest"], c.Attrs["data-latest"], win.Earliest.Format(time.RFC3339Nano), win.Latest.Format(time.RFC3339Nano))
	case !strings.Contains(c.Text, "recoverable from") || !strings.Contains(c.Text, win.EarliestLSN) || !strings.Contains(c.Text, win.LatestLSN) || !strings.Contains(c.Text, "1 base backup"):
		t.Errorf("%s's card does not say its window: %q", src.Name, c.Text)
	}
	t.Logf("%s: %s", src.Name, c.Text)
	if c := cards[nowal.Name]; c.Attrs["data-pitr"] != "none" || !strings.Contains(c.Text, "no restore possible yet") || !strings.Contains(c.Text, "no base backup followed by its WAL") {
		t.Errorf("%s (no WAL) shows %+v, want a card saying no restore is possible yet and why", nowal.Name, c)
	}
	if c, ok := cards["cnvrg/redis"]; ok {
		t.Errorf("cnvrg/redis, no PostgreSQL source, shows a window: %s", c.Text)
	}
}

// A point-in-time Restore is submitted through the API like any request,
// checked as strictly as one written to the bucket.
func TestSubmitPointInTimeRestore(t *testing.T) {
	b := fsBucket(t)
	h := newHarness(t, b, nil)
	r := h.post("/v1/requests", []byte(`{"kind":"Restore","pointInTime":{"source":"cnvrg/pg","time":"2026-12-07T05:03:50Z"},"target":"cnvrg/pg-copy","dropPrevious":true}`))
	wantStatus(t, "point-in-time restore", r, 201, "")
	var st struct {
		ID      string            `json:"id"`
		Request *requests.Request `json:"request"`
	}
	r.decode(t, &st)
	if st.Request == nil || st.Request.PointInTime == nil || st.Request.PointInTime.Source != "cnvrg/pg" || !st.Request.PointInTime.Time.Equal(time.Date(2026, 12, 7, 5, 3, 50, 0, time.UTC)) {
		t.Fatalf("201: %s", r.body)
	}
	wantStatus(t, "status", h.get("/v1/requests/"+st.ID), 200, "")
	wantStatus(t, "both backupId and pointInTime",
		h.post("/v1/requests", []byte(`{"kind":"Restore","backupId":"b1","pointInTime":{"source":"cnvrg/pg","latest":true}}`)), 400, api.CodeInvalidRequest)
	r = h.post("/v1/requests", []byte(`{"kind":"Restore","pointInTime":{"source":"cnvrg/pg","latest":true},"allowUnsigned":true}`))
	wantStatus(t, "point-in-time restore accepting unsigned base backups and WAL", r, 201, "")
	r.decode(t, &st)
	if st.Request == nil || !st.Request.AllowUnsigned {
		t.Errorf("allowUnsigned was not kept: %s", r.body)
	}
	wantStatus(t, "time and latest",
		h.post("/v1/requests", []byte(`{"kind":"Restore","pointInTime":{"source":"cnvrg/pg","latest":true,"time":"2026-12-07T05:03:50Z"}}`)), 400, api.CodeInvalidRequest)
}
