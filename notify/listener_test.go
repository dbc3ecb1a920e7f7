package notify_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/internal/sqstest"
	"github.com/cnvrg/capsule/notify"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

const prefix = "capsule/"

type sources map[string]engines.Source

func (s sources) Lookup(name string) (engines.Source, error) {
	src, ok := s[name]
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
	}
	return src, nil
}

// env is one worker on a fresh versitygw bucket with a fresh goaws queue.
type env struct {
	t      *testing.T
	s3     *s3test.Server
	sqs    *sqstest.Server
	name   string // the S3 bucket
	queue  string
	b      bucket.Bucket
	w      *watcher.Watcher
	events chan watcher.Event

	mu  sync.Mutex
	obs map[notify.Observation]int
	// observed gets a value for every observation.
	observed chan notify.Observation
}

func newEnv(t *testing.T, mod func(*watcher.Config)) *env {
	t.Helper()
	e := &env{t: t, s3: s3test.Shared(t), sqs: sqstest.Start(t), events: make(chan watcher.Event, 1000),
		obs: map[notify.Observation]int{}, observed: make(chan notify.Observation, 1000)}
	e.name = e.s3.NewBucket(t)
	e.queue = e.sqs.NewQueue(t)
	sb, err := s3.New(t.Context(), s3.Options{
		Bucket: e.name, Endpoint: e.s3.Endpoint, Region: e.s3.Region,
		AccessKey: e.s3.AccessKey, SecretKey: e.s3.SecretKey, Log: enginetest.TestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.b = bucket.Prefixed(sb, prefix)
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "f.txt"), []byte("notified\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	x, err := executor.New(executor.Config{
		Bucket: e.b, Engines: engines.NewRegistry(files.New()), Worker: "w1", Log: enginetest.TestLog(t),
		Sources: sources{"data": {Name: "data", Engine: "files", Config: map[string]any{"path": data}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := watcher.Config{
		Bucket: e.b, Runner: x, Worker: "w1", Concurrency: 4, Poll: time.Hour,
		Lease: 3 * time.Second, Grace: time.Second, Log: enginetest.TestLog(t),
		Events: func(ev watcher.Event) {
			select {
			case e.events <- ev:
			default:
			}
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	if e.w, err = watcher.New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.w.Wait)
	return e
}

// listen runs a Listener until the test ends.
func (e *env) listen(mod func(*notify.Config)) {
	e.t.Helper()
	cfg := notify.Config{
		Client: e.sqs.Client(), QueueURL: e.queue, Bucket: e.name, Prefix: prefix,
		Claim: e.w.ClaimHint, Log: enginetest.TestLog(e.t),
		// Under load, goaws's answer to a receive is now and then lost
		// (the SDK reads "use of closed network connection" and retries):
		// the first attempt's messages must come back within the test.
		VisibilityTimeout: 5 * time.Second,
		Observe: func(o notify.Observation) {
			e.mu.Lock()
			e.obs[o]++
			e.mu.Unlock()
			e.observed <- o
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	l, err := notify.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Listener.Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			e.t.Error("Listener.Run did not return after its context ended")
		}
	})
}

func (e *env) submit() string {
	e.t.Helper()
	req := &requests.Request{Kind: requests.KindBackup, Source: "data"}
	if err := client.Submit(context.Background(), e.b, req); err != nil {
		e.t.Fatal(err)
	}
	return req.ID
}

// notify sends the message f's S3 server would send for the request.
func (e *env) notify(f sqstest.Format, id string) {
	e.t.Helper()
	e.send(sqstest.S3Event(f, e.name, prefix+requests.RequestKey(id), "0123456789abcdef0123456789abcdef"))
}

func (e *env) send(body string) {
	e.t.Helper()
	if err := e.sqs.Send(context.Background(), e.queue, body); err != nil {
		e.t.Fatal(err)
	}
}

// waitFinished waits for the requests to finish, and counts the claims
// and finishes it saw on the way.
func (e *env) waitFinished(timeout time.Duration, ids ...string) (claims, finishes map[string]int) {
	e.t.Helper()
	claims, finishes = map[string]int{}, map[string]int{}
	deadline := time.After(timeout)
	for left := len(ids); left > 0; {
		select {
		case ev := <-e.events:
			switch ev.Type {
			case watcher.EventClaimed, watcher.EventTakeover:
				claims[ev.ID]++
			case watcher.EventFinished:
				finishes[ev.ID]++
				for _, id := range ids {
					if id == ev.ID {
						left--
					}
				}
			}
		case <-deadline:
			e.t.Fatalf("requests %v: finished %v after %s", ids, finishes, timeout)
		}
	}
	return claims, finishes
}

// waitObserved waits until the listener made n observations in all.
func (e *env) waitObserved(n int, timeout time.Duration) map[notify.Observation]int {
	e.t.Helper()
	deadline := time.After(timeout)
	for {
		e.mu.Lock()
		total := 0
		for _, c := range e.obs {
			total += c
		}
		snapshot := make(map[notify.Observation]int, len(e.obs))
		for o, c := range e.obs {
			snapshot[o] = c
		}
		e.mu.Unlock()
		if total >= n {
			return snapshot
		}
		select {
		case <-e.observed:
		case <-deadline:
			e.t.Fatalf("observed %v after %s, want %d in all", snapshot, timeout, n)
		}
	}
}

func (e *env) result(id string) *requests.Result {
	e.t.Helper()
	st, err := client.GetStatus(context.Background(), e.b, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return st.Result
}

// waitEmpty waits until the queue holds no message: every message was
// deleted after it was handled.
func (e *env) waitEmpty() {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := e.sqs.Depth(context.Background(), e.queue)
		if err != nil {
			e.t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d messages left on the queue", n)
		}
		time.Sleep(20 * time.Millisecond) // goaws gives no signal
	}
}

// The watcher never lists here (no Run, no RunOnce): only a notification
// can get a request claimed.
func TestEachFormatGetsTheRequestClaimed(t *testing.T) {
	e := newEnv(t, nil)
	e.listen(nil)
	for _, f := range sqstest.Formats {
		t.Run(string(f), func(t *testing.T) {
			id := e.submit()
			e.notify(f, id)
			claims, _ := e.waitFinished(20*time.Second, id)
			if claims[id] != 1 {
				t.Errorf("claimed %d times", claims[id])
			}
			if r := e.result(id); r == nil || r.Status != requests.StatusSucceeded {
				t.Errorf("result %+v", r)
			}
		})
	}
	obs := e.waitObserved(len(sqstest.Formats), 10*time.Second)
	e.waitEmpty()
	if obs[notify.MessageClaimed] != len(sqstest.Formats) {
		t.Errorf("observations %v: want %d claimed", obs, len(sqstest.Formats))
	}
}

func TestDuplicatesOutOfOrderStaleAndForeignMessages(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a, b := e.submit(), e.submit()
	// A request that ran and finished before its (late) message arrives.
	done := e.submit()
	if ok, err := e.w.ClaimHint(ctx, done); !ok || err != nil {
		t.Fatalf("ClaimHint(%s) = %v, %v", done, ok, err)
	}
	e.waitFinished(20*time.Second, done)
	e.w.Wait()
	missing := requests.NewID() // never written

	sent := 0
	send := func(body string) { e.send(body); sent++ }
	// b before a, each in several formats, a three times over; then
	// messages that are late, name nothing, or name nothing of ours.
	send(sqstest.S3Event(sqstest.Versitygw, e.name, prefix+requests.RequestKey(b), "e1"))
	for range 3 {
		send(sqstest.S3Event(sqstest.AWS, e.name, prefix+requests.RequestKey(a), "e2"))
	}
	send(sqstest.S3Event(sqstest.MinIO, e.name, prefix+requests.RequestKey(b), "e1"))
	send(sqstest.S3Event(sqstest.SNS, e.name, prefix+requests.RequestKey(done), "e3"))
	send(sqstest.S3Event(sqstest.AWS, e.name, prefix+requests.RequestKey(missing), "e4"))
	ignored := []string{
		sqstest.TestEvent(e.name),
		sqstest.S3Event(sqstest.AWS, "some-other-bucket", prefix+requests.RequestKey(missing), "e5"),
		sqstest.S3Event(sqstest.AWS, e.name, prefix+requests.LeaseKey(a), "e6"),
		sqstest.S3Event(sqstest.AWS, e.name, "other-prefix/"+requests.RequestKey(missing), "e7"),
	}
	for _, body := range ignored {
		send(body)
	}
	send("this is not an event")
	e.listen(nil)

	claims, finishes := e.waitFinished(20*time.Second, a, b)
	obs := e.waitObserved(sent, 20*time.Second)
	e.w.Wait()
	e.waitEmpty()
	for _, id := range []string{a, b} {
		if claims[id] != 1 || finishes[id] != 1 {
			t.Errorf("request %s claimed %d and finished %d times, want once", id, claims[id], finishes[id])
		}
		if r := e.result(id); r == nil || r.Status != requests.StatusSucceeded {
			t.Errorf("request %s: result %+v", id, r)
		}
	}
	if claims[done] != 0 || claims[missing] != 0 {
		t.Errorf("late or stale messages claimed: %v", claims)
	}
	// Nothing was written for the request that does not exist.
	for _, key := range []string{requests.LeaseKey(missing), requests.ResultKey(missing)} {
		if _, err := e.b.Head(ctx, key); !errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("%s: %v, want not found", key, err)
		}
	}
	want := map[notify.Observation]int{
		notify.MessageClaimed:   2,
		notify.MessageUnclaimed: sent - 2 - len(ignored) - 1,
		notify.MessageIgnored:   len(ignored),
		notify.MessageInvalid:   1,
	}
	for o, n := range want {
		if obs[o] != n {
			t.Errorf("observations %v: want %v", obs, want)
			break
		}
	}
}

// With notifications on, the LIST still runs as a backstop: requests no
// message names, and requests made while the queue is down, still run.
func TestBackstopFindsWhatNoMessageNamed(t *testing.T) {
	e := newEnv(t, func(c *watcher.Config) { c.Poll = 300 * time.Millisecond })
	e.listen(func(c *notify.Config) { c.MaxBackoff = 200 * time.Millisecond; c.WaitTime = time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error)
	go func() { runDone <- e.w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("watcher.Run: %v", err)
		}
	}()

	silent := e.submit() // no message at all
	e.waitFinished(20*time.Second, silent)

	e.sqs.Stop() // the queue goes away
	e.waitObservedType(notify.ReceiveFailed, 20*time.Second)
	down := []string{e.submit(), e.submit()}
	e.waitFinished(20*time.Second, down...)
	for _, id := range append(down, silent) {
		if r := e.result(id); r == nil || r.Status != requests.StatusSucceeded {
			t.Errorf("request %s: result %+v", id, r)
		}
	}
}

func (e *env) waitObservedType(want notify.Observation, timeout time.Duration) {
	e.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case o := <-e.observed:
			if o == want {
				return
			}
		case <-deadline:
			e.t.Fatalf("no %s observation after %s", want, timeout)
		}
	}
}

func TestConfigNamesTheBadSetting(t *testing.T) {
	claim := func(context.Context, string) (bool, error) { return false, nil }
	c := awssqs.New(awssqs.Options{Region: "us-east-1"})
	for name, cfg := range map[string]notify.Config{
		"sqs-queue":        {Client: c, Claim: claim},
		"sqs wait time":    {Client: c, Claim: claim, QueueURL: "http://q/1/q", WaitTime: 30 * time.Second},
		"sqs max messages": {Client: c, Claim: claim, QueueURL: "http://q/1/q", MaxMessages: 11},
		"Client and Claim": {QueueURL: "http://q/1/q"},
		"sqs max backoff":  {Client: c, Claim: claim, QueueURL: "http://q/1/q", MaxBackoff: time.Millisecond},
		"sqs visibility":   {Client: c, Claim: claim, QueueURL: "http://q/1/q", VisibilityTimeout: time.Millisecond},
	} {
		if _, err := notify.New(cfg); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v does not name the setting", name, err)
		}
	}
	for _, bad := range []string{"", "sqs.us-east-1.amazonaws.com/1/q", "ftp://host/1/q", "http://host", "https://user:pw@host/1/q"} {
		if _, err := notify.NewClient(context.Background(), bad, nil); err == nil {
			t.Errorf("NewClient(%q) accepted a bad queue URL", bad)
		}
	}
}

func TestNewClientReachesTheQueue(t *testing.T) {
	srv := sqstest.Start(t)
	q := srv.NewQueue(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	c, err := notify.NewClient(context.Background(), q, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Send(context.Background(), q, "hello"); err != nil {
		t.Fatal(err)
	}
	out, err := c.ReceiveMessage(context.Background(), &awssqs.ReceiveMessageInput{QueueUrl: &q, WaitTimeSeconds: 1})
	if err != nil || len(out.Messages) != 1 || *out.Messages[0].Body != "hello" {
		t.Fatalf("ReceiveMessage through NewClient's client = %+v, %v", out, err)
	}
}
