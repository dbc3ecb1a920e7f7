package watcher_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/reqcount"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

func fsEnv(t *testing.T) *env {
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	return newEnv(t, fb)
}

// An object under requests/ whose name is not a valid id is answered
// once, with a rejected result under an id derived from its name, and is
// then left alone: no second answer, no request for it on later passes.
func TestMisnamedRequestIsAnsweredOnce(t *testing.T) {
	e := fsEnv(t)
	ctx := context.Background()
	key := "requests/My Backup.json"
	e.putRaw(key, []byte(`{"apiVersion":"capsule/v1","kind":"Backup","id":"my-backup","source":"data"}`))
	counted := &reqcount.Bucket{B: e.b}
	e.b = counted
	w := e.watcher("w1", nil)
	for range 3 {
		if _, err := w.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	id := requests.MisnamedID(key)
	r := e.result(id)
	if r == nil || r.Status != requests.StatusRejected {
		t.Fatalf("result of %s under %s: %+v, want rejected", key, id, r)
	}
	if err := validator.ValidateValue("result", r); err != nil {
		t.Fatalf("the answer does not match the result schema: %v", err)
	}
	answers := 0
	for len(e.events) > 0 {
		if ev := <-e.events; ev.Type == watcher.EventFinished && ev.ID == id {
			answers++
		}
	}
	if answers != 1 {
		t.Fatalf("answered %d times, want once", answers)
	}
	// A later pass costs the listings only: nothing is read or written
	// for the misnamed object.
	counted.Reset()
	if _, err := w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n := counted.Counts(); n.Head+n.Get+n.Put != 0 {
		t.Fatalf("a pass after the answer made %+v requests for the misnamed object", n)
	}
	// Another worker (a restart) answers nothing again.
	w2 := e.watcher("w2", nil)
	if _, err := w2.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for len(e.events) > 0 {
		if ev := <-e.events; ev.Type == watcher.EventFinished && ev.ID == id {
			t.Fatal("a second worker answered the misnamed object again")
		}
	}
}

// A request without a cluster lands in the worker's configured cluster,
// where capsule ls (with that cluster) finds it.
func TestRequestWithoutClusterGetsTheWorkersCluster(t *testing.T) {
	e := fsEnv(t)
	ctx := context.Background()
	e.putRaw(requests.RequestKey("nocluster1"), []byte(`{"apiVersion":"capsule/v1","kind":"Backup","id":"nocluster1","source":"data"}`))
	w := e.watcher("w1", func(c *watcher.Config) { c.Cluster = "cnvrg/prod" })
	r := e.waitResult("nocluster1", 20*time.Second, func() { w.RunOnce(ctx); w.Wait() })
	if r.Status != requests.StatusSucceeded || r.Cluster != "cnvrg/prod" {
		t.Fatalf("result %s in cluster %q (%s), want succeeded in cnvrg/prod", r.Status, r.Cluster, r.Error)
	}
	l, err := index.Catalog{Bucket: e.b}.List(ctx, index.Filter{Cluster: "cnvrg/prod"})
	if err != nil || len(l.Entries) != 1 || l.Entries[0].BackupID != "nocluster1" {
		t.Fatalf("listing of cnvrg/prod: %v %+v", err, l)
	}
	// The index names the prefix its artifact keys are relative to.
	if p := l.Entries[0].Prefix; p != "capsule/" {
		t.Fatalf("index prefix %q, want capsule/", p)
	}
	if err := validator.ValidateValue("backupIndex", l.Entries[0].BackupIndex); err != nil {
		t.Fatalf("index with a prefix: %v", err)
	}
}
