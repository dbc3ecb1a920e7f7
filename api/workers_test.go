package api_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

// slowEngine is a slow source: it streams a chunk every tick until the
// test releases it (or the run is canceled), so a backup is running, with
// growing progress, for as long as the test needs.
type slowEngine struct {
	name    string
	release chan struct{}
}

func (s *slowEngine) Name() string                  { return s.name }
func (s *slowEngine) Validate(engines.Source) error { return nil }
func (s *slowEngine) Backup(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	w, err := job.Artifacts.Create("stream.bin")
	if err != nil {
		return nil, err
	}
	chunk := make([]byte, 64<<10)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_, _ = rand.Read(chunk)
		if _, err := w.Write(chunk); err != nil {
			return nil, err
		}
		select {
		case <-s.release:
			if err := w.Close(); err != nil {
				return nil, err
			}
			return &engines.BackupInfo{Format: s.name + "/v1"}, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-tick.C:
		}
	}
}
func (s *slowEngine) Restore(context.Context, *engines.RestoreJob) (*engines.RestoreInfo, error) {
	return nil, fmt.Errorf("%s does not restore", s.name)
}

type sourceMap map[string]engines.Source

func (m sourceMap) Lookup(name string) (engines.Source, error) {
	if s, ok := m[name]; ok {
		return s, nil
	}
	return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
}

// TestThreeWorkersAndTheAPIOnS3 is the acceptance case: three
// workers and the API on one versitygw bucket. The API lists exactly the
// backups in the bucket per cluster, pages stay stable while backups are
// added, a running backup shows its progress, and writes need the token.
func TestThreeWorkersAndTheAPIOnS3(t *testing.T) {
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	raw, err := s3.New(t.Context(), s3.Options{Bucket: name, Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(raw, "capsule-"+randHex(4)+"/")

	data := t.TempDir()
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(data, fmt.Sprintf("f%d", i)), make([]byte, (i+1)*50000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	slow := &slowEngine{name: "slow", release: make(chan struct{})}
	stuck := &slowEngine{name: "stuck", release: make(chan struct{})} // never released: canceled
	reg := engines.NewRegistry(files.New(), slow, stuck)
	srcs := sourceMap{
		"data":        {Name: "data", Engine: "files", Config: map[string]any{"path": data}},
		"cnvrg/files": {Name: "cnvrg/files", Engine: "files", Config: map[string]any{"path": data}},
		"slow":        {Name: "slow", Engine: "slow"},
		"stuck":       {Name: "stuck", Engine: "stuck"},
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	for i := range 3 {
		worker := fmt.Sprintf("w%d", i+1)
		x, err := executor.New(executor.Config{Bucket: b, Engines: reg, Sources: srcs, Worker: worker, Version: "test", Log: enginetest.TestLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		w, err := watcher.New(watcher.Config{Bucket: b, Runner: x, Worker: worker, Concurrency: 2, Poll: 100 * time.Millisecond,
			Lease: 3 * time.Second, Grace: time.Second, Log: enginetest.TestLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { w.Run(ctx) })
	}
	h := newHarness(t, b, func(c *api.Config) { c.CacheTTL = 300 * time.Millisecond })

	submit := func(body string) string {
		t.Helper()
		r := h.post("/v1/requests", []byte(body))
		if r.status != 201 {
			t.Fatalf("POST %s: %d %s", body, r.status, r.body)
		}
		var st client.Status
		r.decode(t, &st)
		return st.ID
	}
	// poll reads a request's status until ok says so.
	poll := func(id string, what string, ok func(client.Status) bool) client.Status {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var st client.Status
			r := h.get("/v1/requests/" + id)
			if r.status != 200 {
				t.Fatalf("GET /v1/requests/%s: %d %s", id, r.status, r.body)
			}
			r.decode(t, &st)
			if ok(st) {
				return st
			}
			if st.Status.Ended() || time.Now().After(deadline) {
				t.Fatalf("%s: waiting for %s, got %s", id, what, r.body)
			}
			time.Sleep(50 * time.Millisecond) // a client polling the API
		}
	}
	succeeded := func(id string) client.Status {
		t.Helper()
		st := poll(id, "succeeded", func(st client.Status) bool { return st.Status == requests.StatusSucceeded })
		if st.Result == nil || st.Result.RequestKind != requests.KindBackup {
			t.Fatalf("%s: result %+v", id, st.Result)
		}
		return st
	}
	// listed waits until the API lists exactly what the bucket holds for
	// the cluster (the cache is 300ms), and returns it.
	listed := func(cluster string, want []string) []string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			entries, err := index.List(t.Context(), b, index.Filter{Cluster: cluster})
			if err != nil {
				t.Fatal(err)
			}
			inBucket := make([]string, len(entries))
			for i, e := range entries {
				inBucket[i] = e.BackupID
			}
			got := h.pageAll(cluster, "", 2)
			sorted := slices.Sorted(slices.Values(inBucket))
			if slices.Equal(got, inBucket) && slices.Equal(sorted, slices.Sorted(slices.Values(want))) {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster %s: the API lists %v, the bucket holds %v, submitted %v", cluster, got, inBucket, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Writes without the token are refused and write nothing.
	r := h.do("POST", "/v1/requests", []byte(`{"kind":"Backup","source":"data"}`))
	wantStatus(t, "POST without the token", r, 401, api.CodeUnauthorized)

	// With it, requests that the workers complete.
	byCluster := map[string][]string{}
	for i := range 6 {
		cluster, source := "default", "data"
		if i%2 == 1 {
			cluster, source = "cnvrg/cnvrg-app", "cnvrg/files"
		}
		id := submit(fmt.Sprintf(`{"kind":"Backup","cluster":%q,"source":%q}`, cluster, source))
		byCluster[cluster] = append(byCluster[cluster], id)
	}
	for _, list := range byCluster {
		for _, id := range list {
			succeeded(id)
		}
	}
	for cluster, want := range byCluster {
		listed(cluster, want)
	}
	var clusters api.ClusterList
	h.get("/v1/clusters").decode(t, &clusters)
	if len(clusters.Clusters) != 2 || clusters.Clusters[0].Backups != 3 || clusters.Clusters[1].Backups != 3 {
		t.Errorf("clusters: %+v", clusters)
	}

	t.Run("pages are stable while backups are added", func(t *testing.T) {
		before := listed("default", byCluster["default"])
		var first api.BackupPage
		h.get("/v1/clusters/default/backups?limit=2").decode(t, &first)
		if !slices.Equal(ids(first.Backups), before[:2]) || first.NextCursor == "" {
			t.Fatalf("first page %v, want %v and a cursor", ids(first.Backups), before[:2])
		}
		added := []string{submit(`{"kind":"Backup","source":"data"}`), submit(`{"kind":"Backup","source":"data"}`)}
		for _, id := range added {
			succeeded(id)
		}
		byCluster["default"] = append(byCluster["default"], added...)
		now := listed("default", byCluster["default"])
		if !slices.Contains(now[:2], added[0]) || !slices.Contains(now[:2], added[1]) {
			t.Errorf("the new backups are not first: %v", now)
		}
		// The rest of the old listing, from the old cursor: unchanged.
		var rest []string
		cursor := first.NextCursor
		for cursor != "" {
			var p api.BackupPage
			h.get("/v1/clusters/default/backups?limit=2&cursor="+cursor).decode(t, &p)
			rest = append(rest, ids(p.Backups)...)
			cursor = p.NextCursor
		}
		if !slices.Equal(rest, before[2:]) {
			t.Errorf("pages after the cursor: %v, want %v", rest, before[2:])
		}
	})

	t.Run("a running backup shows its progress", func(t *testing.T) {
		id := submit(`{"kind":"Backup","source":"slow"}`)
		st := poll(id, "running with progress", func(st client.Status) bool {
			return st.Status == requests.StatusRunning && st.Lease != nil && st.Lease.Progress != nil && st.Lease.Progress.Bytes > 0
		})
		first := st.Lease.Progress.Bytes
		st = poll(id, "more progress", func(st client.Status) bool {
			return st.Status == requests.StatusRunning && st.Lease.Progress.Bytes > first
		})
		t.Logf("%s running on %s: %d then %d bytes", id, st.Lease.Holder, first, st.Lease.Progress.Bytes)
		close(slow.release)
		done := succeeded(id)
		if done.Result.Bytes < st.Lease.Progress.Bytes {
			t.Errorf("result bytes %d < progress seen %d", done.Result.Bytes, st.Lease.Progress.Bytes)
		}
		byCluster["default"] = append(byCluster["default"], id)
		listed("default", byCluster["default"])
	})

	t.Run("cancel through the API", func(t *testing.T) {
		id := submit(`{"kind":"Backup","source":"stuck"}`)
		poll(id, "running", func(st client.Status) bool { return st.Status == requests.StatusRunning })
		r := h.do("POST", "/v1/requests/"+id+"/cancel", nil)
		wantStatus(t, "cancel without the token", r, 401, api.CodeUnauthorized)
		r = h.post("/v1/requests/"+id+"/cancel", []byte(`{"reason":"test"}`))
		wantStatus(t, "cancel", r, 202, "")
		poll(id, "canceled", func(st client.Status) bool { return st.Status == requests.StatusCanceled })
		wantStatus(t, "canceled backup", h.get("/v1/clusters/default/backups/"+id), 404, api.CodeNotFound)
		wantStatus(t, "cancel again", h.post("/v1/requests/"+id+"/cancel", nil), 409, api.CodeConflict)
	})
}
