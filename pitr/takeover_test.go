package pitr_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/internal/pgserver"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
)

// TestMain runs a stream as a child process when the takeover test asks
// for one, so that the test can SIGKILL it.
func TestMain(m *testing.M) {
	if os.Getenv("CAPSULE_PITR_CHILD") != "" {
		childStream()
		return
	}
	os.Exit(m.Run())
}

const childLease = 3 * time.Second

func childStream() {
	fb, err := fs.New(os.Getenv("CAPSULE_PITR_BUCKET"))
	if err != nil {
		panic(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	src := engines.Source{Name: "pg", Engine: "postgres", Config: map[string]any{"url": os.Getenv("CAPSULE_PITR_URL"), "pitr": true}}
	s, err := pitr.NewStream(pitr.StreamConfig{Bucket: b, Cluster: cluster, Source: src, Retry: 100 * time.Millisecond,
		Leaser: &pitr.BucketLeaser{Bucket: b, Holder: os.Getenv("CAPSULE_PITR_CHILD"), Length: childLease}})
	if err != nil {
		panic(err)
	}
	_ = s.Run(context.Background())
}

func startChild(t *testing.T, holder, bucketDir, url string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CAPSULE_PITR_CHILD="+holder, "CAPSULE_PITR_BUCKET="+bucketDir, "CAPSULE_PITR_URL="+url)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// The worker holding the stream is SIGKILLed; the other takes over as
// attempt 2 once the lease expires, the WAL in the bucket has no gap,
// no object of the dead holder is rewritten, and a restore to a moment
// inside the outage recovers exactly the markers committed before it.
func TestTakeoverAfterSIGKILL(t *testing.T) {
	srv := startServer(t)
	execSQL(t, srv, "postgres", `CREATE DATABASE app`)
	execSQL(t, srv, "app", `CREATE TABLE marks (id serial PRIMARY KEY, at timestamptz NOT NULL)`)
	bucketDir := filepath.Join(t.TempDir(), "bucket")
	fb, err := fs.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	ctx := context.Background()
	src := engines.Source{Name: "pg", Engine: "postgres", Config: map[string]any{"url": srv.URL("app"), "pitr": true, "allowSuperuser": true}}

	a := startChild(t, "worker-a", bucketDir, srv.URL("app"))
	waitSegments(t, b, func(segs []pitr.Segment) bool { return len(segs) > 0 })
	startChild(t, "worker-b", bucketDir, srv.URL("app"))
	baseBackup(t, b, src)

	var mu sync.Mutex
	var marks []marker
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m := writeMarkers(t, srv, "app", 1, 100*time.Millisecond)
			mu.Lock()
			marks = append(marks, m...)
			mu.Unlock()
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	waitSegments(t, b, func(segs []pitr.Segment) bool { return len(segs) > 3 })
	before := etags(t, b)
	if err := a.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = a.Wait()
	atKill := etags(t, b)
	waitSegments(t, b, func(segs []pitr.Segment) bool {
		for _, s := range segs {
			if s.Attempt == 2 {
				return true
			}
		}
		return false
	})
	took := time.Since(killed)
	t.Logf("worker-b wrote its first WAL %s after the kill (lease %s)", took.Round(time.Millisecond), childLease)
	time.Sleep(time.Second)
	close(stop)
	<-done
	execSQL(t, srv, "app", `SELECT 1`)
	end := currentLSN(t, srv)
	waitSegments(t, b, func(segs []pitr.Segment) bool {
		return len(segs) > 0 && uint64(pitr.Spans(segs)[len(pitr.Spans(segs))-1].End) >= parseLSN(t, end)
	})

	segs, err := pitr.ListSegments(ctx, b, cluster, "pg")
	if err != nil {
		t.Fatal(err)
	}
	if spans := pitr.Spans(segs); len(spans) != 1 {
		t.Errorf("WAL has a gap: %d spans", len(spans))
	}
	final := etags(t, b)
	for k, e := range atKill {
		if final[k] != e {
			t.Errorf("object %s of the dead holder was rewritten or removed", k)
		}
	}
	for k, e := range before {
		if atKill[k] != e {
			t.Errorf("object %s changed before the kill", k)
		}
	}

	// A moment inside the outage: after the kill, before the takeover.
	target := killed.Add(took / 2)
	mu.Lock()
	lo, hi := 0, 0 // markers surely committed before the target, and maybe
	for _, m := range marks {
		if m.done.Before(target) {
			lo++
		}
		if !m.at.After(target) {
			hi++
		}
	}
	mu.Unlock()
	res, err := pitr.Restore(ctx, pitr.RestoreConfig{Bucket: b, Cluster: cluster, Source: "pg", Target: pitr.Target{Time: target},
		Into: &src, ID: requests.NewID(), Log: enginetest.TestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored %+v", res)
	got := markerIDs(t, srv, "app")
	// A marker inserted before the target whose commit was not yet
	// confirmed at the target may or may not be in.
	if len(got) < lo || len(got) > hi {
		t.Fatalf("restored %d markers (last %v), want between %d (committed before %s) and %d (inserted before it)", len(got), last(got), lo, target, hi)
	}
	for i, id := range got {
		if id != marks[i].id {
			t.Fatalf("restored markers are not the first ones: %v", got)
		}
	}
}

func last(ids []int) any {
	if len(ids) == 0 {
		return nil
	}
	return ids[len(ids)-1]
}

func execSQL(t *testing.T, srv *pgserver.Server, db, sql string) {
	t.Helper()
	conn, err := srv.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitSegments waits until the bucket's WAL objects satisfy ok.
func waitSegments(t *testing.T, b bucket.Bucket, ok func([]pitr.Segment) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		segs, err := pitr.ListSegments(context.Background(), b, cluster, "pg")
		if err != nil {
			t.Fatal(err)
		}
		if ok(segs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL in the bucket never got there: %d objects", len(segs))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// etags maps every WAL object's key to its ETag.
func etags(t *testing.T, b bucket.Bucket) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := bucket.Walk(context.Background(), b, pitr.WALPrefix, func(o bucket.ObjectInfo) error {
		out[o.Key] = o.ETag
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A holder paused past its lease (SIGSTOP) and resumed after another
// took over writes nothing more: its fence stops it before any write.
func TestPausedHolderWritesNothingAfterTakeover(t *testing.T) {
	srv := startServer(t)
	execSQL(t, srv, "postgres", `CREATE TABLE marks (id serial PRIMARY KEY, at timestamptz NOT NULL)`)
	bucketDir := filepath.Join(t.TempDir(), "bucket")
	fb, err := fs.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	a := startChild(t, "worker-a", bucketDir, srv.URL("postgres"))
	waitSegments(t, b, func(segs []pitr.Segment) bool { return len(segs) > 0 })
	if err := a.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	startChild(t, "worker-b", bucketDir, srv.URL("postgres"))
	execSQL(t, srv, "postgres", `INSERT INTO marks (at) SELECT clock_timestamp() FROM generate_series(1, 1000)`)
	waitSegments(t, b, func(segs []pitr.Segment) bool {
		for _, s := range segs {
			if s.Attempt == 2 {
				return true
			}
		}
		return false
	})
	atTakeover := etags(t, b)
	if err := a.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Give the resumed holder WAL to write and time to try.
	for i := 0; i < 6; i++ {
		execSQL(t, srv, "postgres", `INSERT INTO marks (at) SELECT clock_timestamp() FROM generate_series(1, 1000)`)
		time.Sleep(500 * time.Millisecond)
	}
	end := currentLSN(t, srv)
	waitSegments(t, b, func(segs []pitr.Segment) bool {
		sp := pitr.Spans(segs)
		return len(sp) > 0 && uint64(sp[len(sp)-1].End) >= parseLSN(t, end)
	})
	segs, err := pitr.ListSegments(context.Background(), b, cluster, "pg")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		if _, old := atTakeover[s.Key]; !old && s.Attempt == 1 {
			t.Errorf("the paused holder wrote %s after the takeover", s.Key)
		}
	}
	for k, e := range atTakeover {
		if now := etags(t, b)[k]; now != e {
			t.Errorf("%s was rewritten", k)
		}
	}
	if len(pitr.Spans(segs)) != 1 {
		t.Errorf("WAL has a gap")
	}
}
