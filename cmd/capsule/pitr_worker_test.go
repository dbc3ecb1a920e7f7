package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/internal/pgserver/pgservertest"
	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/jackc/pglogrepl"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWorkerStreamsConfiguredPITRSource: "capsule worker" streams the
// WAL of a configured postgres source with pitr: true into its bucket
// (pitr.Jobs, the path the scanner's plans take too), and hands the
// stream's lease back when it stops.
func TestWorkerStreamsConfiguredPITRSource(t *testing.T) {
	srv, dir := pgservertest.Replication(t, "capsule-worker-pitr-")
	ctx := context.Background()
	bucketDir := filepath.Join(dir, "bucket")
	if err := os.Mkdir(bucketDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "capsule.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "sources:\n  pg:\n    engine: postgres\n    url: %s\n    pitr: true\n", srv.URL("postgres")), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a := newApp(&bytes.Buffer{}, logs, func(string) string { return "" })
	cmd := a.root()
	cmd.SetArgs([]string{"--config", conf, "--bucket", "file://" + bucketDir, "--log-format", "text",
		"worker", "--name", "w1", "--lease", "3s", "--unsafe-bucket"})
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(wctx) }()
	stopped := false
	stopWorker := func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the worker did not stop")
		}
	}
	t.Cleanup(func() {
		stopWorker()
		if t.Failed() {
			t.Logf("worker:\n%s", logs.String())
		}
	})

	conn, err := srv.Connect(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	var lsn string
	err = conn.QueryRow(ctx, `SELECT pg_switch_wal()::text`).Scan(&lsn)
	if err == nil {
		err = conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn)
	}
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	target, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		t.Fatal(err)
	}
	b := openTestBucket(t, "file://"+bucketDir)
	deadline := time.Now().Add(90 * time.Second)
	for {
		segs, err := pitr.ListSegments(ctx, b, requests.DefaultCluster, "pg")
		if err != nil {
			t.Fatal(err)
		}
		var end pglogrepl.LSN
		for _, s := range segs {
			end = max(end, s.End)
		}
		if end >= target {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bucket's WAL ends at %s, before %s", end, target)
		}
		select {
		case err := <-done:
			t.Fatalf("the worker exited: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	stopWorker()
	st, err := lease.Read(ctx, b, pitr.LockKey(requests.DefaultCluster, "pg"), requests.DefaultMaxControlObject, 3*time.Second)
	if err != nil || !st.Found || !st.Released || st.Holder != "w1" {
		t.Errorf("the stream's lease after the worker stopped: %+v, %v; want handed back by w1", st, err)
	}
	if !strings.Contains(logs.String(), "holding the WAL stream") {
		t.Errorf("the worker never held the stream:\n%s", logs.String())
	}
}
