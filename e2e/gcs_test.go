package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/internal/gcstest"
	"github.com/cnvrg/capsule/requests"
)

// newGCSCluster is newCluster on a gs:// bucket of the shared
// fake-gcs-server: the same data directory, with sources as the
// config's sources section (the files sources data and copy when empty).
func newGCSCluster(t *testing.T, dataSize int, sources string) *cluster {
	t.Helper()
	srv := gcstest.Shared(t)
	name := srv.NewBucket(t)
	c := &cluster{t: t, url: srv.URL(name, "capsule-"+randHex(4)+"/"), dir: t.TempDir()}
	// The workers reach the emulator through the URL's endpoint; nothing
	// of Google's credentials may steer them elsewhere.
	c.env = append(os.Environ(), "CAPSULE_BUCKET="+c.url, "STORAGE_EMULATOR_HOST=", "GOOGLE_APPLICATION_CREDENTIALS=")
	data := filepath.Join(c.dir, "data")
	mustDo(t, os.MkdirAll(filepath.Join(data, "nested"), 0o750))
	blob := make([]byte, dataSize)
	_, _ = rand.Read(blob)
	mustDo(t, os.WriteFile(filepath.Join(data, "blob.bin"), blob, 0o640))
	mustDo(t, os.WriteFile(filepath.Join(data, "nested", "notes.txt"), bytes.Repeat([]byte("capsule\n"), 10000), 0o600))
	if sources == "" {
		sources = fmt.Sprintf("  data:\n    engine: files\n    path: %s\n  copy:\n    engine: files\n    path: %s\n", data, filepath.Join(c.dir, "copy"))
	}
	c.config = filepath.Join(c.dir, "capsule.yaml")
	cfg := "cluster: e2e\nworker:\n  poll: 200ms\n  lease: 3s\n  grace: 2s\nsources:\n" + sources
	mustDo(t, os.WriteFile(c.config, []byte(cfg), 0o600))
	b, desc, err := bucketurl.Open(context.Background(), c.url, logrus.New())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(desc, "gs://") {
		t.Fatalf("%s opened as %s", c.url, desc)
	}
	c.b = b
	t.Cleanup(c.stopAll)
	return c
}

// TestGCSKilledWorkerIsTakenOver: three worker processes share a gs://
// bucket on fake-gcs-server; one is killed with SIGKILL while it holds a
// lease. Every request ends once, succeeded, with a valid index and
// artifacts of its own attempt, and the killed worker's work is taken
// over as a second attempt: the claim protocol on generation
// preconditions.
func TestGCSKilledWorkerIsTakenOver(t *testing.T) {
	start := time.Now()
	c := newGCSCluster(t, 4<<20, "")
	ids, retried := killedWorkerIsTakenOver(t, c, 30)
	ctx := context.Background()
	page, err := c.b.List(ctx, requests.LeasesPrefix, bucket.ListOptions{})
	if err != nil || len(page.Objects) != 0 {
		t.Errorf("leases left after every request ended: %d, %v", len(page.Objects), err)
	}
	t.Logf("%d requests, %d taken over from the killed worker, in %s", len(ids), retried, time.Since(start).Round(time.Millisecond))
}

// TestGCSPostgresBackupAndRestore: a PostgreSQL database is backed up to
// a gs:// bucket through a real worker and restored from it into another
// database, which then holds the same rows. capsule connects as a role
// with CREATEDB that owns its databases (not a superuser).
func TestGCSPostgresBackupAndRestore(t *testing.T) {
	start := time.Now()
	pg := needPostgres(t)
	src, dst := pg.prefix+"_gcs_orig", pg.prefix+"_gcs_copy"
	pg.createSource(src, 3000)
	staging := filepath.Join(t.TempDir(), "pgstaging")
	mustDo(t, os.MkdirAll(staging, 0o700))
	c := newGCSCluster(t, 1024, fmt.Sprintf("  orig:\n    engine: postgres\n    url: %s\n  copy:\n    engine: postgres\n    url: %s\n    stagingDir: %s\n", pg.url(src), pg.url(dst), staging))
	c.startWorker("w1")
	ctx := context.Background()

	backup := &requests.Request{Kind: requests.KindBackup, Cluster: "e2e", Source: "orig"}
	mustDo(t, client.Submit(ctx, c.b, backup))
	if r := c.waitResults([]string{backup.ID}, 2*time.Minute)[backup.ID]; r.Status != requests.StatusSucceeded {
		t.Fatalf("backup: %s: %s", r.Status, r.Error)
	}
	restore := &requests.Request{Kind: requests.KindRestore, Cluster: "e2e", BackupID: backup.ID, Target: "copy"}
	mustDo(t, client.Submit(ctx, c.b, restore))
	if r := c.waitResults([]string{restore.ID}, 2*time.Minute)[restore.ID]; r.Status != requests.StatusSucceeded {
		t.Fatalf("restore: %s: %s", r.Status, r.Error)
	}
	if !slices.Contains(pg.databases("_gcs_copy"), dst) {
		t.Fatalf("no database %s after the restore", dst)
	}
	if got, want := pg.digest(dst), pg.digest(src); got != want {
		t.Fatalf("restored database differs:\n got %s\nwant %s", got, want)
	}
	t.Logf("backup and restore through gs:// in %s", time.Since(start).Round(time.Millisecond))
}
