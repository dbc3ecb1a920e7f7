package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
)

// TestRestoreFencedByTheLeaseHolder: a restore runs as the attempt it is
// given and swaps only when the fence its tracker carries (the lease
// holder's) confirms the lease. Staging it finds from requests the
// bucket says are over, or whose lease a later attempt holds, is
// removed; staging of a request still running under that attempt stays.
func TestRestoreFencedByTheLeaseHolder(t *testing.T) {
	f := newFixture(t, "zstd")
	idx := f.backup()
	ctx := context.Background()
	parent := filepath.Dir(f.copy)
	staging := func(id string, attempt int) string {
		return filepath.Join(parent, ".copy.capsule-restore-"+id+".a"+strconv.Itoa(attempt))
	}
	run := func(id string, attempt int, fence func(context.Context) error) *executor.Outcome {
		t.Helper()
		req := requests.Request{APIVersion: requests.APIVersion, ID: id, Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"}
		if err := req.Validate(); err != nil {
			t.Fatal(err)
		}
		tr := executor.NewTracker()
		tr.SetFence(fence)
		return f.x.Run(ctx, &req, attempt, tr)
	}
	lease := func(id string, attempt int) {
		l := requests.Lease{APIVersion: requests.APIVersion, Kind: "Lease", ID: id, Holder: "w", Token: "t", Attempt: attempt, DurationMillis: 60000, AcquiredAt: time.Now(), RenewedAt: time.Now()}
		data, _ := json.Marshal(l)
		if _, err := bucket.PutBytes(ctx, f.b, requests.LeaseKey(id), data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("LostLeaseDoesNotSwap", func(t *testing.T) {
		lost := errors.New("lease lost: another worker took it over")
		calls := 0
		out := run("fenced-1", 2, func(context.Context) error { calls++; return lost })
		if out.Result.Status != requests.StatusFailed || !strings.Contains(out.Result.Error, engines.ErrFenced.Error()) || !strings.Contains(out.Result.Error, lost.Error()) {
			t.Fatalf("result %s %q, want failed with the fence's error", out.Result.Status, out.Result.Error)
		}
		if calls != 1 {
			t.Errorf("the fence was called %d times, want once", calls)
		}
		if _, err := os.Lstat(f.copy); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the target exists after a fenced restore: %v", err)
		}
		if _, err := os.Lstat(staging("fenced-1", 2)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the fenced attempt left its staging: %v", err)
		}
	})

	t.Run("StaleStagingIsSwept", func(t *testing.T) {
		for _, s := range []string{staging("finished", 1), staging("overtaken", 1), staging("running", 1)} {
			must(t, os.MkdirAll(filepath.Join(s, "half"), 0o755))
		}
		res, _ := json.Marshal(requests.Result{APIVersion: requests.APIVersion, Kind: "Result", ID: "finished", Status: requests.StatusFailed})
		if _, err := bucket.PutBytes(ctx, f.b, requests.ResultKey("finished"), res, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		lease("overtaken", 2)
		lease("running", 1)
		calls := 0
		out := run("sweeper", 1, func(context.Context) error { calls++; return nil })
		if out.Result.Status != requests.StatusSucceeded {
			t.Fatalf("restore: %s %s", out.Result.Status, out.Result.Error)
		}
		if calls != 1 {
			t.Errorf("the fence was called %d times, want once", calls)
		}
		var left []string
		des, err := os.ReadDir(parent)
		must(t, err)
		for _, d := range des {
			if strings.Contains(d.Name(), ".capsule-restore-") {
				left = append(left, d.Name())
			}
		}
		if want := []string{filepath.Base(staging("running", 1))}; !slices.Equal(left, want) {
			t.Errorf("staging left beside the target: %q, want only %q", left, want)
		}
	})
}
