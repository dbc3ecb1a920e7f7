package pitr

import (
	"context"
	"fmt"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
	"github.com/jackc/pglogrepl"
)

// Restorer runs point-in-time Restore requests on a worker: the
// executor's PointInTime (executor.PointInTimeRestorer). The temporary
// server runs on Scratch.
type Restorer struct {
	Bucket bucket.Bucket
	// Scratch is where the temporary server runs (the worker's
	// worker.scratch; default the system's temporary directory). It
	// needs room for the whole recovered cluster.
	Scratch string
}

var _ executor.PointInTimeRestorer = (*Restorer)(nil)

// TargetOf reads a request's point in time.
func TargetOf(p requests.PointInTime) (Target, error) {
	t := Target{Time: p.Time, Latest: p.Latest}
	if p.LSN != "" {
		l, err := pglogrepl.ParseLSN(p.LSN)
		if err != nil || l == 0 {
			return t, fmt.Errorf("lsn: %q is not a WAL position such as 0/3000060", p.LSN)
		}
		t.LSN = l
	}
	return t, t.Validate()
}

// RestorePointInTime recovers job.Point into job.Target.
func (r *Restorer) RestorePointInTime(ctx context.Context, job *executor.PointInTimeJob) (*executor.PointInTimeOutcome, error) {
	t, err := TargetOf(job.Point)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", executor.ErrPointInTimeRefused, err)
	}
	into := job.Target
	res, err := Restore(ctx, RestoreConfig{
		Bucket: r.Bucket, Cluster: job.Cluster, Source: job.Point.Source, Target: t,
		Into: &into, Scratch: r.Scratch, ID: job.ID, Log: job.Log, Options: job.Options,
		DropPrevious: job.DropPrevious, Attempt: job.Attempt, Fence: job.Fence, StaleStaging: job.StaleStaging,
		Identities: job.Identities, Trust: job.Trust, Phase: job.Phase,
	})
	if err != nil {
		return nil, err
	}
	details := map[string]any{"pointInTime": map[string]any{
		"baseBackup": res.BackupID, "target": res.Target, "timeline": res.Timeline,
		"fromLSN": res.FromLSN, "walUpTo": res.WALUpTo,
		"recoveredLSN": res.RecoveredLSN, "recoveredReason": res.RecoveredReason,
	}}
	if res.Previous != "" {
		details["previous"] = res.Previous
	} else if job.DropPrevious {
		details["droppedPrevious"] = true
	}
	return &executor.PointInTimeOutcome{BackupID: res.BackupID, Bytes: res.Bytes, StoredBytes: res.StoredBytes,
		Downtime: res.Downtime, Details: details}, nil
}
