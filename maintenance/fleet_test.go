package maintenance_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/maintenance"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
	"github.com/cnvrg/capsule/schedule"
	"github.com/cnvrg/capsule/watcher"
)

type sources map[string]engines.Source

func (s sources) Lookup(name string) (engines.Source, error) {
	src, ok := s[name]
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
	}
	return src, nil
}

// replica is one in-process worker: a watcher, the schedule runner of its
// configured plans, and its maintenance, as capsule worker runs them.
type replica struct {
	w     *watcher.Watcher
	sched *schedule.Runner
	maint *maintenance.Service
}

// TestThreeWorkersOverWeeks is a plain worker deployment (no scanner) of
// three workers sharing a bucket on the S3 test server, over 24 simulated
// days (the bucket's clock moves a day at a time, no sleeps): one backup
// per daily slot, exactly the backups the retention policy keeps, garbage
// of crashed workers removed once old enough (an orphan attempt folder, an
// uncommitted backup's folder, an open multipart upload), one maintenance
// pass per period, and no object deleted twice.
func TestThreeWorkersOverWeeks(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	sb, err := s3.New(ctx, s3.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Log: enginetest.TestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	sim := newSim(bucket.Prefixed(sb, "capsule/"))
	// Start just before a UTC midnight, so day d's slot is midnight d.
	now := time.Now().UTC()
	sim.advance(now.Truncate(24 * time.Hour).Add(24*time.Hour - time.Minute).Sub(now))

	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "f.txt"), []byte("a file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const cluster, source = "prod", "data"
	srcs := sources{source: {Name: source, Engine: "files", Config: map[string]any{"path": data}}}
	daily, err := schedule.Parse("24h")
	if err != nil {
		t.Fatal(err)
	}
	policy := retention.Policy{Cluster: cluster, Source: source, Plan: source, IncludeManual: true, Keep: 2, KeepWeekly: 3}
	var replicas []*replica
	for i := range 3 {
		name := fmt.Sprintf("w%d", i+1)
		x, err := executor.New(executor.Config{Bucket: sim, Engines: engines.NewRegistry(files.New()), Sources: srcs, Worker: name, Log: enginetest.TestLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		w, err := watcher.New(watcher.Config{Bucket: sim, Runner: x, Worker: name, Lease: 3 * time.Second, Grace: time.Second, Log: enginetest.TestLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		m, err := maintenance.New(maintenance.Config{Bucket: sim, Holder: name, Every: time.Hour, GCAfter: 24 * time.Hour,
			Policies: []retention.Policy{policy}, Log: enginetest.TestLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		plans := []schedule.Plan{{Source: source, Cluster: cluster, Schedule: daily}}
		replicas = append(replicas, &replica{w: w, sched: schedule.NewRunner(sim, plans, enginetest.TestLog(t)), maint: m})
	}
	each := func(fn func(r *replica)) {
		var wg sync.WaitGroup
		for _, r := range replicas {
			wg.Add(1)
			go func() { defer wg.Done(); fn(r) }()
		}
		wg.Wait()
	}

	var slots []time.Time
	const days = 24
	var crashedDir, orphanDir string
	for day := range days {
		sim.advance(24 * time.Hour)
		slot := daily.Slot(sim.now())
		slots = append(slots, slot)
		id := requests.SlotID(source, slot)
		each(func(r *replica) { r.sched.Pass(ctx, sim.now()) })
		// The workers run what is pending.
		for range 50 {
			each(func(r *replica) { r.w.RunOnce(ctx); r.w.Wait() })
			if _, err := sim.Head(ctx, requests.ResultKey(id)); err == nil {
				break
			}
		}
		if _, err := sim.Head(ctx, requests.IndexKey(cluster, source, id)); err != nil {
			t.Fatalf("day %d: the slot's backup %s: %v", day, id, err)
		}
		if day == 8 {
			// Crashed workers' leftovers: an attempt folder beside a
			// committed backup, a backup that never committed, and a
			// multipart upload left open.
			orphanDir = requests.BackupDir(cluster, source, id) + "7/"
			crashedDir = requests.BackupDir(cluster, source, "crashed") + "1/"
			for _, key := range []string{orphanDir + "tree.tar.zst", crashedDir + "tree.tar.zst"} {
				if _, err := bucket.PutBytes(ctx, sim, key, []byte("x"), bucket.PutOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			u, err := sim.Upload(ctx, crashedDir+"big.tar.zst", bucket.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.Write(make([]byte, s3.MinPartSize+1)); err != nil {
				t.Fatal(err)
			}
		}
		// Every replica tries its maintenance; one pass runs.
		var mu sync.Mutex
		ran := 0
		each(func(r *replica) {
			rep, err := r.maint.RunOnce(ctx)
			if err != nil {
				t.Errorf("day %d: maintenance: %v", day, err)
				return
			}
			if rep.HeldBy == "" {
				mu.Lock()
				ran++
				mu.Unlock()
			}
		})
		if ran != 1 {
			t.Errorf("day %d: %d maintenance passes ran, want 1", day, ran)
		}
		if day == 10 {
			for _, dir := range []string{orphanDir, crashedDir} {
				if page, err := sim.List(ctx, dir, bucket.ListOptions{}); err != nil || len(page.Objects) != 0 {
					t.Errorf("day %d: %s still holds %d objects (%v)", day, dir, len(page.Objects), err)
				}
			}
			if ups, err := sim.ListUploads(ctx, requests.BackupsPrefix); err != nil || len(ups) != 0 {
				t.Errorf("day %d: open uploads %+v (%v), want the crashed one aborted", day, ups, err)
			}
		}
	}

	// Exactly what the policy keeps: the newest 2, and the newest of
	// each of the newest 3 ISO weeks.
	want := map[string]bool{}
	for _, s := range slots[len(slots)-2:] {
		want[requests.SlotID(source, s)] = true
	}
	weeks := map[string]bool{}
	for i := len(slots) - 1; i >= 0 && len(weeks) < 3; i-- {
		y, w := slots[i].ISOWeek()
		if k := fmt.Sprint(y, w); !weeks[k] {
			weeks[k] = true
			want[requests.SlotID(source, slots[i])] = true
		}
	}
	entries, err := index.List(ctx, sim, index.Filter{Cluster: cluster, Source: source})
	if err != nil {
		t.Fatal(err)
	}
	var got, wantIDs []string
	for _, e := range entries {
		got = append(got, e.BackupID)
	}
	for id := range want {
		wantIDs = append(wantIDs, id)
	}
	sort.Strings(got)
	sort.Strings(wantIDs)
	if !slices.Equal(got, wantIDs) {
		t.Errorf("backups left after %d days: %q, want %q", days, got, wantIDs)
	}
	// Nothing but the kept backups' folders is left under backups/.
	if err := bucket.Walk(ctx, sim, requests.BackupsPrefix, func(o bucket.ObjectInfo) error {
		k, err := requests.ParseBackupKey(o.Key)
		if err != nil || !want[k.BackupID] {
			t.Errorf("left behind: %s", o.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var twice []string
	for _, k := range sim.twiceDeleted() {
		if strings.HasPrefix(k, requests.BackupsPrefix) {
			twice = append(twice, k)
		}
	}
	if len(twice) != 0 {
		t.Errorf("deleted twice: %q", twice)
	}
}
