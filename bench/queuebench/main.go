// Command queuebench measures the request queue on a versitygw: how many
// S3 calls a request costs end to end (claim, run, commit, clean up), by
// operation and by the kind of object, how many tiny requests per second
// four workers complete, what an idle worker calls per poll interval, and
// what a worker reads at start-up to seed its backup-age gauges.
//
// Every S3 call of the workers goes through a counting reverse proxy in
// front of the server, so the counts are the calls on the wire (retries
// and multipart steps included). See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cnvrg/capsule/bench/internal/benchkit"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/metrics"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
	"github.com/sirupsen/logrus"
)

var (
	nReq    = flag.Int("requests", 400, "tiny requests in the batch")
	workers = flag.Int("workers", 4, "workers")
	poll    = flag.Duration("poll", 200*time.Millisecond, "the workers' poll interval")
	idleFor = flag.Duration("idle", 5*time.Second, "how long the idle workers are watched")
)

// Targets of issue 20.
const (
	maxCallsPerRequest  = 8.0
	minRequestsPerSec   = 200.0
	maxIdleListsPerPoll = 1.0
)

func main() {
	flag.Parse()
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "queuebench:", err)
		os.Exit(1)
	}
}

// counter counts the S3 calls passing through the proxy by operation and
// object kind.
type counter struct {
	mu     sync.Mutex
	counts map[string]int
	total  atomic.Int64
}

func (c *counter) reset() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.counts
	c.counts = map[string]int{}
	c.total.Store(0)
	return old
}

func (c *counter) add(r *http.Request) {
	op := operation(r)
	kind := objectKind(r.URL.Path, r.URL.Query().Get("prefix"))
	if op == "DELETE-BATCH" {
		// DeleteObjects names its keys in the body: a finish's request,
		// lease (and cancel object, when one was seen).
		kind = "request+lease"
	}
	c.mu.Lock()
	c.counts[op+" "+kind]++
	c.mu.Unlock()
	c.total.Add(1)
}

func operation(r *http.Request) string {
	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet:
		if q.Has("list-type") || q.Has("prefix") || q.Has("uploads") {
			return "LIST"
		}
		return "GET"
	case http.MethodHead:
		return "HEAD"
	case http.MethodPut:
		if q.Has("partNumber") {
			return "PUT-PART"
		}
		return "PUT"
	case http.MethodPost:
		if q.Has("uploads") {
			return "MPU-START"
		}
		if q.Has("uploadId") {
			return "MPU-COMPLETE"
		}
		if q.Has("delete") {
			return "DELETE-BATCH"
		}
		return "POST"
	case http.MethodDelete:
		return "DELETE"
	}
	return r.Method
}

// objectKind names what a key (or a listing's prefix) is in capsule's
// layout.
func objectKind(path, prefix string) string {
	key := path
	if prefix != "" {
		key = prefix
	}
	if i := strings.Index(key, "capsule/"); i >= 0 {
		key = key[i+len("capsule/"):]
	}
	switch {
	case strings.HasPrefix(key, "requests/"):
		return "request"
	case strings.HasPrefix(key, "leases/"):
		return "lease"
	case strings.HasPrefix(key, "cancel/"):
		return "cancel"
	case strings.HasPrefix(key, "results/"):
		return "result"
	case strings.HasPrefix(key, "locks/"):
		return "lock"
	case strings.HasPrefix(key, "backups/") && strings.HasSuffix(key, "backupIndex.json"):
		return "index"
	case strings.HasPrefix(key, "backups/"):
		return "backup data"
	case key == "" || key == "/":
		return "root"
	}
	if i := strings.Index(key, "/"); i > 0 {
		return key[:i]
	}
	return key
}

type proxy struct {
	url string
	c   *counter
}

func startProxy(target string) (*proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &counter{counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256}
	rp.ErrorLog = nil
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.add(r)
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	return &proxy{url: "http://" + ln.Addr().String(), c: c}, nil
}

type env struct {
	srv  *benchkit.S3
	px   *proxy
	data string
	log  *logrus.Logger
	dir  string
}

// counted is a client of bucket name through the counting proxy.
func (e *env) counted(ctx context.Context, name string) (bucket.Bucket, error) {
	b, err := s3.New(ctx, s3.Options{Bucket: name, Endpoint: e.px.url, Region: e.srv.Region, PathStyle: true,
		AccessKey: e.srv.AccessKey, SecretKey: e.srv.SecretKey})
	if err != nil {
		return nil, err
	}
	return bucket.Prefixed(b, "capsule/"), nil
}

type fleet struct {
	ws     []*watcher.Watcher
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func (f *fleet) stop() {
	f.cancel()
	f.done.Wait()
}

// startWorkers starts n in-process workers (watcher and executor, the
// files engine on a one-file directory) on bucket name, each with its own
// client through the proxy.
func (e *env) startWorkers(ctx context.Context, name string, n int, events func(watcher.Event)) (*fleet, error) {
	ctx, cancel := context.WithCancel(ctx)
	f := &fleet{cancel: cancel}
	for i := range n {
		b, err := e.counted(ctx, name)
		if err != nil {
			cancel()
			return nil, err
		}
		worker := fmt.Sprintf("bench-%d", i)
		x, err := executor.New(executor.Config{Bucket: b, Engines: engines.NewRegistry(files.New()), Worker: worker, Log: e.log,
			Sources: benchkit.Sources{"data": {Name: "data", Engine: "files", Config: map[string]any{"path": e.data}}}})
		if err != nil {
			cancel()
			return nil, err
		}
		w, err := watcher.New(watcher.Config{Bucket: b, Runner: x, Worker: worker, Poll: *poll, Log: e.log, Events: events})
		if err != nil {
			cancel()
			return nil, err
		}
		f.ws = append(f.ws, w)
		f.done.Add(1)
		go func() { defer f.done.Done(); _ = w.Run(ctx) }()
	}
	return f, nil
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "queuebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := benchkit.StartS3(dir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	px, err := startProxy(srv.Endpoint)
	if err != nil {
		return err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(data, "f.txt"), []byte("tiny\n"), 0o644); err != nil {
		return err
	}
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	e := &env{srv: srv, px: px, data: data, log: log, dir: dir}

	fmt.Printf("queuebench: %s; load %s; %d workers, poll %s, concurrency %d each, %d tiny backups (files engine, one 5-byte file)\n\n",
		benchkit.Machine(), benchkit.LoadAvg(), *workers, *poll, watcher.DefaultConcurrency, *nReq)

	// 1. The batch.
	name, direct, err := srv.NewBucket(ctx)
	if err != nil {
		return err
	}
	// A worker seeds its backup-age gauges at start (cmd/capsule): on
	// this empty bucket that marks the catalog complete, so commits keep
	// it compacted.
	if _, err := metrics.New(metrics.Options{}).LoadTrustedCatalog(ctx, direct, nil); err != nil {
		return err
	}
	ids := map[string]bool{}
	for range *nReq {
		req := &requests.Request{Kind: requests.KindBackup, Source: "data", ID: requests.NewID()}
		if err := client.Submit(ctx, direct, req); err != nil {
			return err
		}
		ids[req.ID] = true
	}
	var mu sync.Mutex
	finished := map[string]int{}
	allDone := make(chan struct{})
	px.c.reset()
	srvCPU0, _ := srv.CPU()
	selfCPU0, _ := benchkit.ProcCPU(os.Getpid())
	start := time.Now()
	f, err := e.startWorkers(ctx, name, *workers, func(ev watcher.Event) {
		if ev.Type != watcher.EventFinished || !ids[ev.ID] {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		finished[ev.ID]++
		if len(finished) == len(ids) {
			close(allDone)
		}
	})
	if err != nil {
		return err
	}
	select {
	case <-allDone:
	case <-time.After(10 * time.Minute):
		return fmt.Errorf("the batch did not finish: %d of %d", len(finished), len(ids))
	}
	elapsed := time.Since(start)
	batch := px.c.reset()
	srvCPU1, _ := srv.CPU()
	selfCPU1, _ := benchkit.ProcCPU(os.Getpid())
	f.stop()
	tail := px.c.reset() // calls after the last finish (the cleanup of the last ones) are not counted above
	dup := 0
	for _, n := range finished {
		dup += n - 1
	}
	left, err := countKeys(ctx, direct, "requests/", "leases/", "cancel/")
	if err != nil {
		return err
	}

	// 2. Idle workers.
	idleName, _, err := srv.NewBucket(ctx)
	if err != nil {
		return err
	}
	f, err = e.startWorkers(ctx, idleName, *workers, nil)
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // past the start-up pass, which also sweeps
	px.c.reset()
	time.Sleep(*idleFor)
	idle := px.c.reset()
	f.stop()

	// 3. Start-up on the batch's bucket: the backup-age gauges are
	// seeded as cmd/capsule does, beside a worker's first pass.
	px.c.reset()
	cb, err := e.counted(ctx, name)
	if err != nil {
		return err
	}
	reg := metrics.New(metrics.Options{})
	backups, err := reg.LoadTrustedCatalog(ctx, cb, nil)
	if err != nil {
		return err
	}
	startup := px.c.reset()
	// A second start-up.
	if _, err := metrics.New(metrics.Options{}).LoadTrustedCatalog(ctx, cb, nil); err != nil {
		return err
	}
	startup2 := px.c.reset()

	// The tables.
	n := float64(*nReq)
	fmt.Printf("batch: %d requests finished in %s by %d workers: %.1f requests/s (target ≥ %.0f); %d finished twice; control objects left: %v\n",
		len(finished), elapsed.Round(time.Millisecond), *workers, n/elapsed.Seconds(), minRequestsPerSec, dup, left)
	fmt.Printf("  where the time went: versitygw %s CPU, the workers and the proxy (one process) %s CPU, in %s on 2 cores shared with other work\n",
		benchkit.Secs(srvCPU1-srvCPU0), benchkit.Secs(selfCPU1-selfCPU0), benchkit.Secs(elapsed))
	total := 0
	for _, c := range batch {
		total += c
	}
	fmt.Printf("S3 calls per request, end to end (%d calls during the batch, %d more while stopping):\n", total, sum(tail))
	printCounts(batch, n)
	fmt.Printf("  %-28s %6.2f  (target ≤ %.0f)\n\n", "total", float64(total)/n, maxCallsPerRequest)

	polls := idleFor.Seconds() / poll.Seconds()
	lists := 0
	for k, c := range idle {
		if strings.HasPrefix(k, "LIST") {
			lists += c
		}
	}
	fmt.Printf("idle: %d workers, poll %s, watched %s: %.1f S3 calls/s in all; LISTs per worker per poll interval %.2f (target ≤ %.0f)\n",
		*workers, *poll, *idleFor, float64(sum(idle))/idleFor.Seconds(), float64(lists)/float64(*workers)/polls, maxIdleListsPerPoll)
	printCounts(idle, float64(*workers)*polls)
	fmt.Println()
	gets := 0
	for k, c := range startup {
		if strings.HasPrefix(k, "GET index") {
			gets += c
		}
	}
	fmt.Printf("start-up: seeding the backup-age gauges on a bucket of %d backups: %d calls, %d reads of backupIndex.json (target 0)\n", backups, sum(startup), gets)
	printCounts(startup, 1)
	gets = 0
	for k, c := range startup2 {
		if strings.HasPrefix(k, "GET index") {
			gets += c
		}
	}
	fmt.Printf("start-up again on the same bucket: %d calls, %d reads of backupIndex.json\n", sum(startup2), gets)
	printCounts(startup2, 1)
	return nil
}

func sum(m map[string]int) int {
	t := 0
	for _, c := range m {
		t += c
	}
	return t
}

func printCounts(m map[string]int, per float64) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("  %-28s %6.2f\n", k, float64(m[k])/per)
	}
}

// countKeys counts what is left under each prefix.
func countKeys(ctx context.Context, b bucket.Bucket, prefixes ...string) (map[string]int, error) {
	out := map[string]int{}
	for _, p := range prefixes {
		err := bucket.Walk(ctx, b, p, func(bucket.ObjectInfo) error { out[p]++; return nil })
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
