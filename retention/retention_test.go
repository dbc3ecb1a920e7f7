package retention_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
)

const (
	cluster = "prod"
	source  = "cnvrg/pg"
	plan    = "nightly"
)

// base is the finish time of the oldest test backup; backup i finished i
// hours later.
var base = time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)

func testLogger(t *testing.T) logrus.FieldLogger {
	l := logrus.New()
	l.Out = t.Output()
	l.Level = logrus.DebugLevel
	return l
}

// backends runs fn against a fresh bucket/fs directory and a fresh
// versitygw bucket, each scoped to capsule/ as in production.
func backends(t *testing.T, fn func(t *testing.T, b bucket.Bucket)) {
	t.Run("fs", func(t *testing.T) { fn(t, newFS(t)) })
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Shared(t)
		fn(t, bucket.Prefixed(newS3(t, srv, srv.NewBucket(t)), "capsule/"))
	})
}

func newFS(t *testing.T) bucket.Bucket {
	fb, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bucket.Prefixed(fb, "capsule/")
}

func newS3(t *testing.T, srv *s3test.Server, name string) *s3.Bucket {
	b, err := s3.New(t.Context(), s3.Options{
		Bucket: name, Endpoint: srv.Endpoint, Region: srv.Region,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		PartSize: s3.MinPartSize, Log: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newRunner(t *testing.T, b bucket.Bucket, holder string) *retention.Runner {
	t.Helper()
	r, err := retention.New(retention.Config{Bucket: b, Holder: holder, Lease: 10 * time.Second, Log: testLogger(t).WithField("holder", holder)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// spec describes a test backup.
type spec struct {
	id       string
	plan     string
	hour     int   // finished base + hour
	verified *bool // newest verification's outcome, if any
	attempt  int   // 1 when zero
	// retainUntil is recorded in the index's JSON; lock applies it as
	// Object Lock on every object (versitygw with a locked bucket only).
	retainUntil time.Time
	lock        time.Time
	format      string // "tar/v1" when empty
}

func ptr[T any](v T) *T { return &v }

// writeBackup commits a backup the way the executor does: artifacts under
// the attempt's folder, the index create-only, verifications beside it.
func writeBackup(t *testing.T, b bucket.Bucket, s spec) *index.BackupIndex {
	t.Helper()
	return writeBackupIn(t, b, cluster, source, s)
}

// writeBackupIn is writeBackup in another cluster or source.
func writeBackupIn(t *testing.T, b bucket.Bucket, cluster, source string, s spec) *index.BackupIndex {
	t.Helper()
	ctx := t.Context()
	if s.attempt == 0 {
		s.attempt = 1
	}
	finished := base.Add(time.Duration(s.hour) * time.Hour)
	x := &index.BackupIndex{
		APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: s.id, RequestID: s.id,
		Cluster: cluster, Source: source, Plan: s.plan, Engine: "files", Format: cmp.Or(s.format, "tar/v1"),
		CapsuleVersion: "test", Status: requests.StatusSucceeded, Attempt: s.attempt,
		StartedAt: finished.Add(-time.Minute), FinishedAt: finished, RetainUntil: s.retainUntil,
	}
	for _, name := range []string{"tree.tar.zst", "meta.json.zst"} {
		key := requests.ArtifactKey(cluster, source, s.id, s.attempt, name)
		data := []byte("data of " + key)
		if _, err := bucket.PutBytes(ctx, b, key, data, bucket.PutOptions{RetainUntil: s.lock}); err != nil {
			t.Fatal(err)
		}
		x.Artifacts = append(x.Artifacts, index.Artifact{Name: name, Key: key, Size: int64(len(data)), StoredSize: int64(len(data)), SHA256: "00", Compression: "zstd"})
	}
	data, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(ctx, b, x.Key(), data, bucket.PutOptions{IfNoneMatch: true, RetainUntil: s.lock}); err != nil {
		t.Fatal(err)
	}
	if s.verified != nil {
		v := &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: s.id, RequestID: "verify-" + s.id,
			OK: *s.verified, VerifiedAt: finished.Add(time.Hour)}
		if !v.OK {
			v.Error = "checksum mismatch"
		}
		lock := *x
		lock.RetainUntil = s.lock
		if err := index.WriteVerification(ctx, b, &lock, v); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

func scheduled(n int) []spec {
	var out []spec
	for i := range n {
		out = append(out, spec{id: fmt.Sprintf("nightly-%02d", i), plan: plan, hour: i})
	}
	return out
}

func writeAll(t *testing.T, b bucket.Bucket, specs []spec) {
	t.Helper()
	for _, s := range specs {
		writeBackup(t, b, s)
	}
}

// listed returns the committed backups of the test source, newest first.
func listed(t *testing.T, b bucket.Reader) []string {
	t.Helper()
	es, err := index.List(t.Context(), b, index.Filter{Cluster: cluster, Source: source})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, e := range es {
		ids = append(ids, e.BackupID)
	}
	return ids
}

func keysUnder(t *testing.T, b bucket.Reader, prefix string) []string {
	t.Helper()
	var keys []string
	if err := bucket.Walk(t.Context(), b, prefix, func(o bucket.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

func dir(id string) string { return requests.BackupDir(cluster, source, id) }

func apply(t *testing.T, r *retention.Runner, p retention.Policy) *retention.Report {
	t.Helper()
	rep, err := r.Apply(t.Context(), p)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if rep.LeaseHeldBy != "" {
		t.Fatalf("apply: lease held by %s", rep.LeaseHeldBy)
	}
	return rep
}

func wantIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if got == nil {
		got = []string{}
	}
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func policy(keep int) retention.Policy {
	return retention.Policy{Cluster: cluster, Source: source, Plan: plan, Keep: keep}
}

func TestKeepsNewest(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		writeAll(t, b, scheduled(6))
		r := newRunner(t, b, "a")
		rep := apply(t, r, policy(3))
		wantIDs(t, "kept", rep.Kept, []string{"nightly-05", "nightly-04", "nightly-03"})
		wantIDs(t, "deleted", rep.Deleted, []string{"nightly-00", "nightly-01", "nightly-02"})
		wantIDs(t, "listed", listed(t, b), []string{"nightly-05", "nightly-04", "nightly-03"})
		for _, id := range rep.Deleted {
			if keys := keysUnder(t, b, dir(id)); len(keys) != 0 {
				t.Errorf("deleted backup %s left %q", id, keys)
			}
		}
		if len(rep.Skipped) != 0 || len(rep.Retained) != 0 {
			t.Errorf("skipped %v, retained %v", rep.Skipped, rep.Retained)
		}
		// A second run finds nothing more to do.
		rep = apply(t, r, policy(3))
		wantIDs(t, "deleted by the second run", rep.Deleted, nil)
		wantIDs(t, "kept by the second run", rep.Kept, []string{"nightly-05", "nightly-04", "nightly-03"})
	})
}

func TestTiesOrderedByID(t *testing.T) {
	b := newFS(t)
	writeAll(t, b, []spec{{id: "nightly-b", plan: plan}, {id: "nightly-a", plan: plan}, {id: "nightly-c", plan: plan}})
	rep := apply(t, newRunner(t, b, "a"), policy(2))
	wantIDs(t, "kept", rep.Kept, []string{"nightly-c", "nightly-b"})
	wantIDs(t, "deleted", rep.Deleted, []string{"nightly-a"})
}

func TestManualBackups(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		writeAll(t, b, []spec{
			{id: "manual-00", hour: 0}, {id: "nightly-01", plan: plan, hour: 1}, {id: "nightly-02", plan: plan, hour: 2},
			{id: "manual-03", hour: 3}, {id: "weekly-04", plan: "weekly", hour: 4}, {id: "nightly-05", plan: plan, hour: 5},
			{id: "manual-06", hour: 6}, {id: "nightly-07", plan: plan, hour: 7},
		})
		r := newRunner(t, b, "a")
		rep := apply(t, r, policy(2))
		wantIDs(t, "kept", rep.Kept, []string{"nightly-07", "nightly-05"})
		wantIDs(t, "deleted", rep.Deleted, []string{"nightly-01", "nightly-02"})
		wantIDs(t, "listed", listed(t, b), []string{"nightly-07", "manual-06", "nightly-05", "weekly-04", "manual-03", "manual-00"})

		p := policy(3)
		p.IncludeManual = true
		rep = apply(t, r, p)
		wantIDs(t, "kept with manual", rep.Kept, []string{"nightly-07", "manual-06", "nightly-05"})
		wantIDs(t, "deleted with manual", rep.Deleted, []string{"manual-00", "manual-03"})
		wantIDs(t, "listed", listed(t, b), []string{"nightly-07", "manual-06", "nightly-05", "weekly-04"})
	})
}

func TestNeverDeletesTheOnlyBackup(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		writeAll(t, b, []spec{{id: "nightly-00", plan: plan, verified: ptr(false)}})
		rep := apply(t, newRunner(t, b, "a"), policy(1))
		wantIDs(t, "kept", rep.Kept, []string{"nightly-00"})
		wantIDs(t, "deleted", rep.Deleted, nil)
		wantIDs(t, "listed", listed(t, b), []string{"nightly-00"})
	})
}

// TestFailedVerifications: a backup whose newest verification failed does
// not count toward Keep, is not deleted before older good ones, and the
// newest Keep backups stay whatever their verifications say.
func TestFailedVerifications(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		// Newest two failed, then three good, the oldest of which goes.
		writeAll(t, b, []spec{
			{id: "nightly-00", plan: plan, hour: 0, verified: ptr(true)},
			{id: "nightly-01", plan: plan, hour: 1},
			{id: "nightly-02", plan: plan, hour: 2, verified: ptr(true)},
			{id: "nightly-03", plan: plan, hour: 3, verified: ptr(false)},
			{id: "nightly-04", plan: plan, hour: 4, verified: ptr(false)},
		})
		r := newRunner(t, b, "a")
		rep := apply(t, r, policy(2))
		wantIDs(t, "kept", rep.Kept, []string{"nightly-04", "nightly-03", "nightly-02", "nightly-01"})
		wantIDs(t, "deleted", rep.Deleted, []string{"nightly-00"})
	})
	t.Run("all failed", func(t *testing.T) {
		b := newFS(t)
		var specs []spec
		for i := range 4 {
			specs = append(specs, spec{id: fmt.Sprintf("nightly-%02d", i), plan: plan, hour: i, verified: ptr(false)})
		}
		writeAll(t, b, specs)
		rep := apply(t, newRunner(t, b, "a"), policy(2))
		wantIDs(t, "kept", rep.Kept, []string{"nightly-03", "nightly-02"})
		wantIDs(t, "deleted", rep.Deleted, []string{"nightly-00", "nightly-01"})
	})
	t.Run("fewer good than keep", func(t *testing.T) {
		b := newFS(t)
		writeAll(t, b, []spec{
			{id: "nightly-00", plan: plan, hour: 0, verified: ptr(false)},
			{id: "nightly-01", plan: plan, hour: 1, verified: ptr(false)},
			{id: "nightly-02", plan: plan, hour: 2, verified: ptr(true)},
			{id: "nightly-03", plan: plan, hour: 3, verified: ptr(false)},
		})
		rep := apply(t, newRunner(t, b, "a"), policy(3))
		wantIDs(t, "kept", rep.Kept, []string{"nightly-03", "nightly-02", "nightly-01"})
		wantIDs(t, "deleted", rep.Deleted, []string{"nightly-00"})
	})
}

func TestSkipsBackupsInUse(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		writeAll(t, b, scheduled(5))
		ctx := t.Context()
		for _, req := range []*requests.Request{
			{Kind: requests.KindRestore, ID: "restore-1", BackupID: "nightly-00"},
			{Kind: requests.KindVerify, ID: "verify-1", BackupID: "nightly-01"},
			{Kind: requests.KindBackup, ID: "backup-1", Source: source},
		} {
			if err := client.Submit(ctx, b, req); err != nil {
				t.Fatal(err)
			}
		}
		r := newRunner(t, b, "a")
		rep := apply(t, r, policy(2))
		wantIDs(t, "deleted", rep.Deleted, []string{"nightly-02"})
		if len(rep.Skipped) != 2 || !strings.Contains(rep.Skipped["nightly-00"], "restore-1") || !strings.Contains(rep.Skipped["nightly-01"], "verify-1") {
			t.Errorf("skipped = %v, want nightly-00 for restore-1 and nightly-01 for verify-1", rep.Skipped)
		}
		wantIDs(t, "listed", listed(t, b), []string{"nightly-04", "nightly-03", "nightly-01", "nightly-00"})

		// The requests finish: the backups go.
		for _, id := range []string{"restore-1", "verify-1"} {
			if err := b.Delete(ctx, requests.RequestKey(id)); err != nil {
				t.Fatal(err)
			}
		}
		rep = apply(t, r, policy(2))
		wantIDs(t, "deleted once the requests ended", rep.Deleted, []string{"nightly-00", "nightly-01"})
		wantIDs(t, "listed", listed(t, b), []string{"nightly-04", "nightly-03"})
	})
}

// TestKeepsBaseBackupsForAPointInTimeRestore: a point-in-time Restore
// names no backup (its worker picks a base backup of the source when it
// runs), so while one is open no base backup of its source goes; backups
// of other formats and other sources are pruned as usual.
func TestKeepsBaseBackupsForAPointInTimeRestore(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		ctx := t.Context()
		for _, s := range scheduled(4) {
			s.format = postgres.FormatBase
			writeBackup(t, b, s)
			writeBackupIn(t, b, cluster, "other", s)
		}
		for _, req := range []*requests.Request{
			{Kind: requests.KindRestore, ID: "pitr-1", Cluster: cluster, PointInTime: &requests.PointInTime{Source: source, Latest: true}},
			{Kind: requests.KindRestore, ID: "pitr-2", Cluster: "elsewhere", PointInTime: &requests.PointInTime{Source: "other", Latest: true}},
		} {
			if err := client.Submit(ctx, b, req); err != nil {
				t.Fatal(err)
			}
		}
		r := newRunner(t, b, "a")
		rep := apply(t, r, policy(2))
		wantIDs(t, "deleted while the point-in-time restore is open", rep.Deleted, nil)
		if len(rep.Skipped) != 2 || !strings.Contains(rep.Skipped["nightly-00"], "pitr-1") || !strings.Contains(rep.Skipped["nightly-01"], "pitr-1") {
			t.Errorf("skipped = %v, want nightly-00 and nightly-01 for pitr-1", rep.Skipped)
		}
		other := policy(2)
		other.Source = "other"
		rep = apply(t, r, other)
		wantIDs(t, "deleted of another source (pitr-2 is another cluster's)", rep.Deleted, []string{"nightly-00", "nightly-01"})

		if err := b.Delete(ctx, requests.RequestKey("pitr-1")); err != nil {
			t.Fatal(err)
		}
		rep = apply(t, r, policy(2))
		wantIDs(t, "deleted once the request ended", rep.Deleted, []string{"nightly-00", "nightly-01"})
	})
}

func TestBaseBackupFormatIsTheEngines(t *testing.T) {
	if got := retention.BaseBackupFormat; got != postgres.FormatBase {
		t.Errorf("retention's base backup format %q, the engine's %q", got, postgres.FormatBase)
	}
}

// hooked is the real bucket with a function run before each Delete, which
// may fail it (a fault injector; everything else is the bucket's own).
type hooked struct {
	bucket.Bucket
	mu     sync.Mutex
	before func(ctx context.Context, key string) error
	calls  map[string]int // Delete calls per key
	order  []string
}

func hook(b bucket.Bucket, before func(ctx context.Context, key string) error) *hooked {
	return &hooked{Bucket: b, before: before, calls: map[string]int{}}
}

func (h *hooked) Delete(ctx context.Context, key string) error {
	h.mu.Lock()
	h.calls[key]++
	h.order = append(h.order, key)
	h.mu.Unlock()
	if h.before != nil {
		if err := h.before(ctx, key); err != nil {
			return err
		}
	}
	return h.Bucket.Delete(ctx, key)
}

func (h *hooked) count(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[key]
}

// TestRestoreSubmittedWhileDeleting: Apply looks for restores again right
// before each delete, so a Restore of a later candidate that arrives while
// an earlier one is being deleted saves it.
func TestRestoreSubmittedWhileDeleting(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		writeAll(t, b, scheduled(5))
		var once sync.Once
		h := hook(b, func(ctx context.Context, key string) error {
			var err error
			if key == requests.IndexKey(cluster, source, "nightly-00") {
				once.Do(func() {
					err = client.Submit(ctx, b, &requests.Request{Kind: requests.KindRestore, ID: "late-restore", BackupID: "nightly-01"})
				})
			}
			return err
		})
		rep := apply(t, newRunner(t, h, "a"), policy(2))
		wantIDs(t, "deleted", rep.Deleted, []string{"nightly-00", "nightly-02"})
		if !strings.Contains(rep.Skipped["nightly-01"], "late-restore") {
			t.Errorf("skipped = %v, want nightly-01 for late-restore", rep.Skipped)
		}
		if n := h.count(requests.IndexKey(cluster, source, "nightly-01")); n != 0 {
			t.Errorf("the index of the backup in use was deleted %d times", n)
		}
	})
}

// TestRacingReplicas: two Runners (replicas) apply the same policy
// concurrently, again and again while new backups arrive: no backup is
// deleted twice, none wrongly, and exactly Keep remain.
func TestRacingReplicas(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		const keep, initial, rounds = 3, 8, 20
		writeAll(t, b, scheduled(initial))
		h := hook(b, nil) // counts every Delete of both replicas
		runners := []*retention.Runner{newRunner(t, h, "replica-a"), newRunner(t, h, "replica-b")}
		var (
			mu      sync.Mutex
			deleted []string
			held    int
		)
		race := func(n int) {
			var wg sync.WaitGroup
			for i := range n {
				for _, r := range runners {
					wg.Add(1)
					go func() {
						defer wg.Done()
						rep, err := r.Apply(t.Context(), policy(keep))
						if err != nil {
							t.Errorf("apply %d: %v", i, err)
							return
						}
						mu.Lock()
						defer mu.Unlock()
						deleted = append(deleted, rep.Deleted...)
						if rep.LeaseHeldBy != "" {
							held++
						}
						// Whoever ran saw a consistent view: the newest keep.
						if rep.LeaseHeldBy == "" && len(rep.Kept) != keep {
							t.Errorf("a run kept %q", rep.Kept)
						}
					}()
				}
			}
			wg.Wait()
		}
		// All at once, 20 each.
		race(rounds)
		// Then round by round, a new backup before each.
		for i := range rounds {
			writeBackup(t, b, spec{id: fmt.Sprintf("nightly-%02d", initial+i), plan: plan, hour: initial + i})
			race(1)
		}
		total := initial + rounds
		var want []string
		for i := total - 1; i >= total-keep; i-- {
			want = append(want, fmt.Sprintf("nightly-%02d", i))
		}
		wantIDs(t, "listed", listed(t, b), want)
		sorted := slices.Clone(deleted)
		slices.Sort(sorted)
		if c := slices.Compact(slices.Clone(sorted)); len(c) != len(sorted) {
			t.Errorf("a backup was reported deleted twice: %q", sorted)
		}
		if len(sorted) != total-keep {
			t.Errorf("%d backups reported deleted, want %d", len(sorted), total-keep)
		}
		for i := range total {
			key := requests.IndexKey(cluster, source, fmt.Sprintf("nightly-%02d", i))
			if n := h.count(key); n > 1 {
				t.Errorf("index %s deleted %d times", key, n)
			}
		}
		t.Logf("%d runs found the lease held by the other replica", held)
	})
}

// TestIndexFirst: a crash after a backup's index is deleted and before its
// artifacts are leaves a backup that is no longer listed, and the next
// garbage collection removes what is left.
func TestIndexFirst(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		writeAll(t, b, scheduled(3))
		victim := dir("nightly-00")
		crash := errors.New("injected crash")
		h := hook(b, func(_ context.Context, key string) error {
			if strings.HasPrefix(key, victim) && !strings.HasSuffix(key, requests.IndexName) {
				return crash
			}
			return nil
		})
		rep, err := newRunner(t, h, "a").Apply(t.Context(), policy(2))
		if !errors.Is(err, crash) {
			t.Fatalf("apply: %v, want the injected crash", err)
		}
		wantIDs(t, "deleted", rep.Deleted, []string{"nightly-00"})
		var first string
		for _, key := range h.order {
			if strings.HasPrefix(key, victim) {
				first = key
				break
			}
		}
		if first != victim+requests.IndexName {
			t.Errorf("first delete of the backup was %q, want its index; order %q", first, h.order)
		}
		wantIDs(t, "listed", listed(t, b), []string{"nightly-02", "nightly-01"})
		if len(keysUnder(t, b, victim)) == 0 {
			t.Fatal("the crash left nothing behind; the test proves nothing")
		}
		gc, err := newRunner(t, b, "gc").CollectGarbage(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(gc.Removed, victim) {
			t.Errorf("gc removed %q, want %s", gc.Removed, victim)
		}
		if keys := keysUnder(t, b, victim); len(keys) != 0 {
			t.Errorf("after gc, %q remain", keys)
		}
		wantIDs(t, "listed after gc", listed(t, b), []string{"nightly-02", "nightly-01"})
	})
}

// TestObjectLockReportedOnce: deletes that Object Lock refuses (injected
// on the real bucket: bucket.ErrRetained, as bucket/s3 returns it) leave the
// objects in place, are reported by the first run only, and are not tried
// again; a backup whose index records a future retainUntil is never tried.
// A retained backup does not count toward Keep.
func TestObjectLockReportedOnce(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		specs := scheduled(6)
		specs[2].retainUntil = time.Now().Add(time.Hour) // recorded in its JSON only
		writeAll(t, b, specs)
		lockedIndex := requests.IndexKey(cluster, source, "nightly-00")
		lockedArtifact := requests.ArtifactKey(cluster, source, "nightly-01", 1, "tree.tar.zst")
		h := hook(b, func(_ context.Context, key string) error {
			if key == lockedIndex || key == lockedArtifact {
				return fmt.Errorf("delete %s: %w: AccessDenied", key, bucket.ErrRetained)
			}
			return nil
		})
		r := newRunner(t, h, "a")
		rep := apply(t, r, policy(2))
		wantIDs(t, "kept", rep.Kept, []string{"nightly-05", "nightly-04"})
		wantIDs(t, "deleted", rep.Deleted, []string{"nightly-01", "nightly-03"})
		for _, id := range []string{"nightly-00", "nightly-02"} {
			if !strings.Contains(rep.Skipped[id], "Object Lock") {
				t.Errorf("skipped[%s] = %q, want retained by Object Lock", id, rep.Skipped[id])
			}
		}
		var keys []string
		for _, o := range rep.Retained {
			keys = append(keys, o.Key)
		}
		slices.Sort(keys)
		wantIDs(t, "retained", keys, []string{lockedIndex, lockedArtifact, requests.IndexKey(cluster, source, "nightly-02")})
		wantIDs(t, "listed", listed(t, b), []string{"nightly-05", "nightly-04", "nightly-02", "nightly-00"})
		if keys := keysUnder(t, b, dir("nightly-00")); len(keys) != 3 {
			t.Errorf("the backup whose index is retained lost objects: %q remain", keys)
		}

		for range 3 {
			rep = apply(t, r, policy(2))
			if len(rep.Retained) != 0 {
				t.Errorf("retained objects reported again: %+v", rep.Retained)
			}
			wantIDs(t, "deleted again", rep.Deleted, nil)
			if len(rep.Skipped) != 2 {
				t.Errorf("skipped = %v, want the two retained backups", rep.Skipped)
			}
		}
		gc, err := r.CollectGarbage(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(gc.Retained) != 0 {
			t.Errorf("gc reported retained objects again: %+v", gc.Retained)
		}
		for key, want := range map[string]int{lockedIndex: 1, lockedArtifact: 1} {
			if n := h.count(key); n != want {
				t.Errorf("%s: %d delete attempts, want %d", key, n, want)
			}
		}
		for _, key := range keysUnder(t, b, dir("nightly-02")) {
			if n := h.count(key); n != 0 {
				t.Errorf("%s of a backup known retained was tried %d times", key, n)
			}
		}
		// Another process (a new Runner) tries once more, and reports once.
		rep = apply(t, newRunner(t, h, "b"), policy(2))
		if len(rep.Retained) != 2 {
			t.Errorf("a new runner reported %+v, want the index of nightly-00 and nightly-02", rep.Retained)
		}
	})
}

// TestObjectLockVersitygw: the same against real Object Lock: a versitygw
// bucket created with it, objects written with a retain-until date. The
// bucket is left behind (its objects outlive the test); the shared server's
// directory is removed with it.
func TestObjectLockVersitygw(t *testing.T) {
	srv := s3test.Shared(t)
	name := "capsule-lock-" + strings.ToLower(requests.NewID()[20:])
	sb := newS3(t, srv, name)
	if _, err := sb.Client().CreateBucket(t.Context(), &awss3.CreateBucketInput{Bucket: &name, ObjectLockEnabledForBucket: ptr(true)}); err != nil {
		t.Fatalf("create a bucket with object lock: %v", err)
	}
	b := bucket.Prefixed(sb, "capsule/")
	until := time.Now().Add(time.Hour).Truncate(time.Second)
	specs := scheduled(4)
	specs[0].lock = until                              // locked; the index does not say so
	specs[1].lock, specs[1].retainUntil = until, until // locked, and the index says so
	writeAll(t, b, specs)
	h := hook(b, nil)
	r := newRunner(t, h, "a")
	rep := apply(t, r, policy(2))
	wantIDs(t, "deleted", rep.Deleted, nil)
	wantIDs(t, "kept", rep.Kept, []string{"nightly-03", "nightly-02"})
	if len(rep.Skipped) != 2 || len(rep.Retained) != 2 {
		t.Errorf("skipped %v, retained %+v; want both old backups", rep.Skipped, rep.Retained)
	}
	for _, o := range rep.Retained {
		if o.Key == requests.IndexKey(cluster, source, "nightly-00") && !strings.Contains(o.Err, "object lock") {
			t.Errorf("refusal %q does not name the lock", o.Err)
		}
	}
	wantIDs(t, "listed", listed(t, b), []string{"nightly-03", "nightly-02", "nightly-01", "nightly-00"})
	rep = apply(t, r, policy(2))
	if len(rep.Retained) != 0 {
		t.Errorf("reported again: %+v", rep.Retained)
	}
	if n := h.count(requests.IndexKey(cluster, source, "nightly-00")); n != 1 {
		t.Errorf("the refused index was tried %d times, want 1", n)
	}
	for _, key := range keysUnder(t, b, dir("nightly-01")) {
		if n := h.count(key); n != 0 {
			t.Errorf("%s of a backup known retained was tried %d times", key, n)
		}
	}
	for _, id := range []string{"nightly-00", "nightly-01"} {
		if keys := keysUnder(t, b, dir(id)); len(keys) != 3 {
			t.Errorf("retained backup %s: %q remain, want index and two artifacts", id, keys)
		}
	}
}

// TestLease: a lease held by another replica makes Apply a no-op; a
// released or expired one is taken over.
func TestLease(t *testing.T) {
	p := policy(1)
	writeLock := func(t *testing.T, b bucket.Bucket, holder string, d time.Duration, released bool) {
		t.Helper()
		body := fmt.Sprintf(`{"apiVersion":"capsule/v1","kind":"Lock","holder":%q,"token":"x","durationMillis":%d,"released":%t}`, holder, d.Milliseconds(), released)
		if _, err := bucket.PutBytes(t.Context(), b, retention.LockKey(p), []byte(body), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	backends(t, func(t *testing.T, b bucket.Bucket) {
		writeAll(t, b, scheduled(3))
		r := newRunner(t, b, "a")
		writeLock(t, b, "other", time.Hour, false)
		rep, err := r.Apply(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		if rep.LeaseHeldBy != "other" || len(rep.Deleted) != 0 {
			t.Fatalf("with the lease held: %+v", rep)
		}
		wantIDs(t, "listed", listed(t, b), []string{"nightly-02", "nightly-01", "nightly-00"})
		writeLock(t, b, "other", time.Hour, true)
		rep = apply(t, r, p)
		wantIDs(t, "deleted after release", rep.Deleted, []string{"nightly-00", "nightly-01"})
	})
	t.Run("expired", func(t *testing.T) {
		fb, err := fs.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		b := bucket.Prefixed(fb, "capsule/")
		writeAll(t, b, scheduled(2))
		writeLock(t, b, "other", time.Minute, false)
		// Its last write was two minutes ago by the bucket's clock (the
		// directory's modification times).
		old := time.Now().Add(-2 * time.Minute)
		if err := os.Chtimes(filepath.Join(fb.Dir(), "capsule", retention.LockKey(p)), old, old); err != nil {
			t.Fatal(err)
		}
		rep := apply(t, newRunner(t, b, "a"), p)
		wantIDs(t, "deleted after expiry", rep.Deleted, []string{"nightly-00"})
	})
}

// TestLeaseLost: a replica whose lease is taken over mid-run stops before
// its next delete.
func TestLeaseLost(t *testing.T) {
	b := newFS(t)
	writeAll(t, b, scheduled(5))
	p := policy(1)
	var once sync.Once
	h := hook(b, func(ctx context.Context, key string) error {
		var err error
		once.Do(func() {
			// Another replica takes the lease over, as after a pause.
			body := `{"apiVersion":"capsule/v1","kind":"Lock","holder":"thief","token":"y","durationMillis":3600000}`
			if _, err := bucket.PutBytes(ctx, b, retention.LockKey(p), []byte(body), bucket.PutOptions{}); err != nil {
				t.Error(err)
			}
			// The next renewal finds the lease gone and cancels the
			// run; the delete fails as a bucket's would.
			<-ctx.Done()
			err = fmt.Errorf("delete %s: %w", key, ctx.Err())
		})
		return err
	})
	r, err := retention.New(retention.Config{Bucket: h, Holder: "a", Lease: 3 * time.Second, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Apply(t.Context(), p)
	if !errors.Is(err, retention.ErrLeaseLost) {
		t.Fatalf("apply: %v, want ErrLeaseLost", err)
	}
	wantIDs(t, "deleted", rep.Deleted, nil)
	if len(h.order) != 1 {
		t.Errorf("deletes after the lease was lost: %q", h.order)
	}
	wantIDs(t, "listed", listed(t, b), []string{"nightly-04", "nightly-03", "nightly-02", "nightly-01", "nightly-00"})
	data, _, err := bucket.GetBytes(t.Context(), b, retention.LockKey(p))
	if err != nil || !strings.Contains(string(data), "thief") {
		t.Errorf("the new holder's lease was overwritten: %s %v", data, err)
	}
}

func TestGarbageCollection(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		ctx := t.Context()
		put := func(key string) {
			t.Helper()
			if _, err := bucket.PutBytes(ctx, b, key, []byte("x"), bucket.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		lease := func(id string, d time.Duration, released bool) {
			t.Helper()
			l := requests.Lease{APIVersion: requests.APIVersion, Kind: "Lease", ID: id, Holder: "zombie", Token: "t", Attempt: 1, DurationMillis: d.Milliseconds(), Released: released}
			data, _ := json.Marshal(l)
			if _, err := bucket.PutBytes(ctx, b, requests.LeaseKey(id), data, bucket.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		art := func(id string, attempt int) string {
			return requests.ArtifactKey(cluster, source, id, attempt, "tree.tar.zst")
		}
		// taken-over: committed by attempt 2; attempt 1's folder is garbage.
		writeBackup(t, b, spec{id: "taken-over", plan: plan, attempt: 2})
		put(art("taken-over", 1))
		// zombie: the same, but attempt 1's worker still holds a live lease.
		writeBackup(t, b, spec{id: "zombie", plan: plan, attempt: 2})
		put(art("zombie", 1))
		lease("zombie", time.Hour, false)
		// failed: never committed, request and lease gone.
		put(art("failed", 1))
		put(art("failed", 2))
		// pending: not committed yet, its request waits for a retry.
		put(art("pending", 1))
		if err := client.Submit(ctx, b, &requests.Request{Kind: requests.KindBackup, ID: "pending", Source: source}); err != nil {
			t.Fatal(err)
		}
		// released: not committed, its lease handed back, request gone.
		put(art("released", 1))
		lease("released", time.Hour, true)
		// Uploads left open: one of a dead attempt, one of the zombie's.
		openUpload(t, b, art("dead-upload", 1))
		openUpload(t, b, art("zombie", 3))

		r := newRunner(t, b, "gc")
		// Everything is younger than an hour: nothing goes.
		rep, err := r.CollectGarbage(ctx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Removed) != 0 || rep.Objects != 0 || len(rep.Aborted) != 0 {
			t.Fatalf("young garbage removed: %+v", rep)
		}
		if !strings.Contains(rep.Left[dir("failed")], "younger") {
			t.Errorf("left = %v, want the failed backup as younger", rep.Left)
		}

		rep, err = r.CollectGarbage(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		removed := slices.Clone(rep.Removed)
		slices.Sort(removed)
		wantIDs(t, "removed", removed, []string{dir("failed"), dir("released"), dir("taken-over") + "1/"})
		if rep.Objects != 4 {
			t.Errorf("%d objects deleted, want 4", rep.Objects)
		}
		if !strings.Contains(rep.Left[dir("zombie")+"1/"], "lease") || !strings.Contains(rep.Left[dir("pending")], "request") {
			t.Errorf("left = %v, want zombie/1/ for its lease and pending/ for its request", rep.Left)
		}
		if len(rep.Aborted) != 1 || rep.Aborted[0].Key != art("dead-upload", 1) {
			t.Errorf("aborted %+v, want only the dead attempt's upload", rep.Aborted)
		}
		if ups, err := b.(bucket.UploadLister).ListUploads(ctx, requests.BackupsPrefix); err != nil || len(ups) != 1 || ups[0].Key != art("zombie", 3) {
			t.Errorf("uploads left: %+v, %v; want the zombie's", ups, err)
		}
		for _, id := range []string{"failed", "released"} {
			if keys := keysUnder(t, b, dir(id)); len(keys) != 0 {
				t.Errorf("%s: %q remain", id, keys)
			}
		}
		wantIDs(t, "taken-over's objects", keysUnder(t, b, dir("taken-over")), []string{
			requests.ArtifactKey(cluster, source, "taken-over", 2, "meta.json.zst"), art("taken-over", 2), dir("taken-over") + requests.IndexName})
		if keys := keysUnder(t, b, dir("zombie")); len(keys) != 4 {
			t.Errorf("zombie: %q remain, want all four", keys)
		}
		if keys := keysUnder(t, b, dir("pending")); len(keys) != 1 {
			t.Errorf("pending: %q remain", keys)
		}
		wantIDs(t, "listed", listed(t, b), []string{"zombie", "taken-over"})
	})
}

// TestGarbageAge: in one pass, garbage older than the threshold goes and
// younger garbage stays (ages set through the directory's modification
// times, which are the fs bucket's clock).
func TestGarbageAge(t *testing.T) {
	fb, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	for _, id := range []string{"old", "young"} {
		key := requests.ArtifactKey(cluster, source, id, 1, "tree.tar.zst")
		if _, err := bucket.PutBytes(t.Context(), b, key, []byte("x"), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if id == "old" {
			old := time.Now().Add(-25 * time.Hour)
			if err := os.Chtimes(filepath.Join(fb.Dir(), "capsule", key), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep, err := newRunner(t, b, "gc").CollectGarbage(t.Context(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "removed", rep.Removed, []string{dir("old")})
	if !strings.Contains(rep.Left[dir("young")], "younger") {
		t.Errorf("left = %v", rep.Left)
	}
}

// TestRacingCollectors: two replicas collecting garbage together remove
// each folder once.
func TestRacingCollectors(t *testing.T) {
	backends(t, func(t *testing.T, b bucket.Bucket) {
		for i := range 10 {
			key := requests.ArtifactKey(cluster, source, fmt.Sprintf("failed-%02d", i), 1, "tree.tar.zst")
			if _, err := bucket.PutBytes(t.Context(), b, key, []byte("x"), bucket.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		runners := []*retention.Runner{newRunner(t, b, "a"), newRunner(t, b, "b")}
		var mu sync.Mutex
		var removed []string
		var wg sync.WaitGroup
		for range 5 {
			for _, r := range runners {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rep, err := r.CollectGarbage(t.Context(), 0)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					removed = append(removed, rep.Removed...)
					mu.Unlock()
				}()
			}
		}
		wg.Wait()
		slices.Sort(removed)
		if len(removed) != 10 || len(slices.Compact(slices.Clone(removed))) != 10 {
			t.Errorf("removed %q, want each of the 10 folders once", removed)
		}
		if keys := keysUnder(t, b, requests.BackupsPrefix); len(keys) != 0 {
			t.Errorf("%q remain", keys)
		}
	})
}

// openUpload starts an upload of key and leaves it open (more than one S3
// part, so that S3 has a multipart upload), as a crashed writer would.
func openUpload(t *testing.T, b bucket.Bucket, key string) bucket.Upload {
	t.Helper()
	u, err := b.Upload(t.Context(), key, bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(make([]byte, s3.MinPartSize+1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Abort() })
	return u
}

func TestPolicyValidate(t *testing.T) {
	for _, c := range []struct {
		p    retention.Policy
		want string
	}{
		{retention.Policy{Source: source, Plan: plan, Keep: 1}, "cluster"},
		{retention.Policy{Cluster: cluster, Plan: plan, Keep: 1}, "source"},
		{retention.Policy{Cluster: cluster, Source: source, Keep: 1}, "plan"},
		{retention.Policy{Cluster: cluster, Source: source, Plan: plan}, "keep"},
	} {
		err := c.p.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.p, err, c.want)
		}
	}
	if err := (retention.Policy{Cluster: cluster, Source: source, IncludeManual: true, Keep: 1}).Validate(); err != nil {
		t.Errorf("a policy of manual backups only: %v", err)
	}
	for _, c := range []struct {
		cfg  retention.Config
		want string
	}{
		{retention.Config{Holder: "a"}, "Bucket"},
		{retention.Config{Bucket: newFS(t)}, "Holder"},
		{retention.Config{Bucket: newFS(t), Holder: "a", Lease: -time.Second}, "Lease"},
	} {
		if _, err := retention.New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}
