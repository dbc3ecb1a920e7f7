package retention_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
)

// TestLeaseRulesAgreeWithWorkers: retention and garbage collection judge
// leases as the workers do. The shortest lease is the workers' 3s (not
// 30ms), and a damaged request lease protects its backup for the
// workers' lease length (60s), not retention's own 30s lock length: a
// 45s-old damaged lease of a running backup is live, so garbage
// collection must leave that backup's folder alone.
func TestLeaseRulesAgreeWithWorkers(t *testing.T) {
	b := newFS(t)
	if _, err := retention.New(retention.Config{Bucket: b, Holder: "a", Lease: time.Second}); err == nil || !strings.Contains(err.Error(), "at least 3s") {
		t.Errorf("a 1s retention lease: %v, want it refused as shorter than 3s, like a worker's", err)
	}

	fb, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b = bucket.Prefixed(fb, "capsule/")
	const id = "running"
	art := requests.ArtifactKey(cluster, source, id, 1, "tree.tar.zst")
	for key, body := range map[string]string{art: "x", requests.LeaseKey(id): "{damaged"} {
		if _, err := bucket.PutBytes(t.Context(), b, key, []byte(body), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-45 * time.Second)
	for _, key := range []string{art, requests.LeaseKey(id)} {
		if err := os.Chtimes(filepath.Join(fb.Dir(), "capsule", key), old, old); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := newRunner(t, b, "gc").CollectGarbage(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 0 {
		t.Errorf("removed %q under a damaged request lease 45s old (live for a worker's 60s)", rep.Removed)
	}
	if _, err := b.Head(t.Context(), art); err != nil {
		t.Errorf("the running backup's artifact: %v", err)
	}
}
