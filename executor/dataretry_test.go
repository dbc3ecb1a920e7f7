package executor_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
)

// lateServer is a PostgreSQL that is not up yet: its port refuses
// connections until start is called, then forwards them to the shared
// server on 5432.
type lateServer struct {
	addr string
	once sync.Once
	ln   net.Listener
}

func newLateServer(t *testing.T) *lateServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lateServer{addr: ln.Addr().String()}
	ln.Close() // refused from now on
	t.Cleanup(func() {
		if s.ln != nil {
			s.ln.Close()
		}
	})
	return s
}

func (s *lateServer) start() {
	s.once.Do(func() {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			panic(err)
		}
		s.ln = ln
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					up, err := net.Dial("tcp", "127.0.0.1:5432")
					if err != nil {
						return
					}
					defer up.Close()
					go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
					_, _ = io.Copy(c, up)
				}()
			}
		}()
	})
}

// hook calls fn for each log entry.
type hook func(*logrus.Entry)

func (h hook) Levels() []logrus.Level     { return logrus.AllLevels }
func (h hook) Fire(e *logrus.Entry) error { h(e); return nil }

// TestBackupRetriesWhileTheServiceStarts backs up a PostgreSQL whose port
// refuses connections (it is still starting) until the first retry: the
// backup succeeds within its one attempt, after one logged retry. With
// retries off it fails at once, as every backup did before.
func TestBackupRetriesWhileTheServiceStarts(t *testing.T) {
	for _, c := range []struct {
		name    string
		retries int
		want    requests.Status
	}{{"retries", 0, requests.StatusSucceeded}, {"no retries", -1, requests.StatusFailed}} {
		t.Run(c.name, func(t *testing.T) {
			srv := newLateServer(t)
			fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
			if err != nil {
				t.Fatal(err)
			}
			log := logrus.New()
			log.Out = t.Output()
			var mu sync.Mutex
			var retries []string
			log.AddHook(hook(func(e *logrus.Entry) {
				if strings.Contains(e.Message, "passing fault of the data service") {
					mu.Lock()
					retries = append(retries, fmt.Sprint(e.Data["error"]))
					mu.Unlock()
					srv.start()
				}
			}))
			x, err := executor.New(executor.Config{
				Bucket: bucket.Prefixed(fb, "capsule/"), Engines: engines.NewRegistry(postgres.New()), Worker: "test", Version: "test",
				Sources: sources{"pg": {Name: "pg", Engine: "postgres", Config: map[string]any{
					"url": "postgres://postgres@" + srv.addr + "/postgres?sslmode=disable",
				}}},
				DataRetries: c.retries, DataRetryInterval: 10 * time.Millisecond, Log: log,
			})
			if err != nil {
				t.Fatal(err)
			}
			req := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Source: "pg"}
			out := x.Run(context.Background(), req, 1, executor.NewTracker())
			if out.Result.Status != c.want {
				t.Fatalf("status %s (%s), want %s", out.Result.Status, out.Result.Error, c.want)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case c.retries >= 0 && (len(retries) != 1 || !strings.Contains(retries[0], "refused")):
				t.Errorf("retries logged: %q, want one for the refused connection", retries)
			case c.retries < 0 && len(retries) != 0:
				t.Errorf("retries logged with retries off: %q", retries)
			}
		})
	}
}

func TestDataTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{errors.New(`pg_dump: error: connection to server at "10.0.0.5", port 5432 failed: Connection refused`), true},
		{errors.New("pg_dump: error: Dumping the contents of table \"t\" failed: PQgetResult() failed.\nserver closed the connection unexpectedly"), true},
		{errors.New("FATAL: the database system is starting up (SQLSTATE 57P03)"), true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, true},
		{errors.New("pg_restore: error: could not execute query: ERROR:  relation \"t\" already exists"), false},
		{errors.New("password authentication failed for user \"capsule\""), false},
		{fmt.Errorf("backup: %w", context.Canceled), false},
		{executor.Reject(errors.New("connection refused")), false},
		{bucket.Transient(errors.New("put: connection refused")), false},
		{&engines.ChecksumError{Artifact: "db.dump"}, false},
	} {
		if got := executor.DataTransient(c.err); got != c.want {
			t.Errorf("DataTransient(%q) = %v, want %v", c.err, got, c.want)
		}
	}
}
