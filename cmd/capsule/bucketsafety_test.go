package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketcheck"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/fleet"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/sirupsen/logrus"
)

// startedRunner closes started when Run is called.
type startedRunner struct{ started chan struct{} }

func (r startedRunner) Run(ctx context.Context) error {
	close(r.started)
	<-ctx.Done()
	return nil
}

// signalHook closes a channel per bucket when an entry with that bucket
// field and a message containing msg is logged.
type signalHook struct {
	msg  string
	mu   sync.Mutex
	seen map[string]chan struct{}
}

func (h *signalHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *signalHook) Fire(e *logrus.Entry) error {
	if !strings.Contains(e.Message, h.msg) {
		return nil
	}
	k, _ := e.Data["bucket"].(string)
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.seen[k]; ok {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
	return nil
}

// TestFleetSkipsUnsafeBuckets: in a worker that serves several buckets
// (worker --scan), one whose store ignores If-None-Match gets no watcher
// (and no WAL stream: it is not among the passed buckets), and the safe
// one is served.
func TestFleetSkipsUnsafeBuckets(t *testing.T) {
	srv := s3test.Shared(t)
	p := faultproxy.Start(t, srv.Endpoint, 1)
	p.SetQuirks(faultproxy.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region}, faultproxy.IgnoreIfNoneMatch)
	raw, err := s3.New(t.Context(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: p.URL(), Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	buckets := map[string]bucket.Bucket{"safe": bucket.Prefixed(dir, "capsule/"), "unsafe": bucket.Prefixed(raw, "capsule/")}
	runners := map[string]startedRunner{"safe": {make(chan struct{})}, "unsafe": {make(chan struct{})}}
	hook := &signalHook{msg: "no watcher for this bucket", seen: map[string]chan struct{}{"safe": make(chan struct{}), "unsafe": make(chan struct{})}}
	log := logrus.New()
	log.Out = t.Output()
	log.AddHook(hook)
	safety := &bucketSafety{}
	passed := newSafeBuckets()
	fl, err := fleet.New(fleet.Config{
		Fixed: buckets, Log: log,
		New: func(key string, b bucket.Bucket) (fleet.Runner, error) {
			return gatedRunner{safety: safety, b: b, r: runners[key], log: log.WithField("bucket", key), passed: passed}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- fl.Run(ctx) }()
	for what, ch := range map[string]<-chan struct{}{"the safe bucket's watcher to start": runners["safe"].started, "the unsafe bucket's refusal": hook.seen["unsafe"]} {
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("waited 30s for %s", what)
		}
	}
	if !passed.has(buckets["safe"]) || passed.has(buckets["unsafe"]) {
		t.Errorf("passed buckets: safe %v, unsafe %v; want only the safe one", passed.has(buckets["safe"]), passed.has(buckets["unsafe"]))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if passed.has(buckets["safe"]) {
		t.Errorf("the safe bucket is still among the passed after its runner stopped")
	}
	select {
	case <-runners["unsafe"].started:
		t.Errorf("the unsafe bucket got a watcher")
	default:
	}
	select {
	case <-hook.seen["safe"]:
		t.Errorf("the safe bucket was refused")
	default:
	}
}

// TestMaxSkewBelowIndexLimit: the check fails a clock well before the
// worker's own backups would look forged.
func TestMaxSkewBelowIndexLimit(t *testing.T) {
	if bucketcheck.MaxSkew*2 > index.MaxClockSkew {
		t.Errorf("bucketcheck.MaxSkew %s leaves less than half of index.MaxClockSkew %s", bucketcheck.MaxSkew, index.MaxClockSkew)
	}
}
