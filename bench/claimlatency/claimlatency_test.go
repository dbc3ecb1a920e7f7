package claimlatency

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/internal/sqstest"
	"github.com/cnvrg/capsule/notify"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
	"github.com/sirupsen/logrus"
)

var (
	sqsRequests  = flag.Int("requests", 100, "requests measured with SQS notifications")
	pollRequests = flag.Int("poll-requests", 30, "requests measured per polling-only mode")
)

// maxMedianSQS is issue 20's bound on the median submit→claim latency with
// notifications.
const maxMedianSQS = 150 * time.Millisecond

type sources map[string]engines.Source

func (s sources) Lookup(name string) (engines.Source, error) {
	src, ok := s[name]
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
	}
	return src, nil
}

type mode struct {
	name string
	sqs  bool
	// poll is the LIST interval (the backstop with SQS).
	poll time.Duration
	n    int
}

func BenchmarkClaimLatency(b *testing.B) {
	modes := []mode{
		{name: "sqs, backstop 60s", sqs: true, poll: 60 * time.Second, n: *sqsRequests},
		{name: "polling only, poll 5s (default)", poll: 5 * time.Second, n: *pollRequests},
		{name: "polling only, poll 1s", poll: time.Second, n: *pollRequests},
	}
	results := make([][]time.Duration, len(modes))
	for b.Loop() {
		for i, m := range modes {
			results[i] = measure(b, m)
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "submit→claim latency\trequests\tmedian\tp90\tmax\t")
	for i, m := range modes {
		d := results[i]
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", m.name, len(d), ms(quantile(d, 0.5)), ms(quantile(d, 0.9)), ms(quantile(d, 1)))
	}
	tw.Flush()
	// Issue 20's target, judged in this run.
	med := quantile(results[0], 0.5)
	verdict := "met"
	if med >= maxMedianSQS {
		verdict = "NOT met"
	}
	fmt.Printf("\ntarget (issue 20): submit→claim median with SQS notifications < %s: %s  %s\n", ms(maxMedianSQS), ms(med), verdict)
	b.ReportMetric(float64(quantile(results[0], 0.5).Microseconds())/1000, "ms-median-sqs")
	b.ReportMetric(float64(quantile(results[1], 0.5).Microseconds())/1000, "ms-median-poll5s")
}

func ms(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}

// quantile is the nearest-rank quantile of d.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// measure runs one worker in mode m on a fresh bucket and returns the
// latency of each of m.n requests, submitted one at a time: from the
// moment the client starts writing requests/<id>.json to the moment the
// worker's claim is real (its lease written, the request read).
func measure(b *testing.B, m mode) []time.Duration {
	srv := s3test.Shared(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	name := srv.NewBucket(b)
	sb, err := s3.New(ctx, s3.Options{Bucket: name, Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		b.Fatal(err)
	}
	const prefix = "capsule/"
	bkt := bucket.Prefixed(sb, prefix)
	data := filepath.Join(b.TempDir(), "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "f.txt"), []byte("tiny\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	x, err := executor.New(executor.Config{Bucket: bkt, Engines: engines.NewRegistry(files.New()), Worker: "bench", Log: log,
		Sources: sources{"data": {Name: "data", Engine: "files", Config: map[string]any{"path": data}}}})
	if err != nil {
		b.Fatal(err)
	}
	type stamp struct {
		typ watcher.EventType
		id  string
		at  time.Time
	}
	events := make(chan stamp, 16)
	w, err := watcher.New(watcher.Config{Bucket: bkt, Runner: x, Worker: "bench", Poll: m.poll, Log: log,
		Events: func(e watcher.Event) {
			if e.Type == watcher.EventClaimed || e.Type == watcher.EventFinished {
				events <- stamp{e.Type, e.ID, time.Now()}
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	var q *sqstest.Server
	var queue string
	if m.sqs {
		q = sqstest.Start(b)
		queue = q.NewQueue(b)
		l, err := notify.New(notify.Config{Client: q.Client(), QueueURL: queue, Bucket: name, Prefix: prefix, Claim: w.ClaimHint, Log: log})
		if err != nil {
			b.Fatal(err)
		}
		go l.Run(ctx)
	}
	runDone := make(chan struct{})
	go func() { w.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()

	wait := func(typ watcher.EventType, id string) time.Time {
		timeout := time.After(3*m.poll + 30*time.Second)
		for {
			select {
			case s := <-events:
				if s.typ == typ && s.id == id {
					return s.at
				}
			case <-timeout:
				b.Fatalf("%s: no %s event for %s", m.name, typ, id)
			}
		}
	}
	lat := make([]time.Duration, 0, m.n)
	arrival := m.poll
	if m.sqs {
		arrival = 100 * time.Millisecond
	}
	for i := range m.n {
		// Requests arrive at random moments of the poll cycle.
		time.Sleep(rand.N(arrival))
		req := &requests.Request{Kind: requests.KindBackup, Source: "data"}
		req.ID = requests.NewID()
		start := time.Now()
		if err := client.Submit(ctx, bkt, req); err != nil {
			b.Fatal(err)
		}
		if m.sqs {
			// The bridge: the message the S3 server would send.
			f := sqstest.Formats[i%len(sqstest.Formats)]
			if err := q.Send(ctx, queue, sqstest.S3Event(f, name, prefix+requests.RequestKey(req.ID), "etag")); err != nil {
				b.Fatal(err)
			}
		}
		lat = append(lat, wait(watcher.EventClaimed, req.ID).Sub(start))
		wait(watcher.EventFinished, req.ID)
	}
	return lat
}
