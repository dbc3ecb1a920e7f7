package executor_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/schemas"
)

// checksumOnly is the files engine without its Verifier, as the redis
// engine was: the executor can only read the artifacts' bytes.
type checksumOnly struct{ e *files.Engine }

func (c checksumOnly) Name() string                      { return c.e.Name() }
func (c checksumOnly) Validate(src engines.Source) error { return c.e.Validate(src) }
func (c checksumOnly) Backup(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	return c.e.Backup(ctx, job)
}
func (c checksumOnly) Restore(ctx context.Context, job *engines.RestoreJob) (*engines.RestoreInfo, error) {
	return c.e.Restore(ctx, job)
}

// TestVerifyRecordsWhatWasProven: a verification by an engine that
// restores into scratch space records "restored"; the checksum-only path
// (an engine without a Verifier) records "checksum", never "restored",
// though it passed; a corrupt backup records "failed". The stored record
// carries the state and matches its schema; the result says it too.
func TestVerifyRecordsWhatWasProven(t *testing.T) {
	f := newFixture(t, "zstd")
	ctx := context.Background()
	idx := f.backup()
	plain, err := executor.New(executor.Config{
		Bucket: f.b, Engines: engines.NewRegistry(checksumOnly{files.New()}), Worker: "test", Version: "test",
		Sources: sources{"data": {Name: "data", Engine: "files", Config: map[string]any{"path": f.data}}},
		Log:     enginetest.TestLog(t),
	})
	must(t, err)
	verify := func(x *executor.Executor) (*executor.Outcome, *index.Verification) {
		t.Helper()
		req := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindVerify, ID: requests.NewID(), BackupID: idx.BackupID}
		out := x.Run(ctx, req, 1, executor.NewTracker())
		must(t, x.Commit(ctx, out))
		// The record as stored, not as the executor holds it.
		var raw []byte
		must(t, bucket.Walk(ctx, f.b, requests.BackupDir("default", "data", idx.BackupID), func(o bucket.ObjectInfo) error {
			if strings.Contains(o.Key, "/verify-") {
				data, _, err := bucket.GetBytes(ctx, f.b, o.Key)
				var v index.Verification
				if err == nil && json.Unmarshal(data, &v) == nil && v.RequestID == req.ID {
					raw = data
				}
			}
			return nil
		}))
		var v schemas.Validator
		if err := v.Validate("verification", raw); err != nil {
			t.Errorf("record of %s: %v", req.ID, err)
		}
		var rec index.Verification
		must(t, json.Unmarshal(raw, &rec))
		return out, &rec
	}

	out, rec := verify(plain)
	if out.Result.Status != requests.StatusSucceeded || rec.State != index.VerifyChecksum || out.Result.Details["state"] != index.VerifyChecksum {
		t.Errorf("checksum-only verification: status %s, record state %q, result state %v; want succeeded, checksum, checksum",
			out.Result.Status, rec.State, out.Result.Details["state"])
	}
	e, err := index.Find(ctx, f.b, idx.BackupID)
	must(t, err)
	if e.Verification.State != index.VerifyChecksum {
		t.Errorf("the catalog shows the checksum-only verification as %q", e.Verification.State)
	}

	out, rec = verify(f.x)
	if out.Result.Status != requests.StatusSucceeded || rec.State != index.VerifyRestored || out.Result.Details["state"] != index.VerifyRestored {
		t.Errorf("scratch-restore verification: status %s, record state %q, result state %v; want succeeded, restored, restored",
			out.Result.Status, rec.State, out.Result.Details["state"])
	}

	// Damage the artifact: both paths record failed.
	a := idx.Artifacts[0]
	data, _, err := bucket.GetBytes(ctx, f.b, a.Key)
	must(t, err)
	data[len(data)/2] ^= 1
	_, err = bucket.PutBytes(ctx, f.b, a.Key, data, bucket.PutOptions{})
	must(t, err)
	for name, x := range map[string]*executor.Executor{"checksum-only": plain, "scratch restore": f.x} {
		out, rec = verify(x)
		if out.Result.Status != requests.StatusFailed || rec.State != index.VerifyFailed || rec.OK {
			t.Errorf("%s verification of a corrupt backup: status %s, record state %q ok %v; want failed, failed, false", name, out.Result.Status, rec.State, rec.OK)
		}
	}
}
