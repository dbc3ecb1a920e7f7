package browser

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// chromium finds the browser, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CAPSULE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium found ($CAPSULE_CHROMIUM, chromium, chromium-browser, google-chrome): install it with scripts/install-browser.sh")
	return ""
}

// artifactDir is where the screenshot is kept.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CAPSULE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

type sources map[string]engines.Source

func (s sources) Lookup(name string) (engines.Source, error) {
	if src, ok := s[name]; ok {
		return src, nil
	}
	return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
}

type shown struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Cluster  string `json:"cluster"`
	Source   string `json:"source"`
	Verified string `json:"verified"`
	Text     string `json:"text"`
}

// TestPageShowsTheBackups creates backups (two real ones through the
// executor and the files engine, and a history of indexes in a second
// cluster), serves the API over them, and checks what Chromium shows.
func TestPageShowsTheBackups(t *testing.T) {
	browser := chromium(t)
	ctx := context.Background()
	dir := t.TempDir()
	fb, err := fs.New(filepath.Join(dir, "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")

	// Real backups of a directory.
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	x, err := executor.New(executor.Config{
		Bucket: b, Engines: engines.NewRegistry(files.New()), Worker: "browser-test", Version: "test",
		Sources: sources{"uploads": {Name: "uploads", Engine: "files", Config: map[string]any{"path": data}}},
		Log:     enginetest.TestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]shown{} // by id
	for i := range 2 {
		blob := make([]byte, (i+1)<<20)
		_, _ = rand.Read(blob)
		if err := os.WriteFile(filepath.Join(data, fmt.Sprintf("blob%d", i)), blob, 0o644); err != nil {
			t.Fatal(err)
		}
		req := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Source: "uploads"}
		out := x.Run(ctx, req, 1, executor.NewTracker())
		if err := x.Commit(ctx, out); err != nil || out.Result.Status != requests.StatusSucceeded {
			t.Fatalf("backup %d: %v %s %s", i, err, out.Result.Status, out.Result.Error)
		}
		want[req.ID] = shown{ID: req.ID, Status: "succeeded", Cluster: "default", Source: "uploads", Verified: "none"}
	}

	// A history in a cluster whose name has a '/', one verified, one whose
	// verification failed.
	start := time.Now().Add(-14 * 24 * time.Hour).Truncate(time.Second)
	for i := range 14 {
		for _, src := range []string{"cnvrg/pg", "cnvrg/redis"} {
			if src == "cnvrg/redis" && i%3 != 0 {
				continue
			}
			id := fmt.Sprintf("%s-%02d-%s", strings.ReplaceAll(src, "/", "."), i, randHex(3))
			size := int64(40<<20 + i*3<<20 + (i%4)*5<<20)
			took := time.Duration(20+i*3+(i%5)*15) * time.Second
			if src == "cnvrg/redis" {
				size, took = size/10, took/4
			}
			finished := start.Add(time.Duration(i)*24*time.Hour + took)
			xi := &index.BackupIndex{
				APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: id, RequestID: id,
				Cluster: "cnvrg/cnvrg-app", Source: src, Engine: strings.TrimPrefix(src, "cnvrg/"), Format: "test/v1",
				CapsuleVersion: "test", Status: requests.StatusSucceeded, Attempt: 1,
				StartedAt: finished.Add(-took), FinishedAt: finished, Bytes: size, StoredBytes: size / 3,
				Artifacts: []index.Artifact{{Name: "dump", Key: requests.ArtifactKey("cnvrg/cnvrg-app", src, id, 1, "dump"),
					Size: size, StoredSize: size / 3, SHA256: strings.Repeat("0", 64), Compression: "zstd"}},
			}
			if err := index.Write(ctx, b, xi); err != nil {
				t.Fatal(err)
			}
			w := shown{ID: id, Status: "succeeded", Cluster: "cnvrg/cnvrg-app", Source: src, Verified: "none"}
			if src == "cnvrg/pg" && (i == 12 || i == 13) {
				v := &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: id, RequestID: "verify-" + id,
					OK: i == 13, VerifiedAt: finished.Add(time.Hour), Checks: []index.CheckResult{{Name: "restore", OK: i == 13}}}
				w.Verified = "ok"
				if i == 12 {
					v.Error, w.Verified = "row count differs in table jobs", "failed"
				}
				if err := index.WriteVerification(ctx, b, xi, v); err != nil {
					t.Fatal(err)
				}
			}
			want[id] = w
		}
	}

	handler, err := api.New(api.Config{Bucket: b, Log: enginetest.TestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler)
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	defer cancelBrowser()
	tctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	// Everything the page logs as an error, and every URL it asks for.
	var mu sync.Mutex
	var problems, urls []string
	if err := chromedp.Listen(tctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			problems = append(problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				problems = append(problems, fmt.Sprintf("console.%s", ev.Type))
			}
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				problems = append(problems, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		case *network.EventRequestWillBeSent:
			urls = append(urls, ev.Request.URL)
		}
	}); err != nil {
		t.Fatalf("start Chromium (%s): %v", browser, err)
	}

	if err := chromedp.Do(tctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`main[data-loaded="true"]`)),
	); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	rows, err := chromedp.Run(tctx, chromedp.Evaluate[[]shown](`[...document.querySelectorAll("tr[data-backup-id]")].map(tr => ({
		id: tr.dataset.backupId,
		status: tr.dataset.status,
		cluster: tr.closest("section[data-cluster]").dataset.cluster,
		source: tr.closest("article[data-source]").dataset.source,
		verified: tr.querySelector("td.verify").dataset.verified,
		text: tr.innerText,
	}))`))
	if err != nil {
		t.Fatal(err)
	}
	bars, err := chromedp.Run(tctx, chromedp.Evaluate[map[string]int](`Object.fromEntries([...document.querySelectorAll("article[data-source]")].map(a =>
		[a.dataset.cluster + " " + a.dataset.source, a.querySelectorAll("svg.timeline rect.bar").length]))`))
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifactDir(t), "page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// Every backup is shown once, where it belongs, with its status and
	// verification; nothing else is.
	seen := map[string]bool{}
	for _, r := range rows {
		w, ok := want[r.ID]
		switch {
		case !ok:
			t.Errorf("the page shows %s, which the test did not create", r.ID)
		case seen[r.ID]:
			t.Errorf("the page shows %s twice", r.ID)
		case r.Status != w.Status || r.Cluster != w.Cluster || r.Source != w.Source || r.Verified != w.Verified:
			t.Errorf("%s shown as %+v, want %+v", r.ID, r, w)
		case !strings.Contains(r.Text, w.Status):
			t.Errorf("%s: the row's text %q does not say %s", r.ID, r.Text, w.Status)
		}
		seen[r.ID] = true
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("backup %s is not on the page", id)
		}
	}
	wantBars := map[string]int{"default uploads": 2, "cnvrg/cnvrg-app cnvrg/pg": 14, "cnvrg/cnvrg-app cnvrg/redis": 5}
	for k, n := range wantBars {
		if bars[k] != n {
			t.Errorf("timeline of %s: %d bars, want %d (all: %v)", k, bars[k], n, bars)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("the page logged: %s", p)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, srv.URL+"/") {
			t.Errorf("the page fetched %s, not from the API", u)
		}
	}
	if !slices.ContainsFunc(urls, func(u string) bool { return strings.Contains(u, "/v1/clusters/cnvrg%2Fcnvrg-app/backups") }) {
		t.Errorf("the page never asked for cnvrg/cnvrg-app's backups: %v", urls)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
