package watcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

// takeoverEngine is the real files engine with a hook run immediately
// before the engine calls its Fence, that is, after staging and before
// the swap: there a test plays the worker that took the request over
// while this one was paused.
type takeoverEngine struct {
	*files.Engine
	beforeFence func(ctx context.Context, job *engines.RestoreJob)
	afterFence  func(ctx context.Context, job *engines.RestoreJob, err error)
}

func (e *takeoverEngine) Restore(ctx context.Context, job *engines.RestoreJob) (*engines.RestoreInfo, error) {
	inner := job.Fence
	job.Fence = func(ctx context.Context) error {
		e.beforeFence(ctx, job)
		var err error
		if inner != nil {
			err = inner(ctx)
		}
		e.afterFence(ctx, job, err)
		return err
	}
	return e.Engine.Restore(ctx, job)
}

type leaseSeen struct {
	lease requests.Lease
	etag  string
}

func (e *env) readLease(ctx context.Context, id string) leaseSeen {
	e.t.Helper()
	data, info, err := bucket.GetBytes(ctx, e.b, requests.LeaseKey(id))
	if err != nil {
		e.t.Fatalf("read lease %s: %v", id, err)
	}
	var l requests.Lease
	if err := json.Unmarshal(data, &l); err != nil {
		e.t.Fatal(err)
	}
	return leaseSeen{lease: l, etag: info.ETag}
}

// TestFenceRenewsBeforeTheSwap: the fence a restore calls right before
// its swap renews the lease with If-Match on the holder's own last
// write: the restore swaps after a renewal it made. When another worker
// took the request over first (the lease overwritten in the bucket), the
// fence fails with the lease lost, the engine does not swap, and this
// worker writes nothing more: no result, and the other holder's lease
// stays as it was.
func TestFenceRenewsBeforeTheSwap(t *testing.T) {
	forEachBucket(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		te := &takeoverEngine{Engine: files.New()}
		e.reg = engines.NewRegistry(te, e.gate)
		target := filepath.Join(e.dir, "copy")
		e.srcs["copy"] = engines.Source{Name: "copy", Engine: "files", Config: map[string]any{"path": target}}
		w := e.watcher("w1", func(c *watcher.Config) { c.Lease = time.Minute })
		backup := e.submit(backupReq("data"))
		if _, err := w.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		w.Wait()
		if r := e.result(backup); r == nil || r.Status != requests.StatusSucceeded {
			t.Fatalf("backup: %+v", r)
		}

		t.Run("Renews", func(t *testing.T) {
			var before, after leaseSeen
			var fenceErr error
			te.beforeFence = func(ctx context.Context, job *engines.RestoreJob) { before = e.readLease(ctx, job.ID) }
			te.afterFence = func(ctx context.Context, job *engines.RestoreJob, err error) {
				fenceErr = err
				after = e.readLease(ctx, job.ID)
			}
			id := e.submit(&requests.Request{Kind: requests.KindRestore, BackupID: backup, Target: "copy"})
			if _, err := w.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			w.Wait()
			if fenceErr != nil {
				t.Fatalf("the fence of the lease's holder failed: %v", fenceErr)
			}
			if after.etag == before.etag || after.lease.Renewals != before.lease.Renewals+1 || after.lease.Holder != "w1" || after.lease.Token == before.lease.Token {
				t.Errorf("the fence did not renew the lease: before %+v (%s), after %+v (%s)", before.lease, before.etag, after.lease, after.etag)
			}
			if r := e.result(id); r == nil || r.Status != requests.StatusSucceeded {
				t.Fatalf("restore: %+v", r)
			}
			if _, err := os.Stat(filepath.Join(target, "sub", "f2.txt")); err != nil {
				t.Errorf("the restore did not swap: %v", err)
			}
		})

		t.Run("TakenOverDoesNotSwap", func(t *testing.T) {
			if err := os.RemoveAll(target); err != nil {
				t.Fatal(err)
			}
			var taken leaseSeen
			var fenceErr error
			te.beforeFence = func(ctx context.Context, job *engines.RestoreJob) {
				// Another worker took the request over while this one
				// was paused: it wrote the lease as attempt 2.
				now := time.Now().UTC()
				l := requests.Lease{APIVersion: requests.APIVersion, Kind: "Lease", ID: job.ID, Holder: "w2", Token: "other-token",
					Attempt: job.Attempt + 1, DurationMillis: time.Minute.Milliseconds(), AcquiredAt: now, RenewedAt: now}
				data, _ := json.Marshal(l)
				e.putRaw(requests.LeaseKey(job.ID), data)
				taken = e.readLease(ctx, job.ID)
			}
			te.afterFence = func(ctx context.Context, job *engines.RestoreJob, err error) { fenceErr = err }
			id := e.submit(&requests.Request{Kind: requests.KindRestore, BackupID: backup, Target: "copy"})
			if _, err := w.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			w.Wait()
			if !errors.Is(fenceErr, watcher.ErrLeaseLost) {
				t.Errorf("the fence after a takeover returned %v, want an error wrapping ErrLeaseLost", fenceErr)
			}
			e.waitEvent(watcher.EventLost, id, 5*time.Second)
			if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the worker that lost its lease swapped: %s exists (%v)", target, err)
			}
			des, err := os.ReadDir(e.dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range des {
				if strings.Contains(d.Name(), ".capsule-restore-") {
					t.Errorf("staging left behind: %s", d.Name())
				}
			}
			if r := e.result(id); r != nil {
				t.Errorf("the worker that lost its lease wrote a result: %+v", r)
			}
			if now := e.readLease(ctx, id); now.etag != taken.etag || now.lease.Holder != "w2" {
				t.Errorf("the other holder's lease was overwritten: %+v", now.lease)
			}
		})
	})
}
