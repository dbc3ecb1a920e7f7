package fleet_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/fleet"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

// set is a Set whose buckets the test changes.
type set struct {
	mu      sync.Mutex
	buckets map[string]bucket.Bucket
	changed chan struct{}
}

func (s *set) Buckets() map[string]bucket.Bucket {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]bucket.Bucket{}
	for k, v := range s.buckets {
		m[k] = v
	}
	return m
}

func (s *set) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *set) put(key string, b bucket.Bucket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b == nil {
		delete(s.buckets, key)
	} else {
		s.buckets[key] = b
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// sources resolves one files source.
type sources struct{ dir string }

func (s sources) Lookup(name string) (engines.Source, error) {
	if name != "tree" {
		return engines.Source{}, executor.ErrUnknownSource
	}
	return engines.Source{Name: name, Engine: "files", Config: map[string]any{"path": s.dir}}, nil
}

func newBucket(t *testing.T) bucket.Bucket {
	b, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFleetFollowsTheSet: a watcher per bucket, started when a bucket
// joins the set and stopped when it leaves; a fixed bucket stays.
func TestFleetFollowsTheSet(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	fixed, dyn := newBucket(t), newBucket(t)
	st := &set{buckets: map[string]bucket.Bucket{}, changed: make(chan struct{})}
	var mu sync.Mutex
	keys := []string{}
	signal := make(chan struct{}, 100)
	finished := make(chan string, 100)
	fl, err := fleet.New(fleet.Config{
		Set: st, Fixed: map[string]bucket.Bucket{"fixed": fixed},
		New: func(key string, b bucket.Bucket) (fleet.Runner, error) {
			x, err := executor.New(executor.Config{Bucket: b, Engines: engines.NewRegistry(files.New()), Sources: sources{dir}})
			if err != nil {
				return nil, err
			}
			return watcher.New(watcher.Config{Bucket: b, Runner: x, Poll: 20 * time.Millisecond, Lease: 3 * time.Second,
				Events: func(e watcher.Event) {
					if e.Type == watcher.EventFinished {
						finished <- key + " " + e.ID + " " + string(e.Status)
					}
				}})
		},
		Changed: func(k []string) {
			mu.Lock()
			keys = k
			mu.Unlock()
			select {
			case signal <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = fl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitKeys := func(want ...string) {
		t.Helper()
		sort.Strings(want)
		for {
			mu.Lock()
			got := append([]string(nil), keys...)
			mu.Unlock()
			if equal(got, want) {
				return
			}
			select {
			case <-signal:
			case <-time.After(10 * time.Second):
				t.Fatalf("fleet serves %v, want %v", got, want)
			}
		}
	}
	waitKeys("fixed")
	st.put("dyn", dyn)
	waitKeys("dyn", "fixed")
	// The new bucket's watcher runs its requests.
	req := &requests.Request{Kind: requests.KindBackup, Source: "tree"}
	if err := client.Submit(ctx, dyn, req); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-finished:
		if got != "dyn "+req.ID+" succeeded" {
			t.Errorf("finished: %s", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request in the added bucket did not run")
	}
	st.put("dyn", nil)
	waitKeys("fixed")
	if got := fl.Keys(); !equal(got, []string{"fixed"}) {
		t.Errorf("Keys() = %v", got)
	}
	// A new value under a key replaces the watcher.
	st.put("fixed", dyn)
	waitKeys("fixed")
	req2 := &requests.Request{Kind: requests.KindBackup, Source: "tree"}
	if err := client.Submit(ctx, dyn, req2); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-finished:
		if got != "fixed "+req2.ID+" succeeded" {
			t.Errorf("finished: %s", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request in the replacing bucket did not run")
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
