// Package pgservertest starts private PostgreSQL servers for tests that
// need what the machine's shared server does not allow (replication
// connections) or must be free to stop their server like a crash.
package pgservertest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/internal/pgserver"
)

// Replication starts a private PostgreSQL 15 that allows replication
// (wal_level replica, WAL senders and slots), on scratch space and a
// free loopback port, until the test ends; it skips the test when no
// PostgreSQL 15 server programs are installed. It returns the server
// and its scratch directory (the data directory is dir/data; the rest
// of dir is the test's). The directory is not t.TempDir: when the test
// runs as root the server runs as postgres, which must reach it.
func Replication(t testing.TB, prefix string) (*pgserver.Server, string) {
	t.Helper()
	bin, err := postgres.BinDir(150000)
	if err != nil {
		t.Skip(err)
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv, err := pgserver.New(bin, filepath.Join(dir, "data"), dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := srv.Init(ctx, map[string]string{
		"wal_level": "replica", "max_wal_senders": "10", "max_replication_slots": "10",
		"fsync": "off", "shared_buffers": "16MB", "wal_sender_timeout": "60s",
	}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	return srv, dir
}
