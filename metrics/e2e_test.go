package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/internal/sqstest"
	"github.com/cnvrg/capsule/metrics"
	"github.com/cnvrg/capsule/notify"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

type sources map[string]engines.Source

func (s sources) Lookup(name string) (engines.Source, error) {
	src, ok := s[name]
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
	}
	return src, nil
}

func (s sources) engineOf(name string) string { return s[name].Engine }

// worker is one in-process worker with its own metrics, as a capsule
// worker process has.
type worker struct {
	reg *metrics.Registry
	w   *watcher.Watcher
	l   *notify.Listener
}

// After an end-to-end run of three workers on a real S3 server, with SQS
// notifications for some requests, each worker's /metrics is scraped and
// the sums over workers must match what the results in the bucket say.
func TestMetricsMatchTheResultsAfterAnEndToEndRun(t *testing.T) {
	srv := s3test.Shared(t)
	queue := sqstest.Start(t)
	name := srv.NewBucket(t)
	queueURL := queue.NewQueue(t)
	const prefix = "capsule/"
	ctx := context.Background()
	sb, err := s3.New(ctx, s3.Options{Bucket: name, Endpoint: srv.Endpoint, Region: srv.Region,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Log: enginetest.TestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(sb, prefix)
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(data, fmt.Sprintf("f%d.txt", i)), []byte(fmt.Sprintf("file %d of the e2e run\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srcs := sources{"data": {Name: "data", Engine: "files", Config: map[string]any{"path": data}}}

	// The requests, all in the bucket before any worker starts: six
	// backups, one of an unknown source (rejected), one canceled before
	// it starts. Half get a notification, in turn in each format.
	var backups []string
	submit := func(source string) string {
		req := &requests.Request{Kind: requests.KindBackup, Source: source}
		if err := client.Submit(ctx, b, req); err != nil {
			t.Fatal(err)
		}
		return req.ID
	}
	for range 6 {
		backups = append(backups, submit("data"))
	}
	rejected := submit("nope")
	canceled := submit("data")
	if err := client.Cancel(ctx, b, canceled, "test"); err != nil {
		t.Fatal(err)
	}
	sent := 0
	notifyOf := func(id string) {
		f := sqstest.Formats[sent%len(sqstest.Formats)]
		if err := queue.Send(ctx, queueURL, sqstest.S3Event(f, name, prefix+requests.RequestKey(id), "etag")); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	for _, id := range append([]string{rejected, canceled}, backups[:3]...) {
		notifyOf(id)
	}

	finished := make(chan watcher.Event, 100)
	var workers []*worker
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 3 {
		wk := &worker{reg: metrics.New(metrics.Options{EngineOf: srcs.engineOf, NoRuntime: true})}
		ib := metrics.InstrumentBucket(b, wk.reg)
		id := fmt.Sprintf("w%d", i+1)
		x, err := executor.New(executor.Config{Bucket: ib, Engines: engines.NewRegistry(files.New()), Sources: srcs, Worker: id, Log: enginetest.TestLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		wk.w, err = watcher.New(watcher.Config{
			Bucket: ib, Runner: x, Worker: id, Concurrency: 2, Poll: 200 * time.Millisecond,
			Lease: 3 * time.Second, Grace: time.Second, Log: enginetest.TestLog(t),
			Events: func(e watcher.Event) {
				wk.reg.Observe(e)
				if e.Type == watcher.EventFinished {
					finished <- e
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		wk.l, err = notify.New(notify.Config{
			Client: queue.Client(), QueueURL: queueURL, Bucket: name, Prefix: prefix,
			Claim: wk.w.ClaimHint, Observe: wk.reg.ObserveSQS, WaitTime: time.Second, Log: enginetest.TestLog(t),
			VisibilityTimeout: 5 * time.Second, // a receive whose answer is lost comes back soon
		})
		if err != nil {
			t.Fatal(err)
		}
		workers = append(workers, wk)
		wg.Add(2)
		go func() { defer wg.Done(); wk.w.Run(runCtx) }()
		go func() { defer wg.Done(); wk.l.Run(runCtx) }()
	}
	waitFinished := func(ids ...string) {
		t.Helper()
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		deadline := time.After(60 * time.Second)
		for len(want) > 0 {
			select {
			case e := <-finished:
				delete(want, e.ID)
			case <-deadline:
				t.Fatalf("requests %v did not finish", want)
			}
		}
	}
	waitFinished(append([]string{rejected, canceled}, backups...)...)

	// Then a verification of one of the backups, named by a message.
	verify := &requests.Request{Kind: requests.KindVerify, BackupID: backups[0]}
	if err := client.Submit(ctx, b, verify); err != nil {
		t.Fatal(err)
	}
	notifyOf(verify.ID)
	waitFinished(verify.ID)
	// Every message is handled (and deleted) before the scrape.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := queue.Depth(ctx, queueURL)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages left on the queue", n)
		}
		time.Sleep(20 * time.Millisecond) // goaws gives no signal
	}
	stop()
	wg.Wait()

	// What the bucket says.
	type kindStatus struct {
		kind   requests.Kind
		status requests.Status
	}
	results := map[kindStatus]int{}
	var backupBytes, backupStored int64
	var newestBackup, verified time.Time
	all := append([]string{rejected, canceled, verify.ID}, backups...)
	for _, id := range all {
		raw, _, err := bucket.GetBytes(ctx, b, requests.ResultKey(id))
		if err != nil {
			t.Fatalf("result of %s: %v", id, err)
		}
		var r requests.Result
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		results[kindStatus{r.RequestKind, r.Status}]++
		if r.RequestKind == requests.KindBackup && r.Status == requests.StatusSucceeded {
			backupBytes += r.Bytes
			backupStored += r.StoredBytes
			if r.FinishedAt.After(newestBackup) {
				newestBackup = r.FinishedAt
			}
		}
		if r.RequestKind == requests.KindVerify && r.Status == requests.StatusSucceeded {
			verified = r.FinishedAt
		}
	}
	want := map[kindStatus]int{
		{requests.KindBackup, requests.StatusSucceeded}: 6,
		{requests.KindBackup, requests.StatusRejected}:  1,
		{requests.KindBackup, requests.StatusCanceled}:  1,
		{requests.KindVerify, requests.StatusSucceeded}: 1,
	}
	for k, n := range want {
		if results[k] != n {
			t.Fatalf("results %v, want %v", results, want)
		}
	}

	// What the workers' /metrics say.
	var s scrapes
	for _, wk := range workers {
		s = append(s, scrape(t, wk.reg.Handler()))
	}
	for k, n := range results {
		if got := s.sum(metrics.RequestsFinished, L{"kind": string(k.kind), "status": string(k.status)}); got != float64(n) {
			t.Errorf("finished{kind=%s,status=%s} = %v over workers, the bucket has %d results", k.kind, k.status, got, n)
		}
	}
	checks := []struct {
		what   string
		name   string
		labels L
		want   float64
	}{
		{"backups finished per engine", metrics.RequestsFinished, L{"kind": "Backup", "engine": "files", "status": "succeeded"}, 6},
		{"the rejected request reached no engine", metrics.RequestsFinished, L{"engine": "unknown", "status": "rejected"}, 1},
		{"verifications finished per engine", metrics.RequestsFinished, L{"kind": "Verify", "engine": "files", "status": "succeeded"}, 1},
		// Claims: every run, not the request canceled before it started.
		{"claims", metrics.RequestsClaimed, nil, 8},
		{"backup claims of a known source", metrics.RequestsClaimed, L{"kind": "Backup", "engine": "files"}, 6},
		{"claims whose engine is not known yet", metrics.RequestsClaimed, L{"engine": "unknown"}, 2},
		{"takeovers", metrics.LeaseTakeovers, nil, 0},
		{"lease losses", metrics.LeaseLosses, nil, 0},
		{"backup durations", metrics.RequestDuration, L{"kind": "Backup", "engine": "files"}, 6},
		{"backup sizes", metrics.RequestBytes, L{"kind": "Backup", "engine": "files"}, 6},
		{"messages handled", metrics.SQSMessages, nil, float64(sent)},
		{"SQS errors", metrics.SQSErrors, nil, 0},
	}
	for _, c := range checks {
		if got := s.sum(c.name, c.labels); got != c.want {
			t.Errorf("%s: %s%v = %v, want %v", c.what, c.name, c.labels, got, c.want)
		}
	}
	if got := s.histSum(metrics.RequestBytes, L{"kind": "Backup"}); got != float64(backupBytes) {
		t.Errorf("backup bytes sum %v, the results say %d", got, backupBytes)
	}
	if got := s.histSum(metrics.RequestStoredBytes, L{"kind": "Backup"}); got != float64(backupStored) {
		t.Errorf("stored bytes sum %v, the results say %d", got, backupStored)
	}
	// Each finished request wrote its result and its lease at least.
	if got := s.sum(metrics.BucketOperations, L{"operation": "put", "outcome": "ok"}); got < 2*float64(len(all)) {
		t.Errorf("%v successful puts for %d finished requests", got, len(all))
	}
	if got := s.sum(metrics.BucketOperations, L{"operation": "list", "outcome": "ok"}); got == 0 {
		t.Error("no list counted")
	}
	if got := s.sum(metrics.BucketOperations, L{"outcome": "error"}); got != 0 {
		t.Errorf("%v bucket errors", got)
	}
	const µs = 1e-6
	if got := s.max(metrics.LastBackupSuccess, L{"cluster": "default", "source": "data"}); math.Abs(got-unix(newestBackup)) > µs {
		t.Errorf("newest backup %v over workers, the results say %v", got, unix(newestBackup))
	}
	if got := s.max(metrics.LastVerificationSuccess, L{"cluster": "default", "source": "data"}); math.Abs(got-unix(verified)) > µs {
		t.Errorf("newest verification %v over workers, the results say %v", got, unix(verified))
	}

	// A worker that starts now reports the same ages from the catalog.
	fresh := metrics.New(metrics.Options{NoRuntime: true})
	if n, err := fresh.LoadCatalog(ctx, b); err != nil || n != 6 {
		t.Fatalf("LoadCatalog = %d, %v; want 6 backups", n, err)
	}
	entries, err := index.List(ctx, b, index.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	fs := scrapes{scrape(t, fresh.Handler())}
	if got := fs.max(metrics.LastBackupSuccess, L{"source": "data"}); math.Abs(got-unix(entries[0].FinishedAt)) > µs {
		t.Errorf("catalog's newest backup %v, want %v", got, unix(entries[0].FinishedAt))
	}
	var verifiedAt time.Time
	for _, e := range entries {
		if e.Verification != nil && e.Verification.OK {
			verifiedAt = e.Verification.VerifiedAt
		}
	}
	if got := fs.max(metrics.LastVerificationSuccess, L{"source": "data"}); verifiedAt.IsZero() || math.Abs(got-unix(verifiedAt)) > µs {
		t.Errorf("catalog's newest verification %v, want %v", got, verifiedAt)
	}
}
