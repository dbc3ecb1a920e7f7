package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// capsule prune and capsule gc run one pass; --dry-run deletes nothing and
// says what would go.
func TestPruneAndGC(t *testing.T) {
	e := newCLIEnv(t)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	// The data source keeps its newest backup only.
	withPlan := strings.Replace(string(cfg), "path: "+e.data+"\n", "path: "+e.data+"\n    keepLast: 1\n", 1)
	if err := os.WriteFile(e.config, []byte(withPlan), 0o600); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		ids = append(ids, e.backup())
	}
	listed := func() string { return e.must("ls", "-o", "json") }
	out := e.must("prune", "--dry-run")
	if !strings.Contains(out, "kept 1, would delete 2 backups") {
		t.Errorf("prune --dry-run said:\n%s", out)
	}
	for _, id := range ids {
		if !strings.Contains(listed(), id) {
			t.Errorf("a dry run deleted %s", id)
		}
	}
	out = e.must("prune")
	if !strings.Contains(out, "kept 1, deleted 2 backups") {
		t.Errorf("prune said:\n%s", out)
	}
	if l := listed(); !strings.Contains(l, ids[2]) || strings.Contains(l, ids[0]) || strings.Contains(l, ids[1]) {
		t.Errorf("after prune, ls -o json:\n%s", l)
	}

	// A crashed worker's attempt folder, two days old by the bucket's
	// clock (the directory's times).
	key := requests.ArtifactKey(requests.DefaultCluster, "data", ids[2], 9, "tree.tar.zst")
	if _, err := bucket.PutBytes(t.Context(), e.bucket(), key, []byte("x"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(filepath.Join(e.bucketDir, "capsule", key), old, old); err != nil {
		t.Fatal(err)
	}
	out = e.must("gc", "--dry-run")
	if !strings.Contains(out, "gc: would delete 1 folders (1 objects)") {
		t.Errorf("gc --dry-run said:\n%s", out)
	}
	if _, err := e.bucket().Head(t.Context(), key); err != nil {
		t.Errorf("a dry run removed the orphan: %v", err)
	}
	var rep struct {
		GC struct {
			Removed []string `json:"removed"`
		} `json:"gc"`
	}
	if err := json.Unmarshal([]byte(e.must("gc", "-o", "json")), &rep); err != nil || len(rep.GC.Removed) != 1 {
		t.Errorf("gc -o json: %+v %v", rep, err)
	}
	if _, err := e.bucket().Head(t.Context(), key); err == nil {
		t.Error("gc left the orphan attempt folder")
	}
}
