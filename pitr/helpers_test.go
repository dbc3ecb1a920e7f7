package pitr_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/internal/pgserver"
	"github.com/cnvrg/capsule/internal/pgserver/pgservertest"
	"github.com/cnvrg/capsule/pitr"
)

const cluster = "test"

// startServer starts a private PostgreSQL 15 with replication allowed,
// on scratch space and a free loopback port.
func startServer(t *testing.T) *pgserver.Server {
	t.Helper()
	srv, _ := pgservertest.Replication(t, "capsule-pitr-")
	return srv
}

// startOn starts a new server on a data directory a restore wrote
// (--to-dir), with its scratch in dir, until the test ends.
func startOn(t *testing.T, data, dir string) *pgserver.Server {
	t.Helper()
	bin, _ := postgres.BinDir(150000)
	srv, err := pgserver.New(bin, data, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Own(dir); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	return srv
}

func source(srv *pgserver.Server, name string) engines.Source {
	return engines.Source{Name: name, Engine: "postgres", Config: map[string]any{
		"url": srv.URL("postgres"), "pitr": true,
	}}
}

func newBucket(t *testing.T) bucket.Bucket {
	t.Helper()
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	return bucket.Prefixed(fb, "capsule/")
}

func execPG(t *testing.T, srv *pgserver.Server, sql string, args ...any) {
	t.Helper()
	conn, err := srv.Connect(context.Background(), "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// currentLSN is the server's WAL insert position.
func currentLSN(t *testing.T, srv *pgserver.Server) string {
	t.Helper()
	conn, err := srv.Connect(context.Background(), "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var lsn string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}

// runStream runs a stream of src until the test ends; written gets the
// end of every object written.
type running struct {
	mu      sync.Mutex
	written []pitr.Segment
	signal  chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

func runStream(t *testing.T, b bucket.Bucket, src engines.Source, holder string, lease time.Duration) *running {
	t.Helper()
	return runStreamCfg(t, pitr.StreamConfig{Bucket: b, Source: src,
		Leaser: &pitr.BucketLeaser{Bucket: b, Holder: holder, Length: lease}})
}

// runStreamCfg runs a stream of cfg (its Bucket, Source, Leaser and
// what else it sets; the test's cluster, retry, log and Written).
func runStreamCfg(t *testing.T, cfg pitr.StreamConfig) *running {
	t.Helper()
	r := &running{signal: make(chan struct{}, 1), done: make(chan struct{})}
	cfg.Cluster, cfg.Retry, cfg.Log = cluster, 200*time.Millisecond, enginetest.TestLog(t)
	s, err := pitr.NewStream(pitr.StreamConfig{
		Bucket: cfg.Bucket, Cluster: cfg.Cluster, Source: cfg.Source, Retry: cfg.Retry,
		Leaser: cfg.Leaser, Log: cfg.Log, Recipients: cfg.Recipients, Signer: cfg.Signer, RetainFor: cfg.RetainFor,
		Written: func(sg pitr.Segment, _ pitr.Header) {
			r.mu.Lock()
			r.written = append(r.written, sg)
			r.mu.Unlock()
			select {
			case r.signal <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); _ = s.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	r.cancel()
	<-r.done
}

// waitFor waits until the stream wrote WAL up to lsn.
func (r *running) waitFor(t *testing.T, lsn string) {
	t.Helper()
	want := parseLSN(t, lsn)
	timeout := time.After(2 * time.Minute)
	for {
		r.mu.Lock()
		var end uint64
		for _, s := range r.written {
			end = max(end, uint64(s.End))
		}
		r.mu.Unlock()
		if end >= want {
			return
		}
		select {
		case <-r.signal:
		case <-timeout:
			t.Fatalf("stream did not reach %s (at %X)", lsn, end)
		}
	}
}
