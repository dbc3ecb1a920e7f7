package browser

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/color"
	"image/png"
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
	Badge    string `json:"badge"`
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
		want[req.ID] = shown{ID: req.ID, Status: "succeeded", Cluster: "default", Source: "uploads", Verified: "never"}
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
			w := shown{ID: id, Status: "succeeded", Cluster: "cnvrg/cnvrg-app", Source: src, Verified: "never"}
			var v *index.Verification
			switch {
			case src == "cnvrg/pg" && i == 13:
				v = &index.Verification{OK: true, State: index.VerifyRestored, Checks: []index.CheckResult{{Name: "restore", OK: true}}}
				w.Verified = "restored"
			case src == "cnvrg/pg" && i == 12:
				v = &index.Verification{OK: false, State: index.VerifyFailed, Error: "row count differs in table jobs", Checks: []index.CheckResult{{Name: "restore", OK: false}}}
				w.Verified = "failed"
			case src == "cnvrg/redis" && i == 12:
				// As the executor recorded Redis verifications before they
				// restored anything: ok, no state, checksum-only checks.
				v = &index.Verification{OK: true, Checks: []index.CheckResult{{Name: "sha256 keys.bin", OK: true, Detail: "checksum only: engine redis has no scratch restore"}}}
				w.Verified = "checksum"
			}
			if v != nil {
				v.APIVersion, v.Kind, v.BackupID, v.RequestID, v.VerifiedAt = requests.APIVersion, index.KindVerification, id, "verify-"+id, finished.Add(time.Hour)
				if err := index.WriteVerification(ctx, b, xi, v); err != nil {
					t.Fatal(err)
				}
			}
			want[id] = w
		}
	}

	// Backups that left only a result: a failure of cnvrg/pg after its
	// newest success (its error's first line is markup, which the page
	// must show as text), a source that never succeeded, and a canceled
	// backup of uploads before its successes.
	now := time.Now().UTC()
	hostile := `<img src=x onerror="document.body.dataset.pwned='1'">backup cnvrg/pg: pg_dump: connection to server at "10.0.0.7", port 5432 failed`
	wantFailures := map[string]failureShown{
		"cnvrg/cnvrg-app cnvrg/pg": {ID: "pgfail-" + randHex(3), Status: "failed", Current: "true", Error: hostile},
		"cnvrg/cnvrg-app cnvrg/es": {ID: "esfail-" + randHex(3), Status: "rejected", Current: "true", Error: `source: unknown source "cnvrg/es"`},
		"default uploads":          {ID: "upcancel-" + randHex(3), Status: "canceled", Current: "false", Error: "canceled by request"},
	}
	for k, f := range wantFailures {
		cluster, source, _ := strings.Cut(k, " ")
		finished := now.Add(-time.Hour)
		if source == "uploads" {
			finished = now.Add(-3 * time.Hour)
		}
		writeResult(t, b, requests.Result{APIVersion: requests.APIVersion, Kind: "Result", ID: f.ID, RequestKind: requests.KindBackup,
			Status: requests.Status(f.Status), Cluster: cluster, Source: source, Error: f.Error + "\n\tat the second line", Attempts: 3, FinishedAt: finished})
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
		badge: (tr.querySelector("td.verify .badge") || {}).textContent || "",
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
	cards, err := chromedp.Run(tctx, chromedp.Evaluate[[]failureShown](`[...document.querySelectorAll("article[data-source] .failure")].map(f => ({
		where: f.closest("article").dataset.cluster + " " + f.closest("article").dataset.source,
		id: f.dataset.failureId,
		status: f.dataset.status,
		current: f.dataset.current,
		error: f.querySelector(".failure-error").textContent,
		head: f.querySelector(".failure-head").innerText,
		elements: f.querySelectorAll("img, script, iframe").length,
		noBackups: !!f.closest("article").querySelector(".no-backups"),
	}))`))
	if err != nil {
		t.Fatal(err)
	}
	pwned, err := chromedp.Run(tctx, chromedp.Evaluate[string](`document.body.dataset.pwned || ""`))
	if err != nil {
		t.Fatal(err)
	}
	boxes, err := chromedp.Run(tctx, chromedp.Evaluate[map[string]box](`(() => {
		const r = (e) => { if (!e) return {}; const b = e.getBoundingClientRect(); return {x: b.left + scrollX, y: b.top + scrollY, w: b.width, h: b.height, dpr: devicePixelRatio}; };
		const out = {failure: r(document.querySelector('article[data-source="cnvrg/pg"] .failure'))};
		for (const s of ["restored", "checksum", "failed", "never"]) out[s] = r(document.querySelector('td.verify[data-verified="' + s + '"] .badge'));
		return out;
	})()`))
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
		case r.Badge != badgeText[w.Verified]:
			t.Errorf("%s: verification badge %q, want %q", r.ID, r.Badge, badgeText[w.Verified])
		}
		seen[r.ID] = true
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("backup %s is not on the page", id)
		}
	}
	// A failure card on each source that failed, with the first line of
	// the error as text; sources that never succeeded have a card.
	gotCards := map[string]failureShown{}
	for _, c := range cards {
		if _, dup := gotCards[c.Where]; dup {
			t.Errorf("two failure cards on %s", c.Where)
		}
		gotCards[c.Where] = c
	}
	for where, w := range wantFailures {
		c, ok := gotCards[where]
		switch {
		case !ok:
			t.Errorf("no failure card on %s (cards: %+v)", where, cards)
		case c.ID != w.ID || c.Status != w.Status || c.Current != w.Current || c.Error != w.Error:
			t.Errorf("failure card on %s: %+v, want %+v", where, c, w)
		case c.Elements != 0 || strings.Contains(c.Error, "second line"):
			t.Errorf("failure card on %s renders %d elements from the error, or more than its first line: %+v", where, c.Elements, c)
		case !strings.Contains(c.Head, "ago") || !strings.Contains(c.Head, w.ID):
			t.Errorf("failure card on %s does not say when and which: %q", where, c.Head)
		}
	}
	if len(cards) != len(wantFailures) {
		t.Errorf("%d failure cards, want %d: %+v", len(cards), len(wantFailures), cards)
	}
	if !gotCards["cnvrg/cnvrg-app cnvrg/es"].NoBackups {
		t.Errorf("the source that never succeeded does not say it has no backup")
	}
	if pwned != "" {
		t.Errorf("the error's markup ran in the page")
	}
	checkScreenshot(t, png, boxes)

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

type failureShown struct {
	Where     string `json:"where"`
	ID        string `json:"id"`
	Status    string `json:"status"`
	Current   string `json:"current"`
	Error     string `json:"error"`
	Head      string `json:"head"`
	Elements  int    `json:"elements"`
	NoBackups bool   `json:"noBackups"`
}

// badgeText is what each verification state's badge says: a symbol and
// words, so that no state is told by its color alone.
var badgeText = map[string]string{
	"restored": "✓ restored",
	"checksum": "≈ checksum only",
	"failed":   "✗ failed",
	"never":    "– never verified",
}

// box is an element's place on the page, in CSS pixels.
type box struct {
	X, Y, W, H, DPR float64
}

func writeResult(t *testing.T, b bucket.Bucket, r requests.Result) {
	t.Helper()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(context.Background(), b, requests.ResultKey(r.ID), data, bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
}

// checkScreenshot looks at the pixels: the failure card is drawn in the
// failure colors (its background, a red bar on its left), and each
// verification badge in its own color, all four different.
func checkScreenshot(t *testing.T, data []byte, boxes map[string]box) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 800 {
		t.Fatalf("the screenshot is %dx%d", b.Dx(), b.Dy())
	}
	// pixels returns the colors in a box (shrunk by inset CSS pixels),
	// by count.
	pixels := func(bx box, inset float64) map[color.RGBA]int {
		d := bx.DPR
		if d == 0 {
			d = 1
		}
		out := map[color.RGBA]int{}
		for y := int((bx.Y + inset) * d); y < int((bx.Y+bx.H-inset)*d); y++ {
			for x := int((bx.X + inset) * d); x < int((bx.X+bx.W-inset)*d); x++ {
				r, g, b, _ := img.At(x, y).RGBA()
				out[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), 255}]++
			}
		}
		return out
	}
	near := func(c color.RGBA, hex string) bool {
		var r, g, b uint8
		fmt.Sscanf(hex, "#%02x%02x%02x", &r, &g, &b)
		d := func(x, y uint8) int { return max(int(x)-int(y), int(y)-int(x)) }
		return d(c.R, r) <= 6 && d(c.G, g) <= 6 && d(c.B, b) <= 6
	}
	share := func(px map[color.RGBA]int, hex string) float64 {
		var n, all int
		for c, k := range px {
			all += k
			if near(c, hex) {
				n += k
			}
		}
		if all == 0 {
			return 0
		}
		return float64(n) / float64(all)
	}
	for _, k := range []string{"failure", "restored", "checksum", "failed", "never"} {
		if boxes[k].W == 0 {
			t.Errorf("the page shows no %s element to look at in the screenshot", k)
			return
		}
	}
	card := boxes["failure"]
	if s := share(pixels(card, 6), "#fdf1f0"); s < 0.5 {
		t.Errorf("the failure card (%+v) is %.0f%% its background color in the screenshot, want most of it", card, 100*s)
	}
	bar := card
	bar.W = 4
	if s := share(pixels(bar, 0), "#c2372d"); s < 0.5 {
		t.Errorf("the failure card's left bar is %.0f%% red in the screenshot", 100*s)
	}
	want := map[string]string{"restored": "#e8f5ee", "checksum": "#fbf3e6", "failed": "#fbeceb", "never": "#eef1f6"}
	seen := map[color.RGBA]string{}
	for state, hex := range want {
		px := pixels(boxes[state], 1)
		var top color.RGBA
		for c, n := range px {
			if n > px[top] {
				top = c
			}
		}
		if !near(top, hex) {
			t.Errorf("the %s badge (%+v) is drawn mostly in %v, want %s", state, boxes[state], top, hex)
		}
		if other, dup := seen[top]; dup {
			t.Errorf("the %s and %s badges have the same color %v", state, other, top)
		}
		seen[top] = state
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
