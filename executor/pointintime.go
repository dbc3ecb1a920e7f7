package executor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/sirupsen/logrus"
)

// PointInTimeRestorer runs a Restore that names a point in time of a
// PostgreSQL source instead of a backup (requests.PointInTime). Package
// pitr implements it (pitr.Restorer); it lives there because it needs
// this package's artifact pipeline. The executor has resolved the
// sources and checked the request before calling it.
type PointInTimeRestorer interface {
	RestorePointInTime(ctx context.Context, job *PointInTimeJob) (*PointInTimeOutcome, error)
}

// PointInTimeJob is one resolved point-in-time restore.
type PointInTimeJob struct {
	// ID and Attempt name the restore's side databases, as for every
	// restore: a paused attempt never touches the staging of the one
	// that took over.
	ID      string
	Attempt int
	Cluster string
	// Point is the request's point in time; Point.Source is the source
	// whose base backups and WAL are read.
	Point requests.PointInTime
	// Target is the server the recovered data goes into, resolved from
	// the request's target (default Point.Source).
	Target       engines.Source
	DropPrevious bool
	Options      map[string]string
	// Identities open an encrypted base backup and encrypted WAL: the
	// worker's, the target's and the source's, as for every restore.
	Identities *crypt.Identities
	// Trust judges the signatures of the base backup it starts from and
	// of the WAL.
	Trust *index.Trust
	// Fence and StaleStaging: as engines.RestoreJob's.
	Fence        func(ctx context.Context) error
	StaleStaging func(ctx context.Context, id string, attempt int) (bool, error)
	// Phase tells the request's progress what the restore does now.
	Phase func(string)
	Log   logrus.FieldLogger
}

// PointInTimeOutcome is what a point-in-time restore recovered.
type PointInTimeOutcome struct {
	// BackupID is the base backup it started from.
	BackupID string
	// Bytes is the base backup's raw size.
	Bytes, StoredBytes int64
	Downtime           time.Duration
	// Details go into the result's details (which point was recovered,
	// the WAL replayed, the kept previous data).
	Details map[string]any
}

// ErrPointInTimeRefused is wrapped by a PointInTimeRestorer's error when
// the request can never succeed as written (no base backup before the
// time, a time past the latest recoverable point): it ends rejected.
var ErrPointInTimeRefused = errors.New("point in time not recoverable")

// restorePointInTime runs a Restore of req.PointInTime.
func (x *Executor) restorePointInTime(ctx context.Context, req *requests.Request, attempt int, progress *Tracker, out *Outcome, log logrus.FieldLogger) error {
	pt := *req.PointInTime
	out.Engine = "postgres"
	if x.cfg.PointInTime == nil {
		return Reject(errors.New("pointInTime: this worker does not run point-in-time restores"))
	}
	src, eng, err := x.lookupSource(pt.Source, "pointInTime.source")
	if err != nil {
		return err
	}
	if eng.Name() != "postgres" {
		return Reject(fmt.Errorf("pointInTime.source: %s is a %s source; point-in-time restores are of postgres sources", pt.Source, eng.Name()))
	}
	target := src
	if req.Target != "" && req.Target != pt.Source {
		if target, eng, err = x.lookupSource(req.Target, "target"); err != nil {
			return err
		}
		if eng.Name() != "postgres" {
			return Reject(fmt.Errorf("target: %s is a %s source; point-in-time restores go into postgres", req.Target, eng.Name()))
		}
	}
	if err := engines.CheckRestoreOptions(eng, req.Options); err != nil {
		return Reject(fmt.Errorf("options: %w", err))
	}
	var notes map[string]any
	if x.cfg.RestoreAs != nil {
		if target, notes, err = x.cfg.RestoreAs(ctx, req.Kind, target); err != nil {
			return err
		}
	}
	if err := eng.Validate(target); err != nil {
		return fmt.Errorf("target %s is misconfigured: %w", target.Name, err)
	}
	// The base backup is picked by the restorer; the identities at hand
	// are the same whichever it picks.
	ids, err := x.gatherIdentities(ctx, &index.BackupIndex{BackupID: "point in time of " + pt.Source, Source: pt.Source}, target)
	if err != nil {
		return err
	}
	progress.Phase("point-in-time restore")
	job := &PointInTimeJob{
		ID: req.ID, Attempt: attempt, Cluster: req.ClusterOrDefault(), Point: pt, Target: target,
		DropPrevious: req.DropPrevious, Options: req.Options, Identities: ids, Trust: x.cfg.Trust.WithUnsigned(req.AllowUnsigned),
		Fence: progress.fence(), StaleStaging: x.staleStaging, Phase: progress.Phase,
		Log: log.WithFields(logrus.Fields{"source": pt.Source, "engine": "postgres", "target": target.Name}),
	}
	res, err := x.cfg.PointInTime.RestorePointInTime(ctx, job)
	if res != nil {
		out.Result.BackupID = res.BackupID
	}
	if err != nil {
		if errors.Is(err, ErrPointInTimeRefused) {
			return Reject(fmt.Errorf("pointInTime: %w", err))
		}
		return fmt.Errorf("point-in-time restore of %s into %s: %w", pt.Source, target.Name, err)
	}
	out.Result.Bytes, out.Result.StoredBytes = res.Bytes, res.StoredBytes
	out.Result.DowntimeMillis = res.Downtime.Milliseconds()
	details := map[string]any{"target": target.Name}
	for k, v := range res.Details {
		details[k] = v
	}
	for k, v := range notes {
		details[k] = v
	}
	out.Result.Details = details
	return nil
}
