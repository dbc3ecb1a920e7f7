package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/requests"
)

// NoChecksum is what a restore or verification of a backup of the old
// service says about its checksum, in the result's details.
const NoChecksum = "none: the old service recorded no checksum, so the dump was restored as stored; capsule checked only its size and that pg_restore read it whole (capsule legacy import stores it with a sha256)"

// prepareLegacy finds a backup of the old service that a Restore or
// Verify names (legacy:<id>) and builds its job: the engine restores
// the dump, a pg_dump tar archive, as it restores its own backups. The
// returned index describes the backup for the result; it is never
// written.
func (x *Executor) prepareLegacy(ctx context.Context, req *requests.Request, id string, attempt int, progress *Tracker) (*index.BackupIndex, engines.Source, engines.Engine, *engines.RestoreJob, map[string]any, error) {
	if x.cfg.Legacy == nil {
		return nil, engines.Source{}, nil, nil, nil, Reject(fmt.Errorf("backupId: %s names a backup of the old cnvrg-capsule service, and this worker reads none (no legacy folder configured)", req.BackupID))
	}
	b, err := x.cfg.Legacy.Find(ctx, id)
	switch {
	case errors.Is(err, legacy.ErrNotFound) || errors.Is(err, legacy.ErrDamaged):
		return nil, engines.Source{}, nil, nil, nil, Reject(fmt.Errorf("backupId: %w", err))
	case err != nil:
		return nil, engines.Source{}, nil, nil, nil, fmt.Errorf("find legacy backup %s: %w", id, err)
	}
	info := postgres.TarBackupInfo(legacy.Artifact, b.Bytes)
	_, prefix := bucket.Unprefixed(x.cfg.Bucket)
	idx := &index.BackupIndex{
		Prefix:   prefix,
		BackupID: req.BackupID, Cluster: req.ClusterOrDefault(), Source: b.Source, Engine: legacy.Engine,
		Format: info.Format, Bytes: b.Bytes, StoredBytes: b.Bytes,
	}
	if !b.Restorable() {
		why := b.Problem
		if why == "" {
			why = "it ended " + b.Status + " and has no whole dump"
		}
		return idx, engines.Source{}, nil, nil, nil, Reject(fmt.Errorf("backupId: legacy backup %s cannot be restored: %s", id, why))
	}
	target := req.Target
	if target == "" {
		target = b.Source
	}
	src, eng, err := x.lookupSource(target, "target")
	if err != nil {
		if req.Target == "" && IsRejected(err) {
			err = Reject(fmt.Errorf("target: legacy backup %s was made of %s, which is no source here: name one (capsule restore --to SOURCE, capsule verify --into SOURCE): %w", id, b.Source, err))
		}
		return idx, src, nil, nil, nil, err
	}
	if eng.Name() != legacy.Engine {
		return idx, src, nil, nil, nil, Reject(fmt.Errorf("target: %s is a %s source; legacy backup %s is a PostgreSQL dump", target, eng.Name(), id))
	}
	var notes map[string]any
	if x.cfg.RestoreAs != nil {
		if src, notes, err = x.cfg.RestoreAs(ctx, req.Kind, src); err != nil {
			return idx, src, nil, nil, nil, err
		}
	}
	if err := eng.Validate(src); err != nil {
		return idx, src, nil, nil, nil, fmt.Errorf("target %s is misconfigured: %w", target, err)
	}
	job := &engines.RestoreJob{
		ID:           req.ID,
		Attempt:      attempt,
		Fence:        progress.fence(),
		StaleStaging: x.staleStaging,
		Target:       src,
		Backup:       info,
		Artifacts:    &legacyArtifacts{store: x.cfg.Legacy, b: b, progress: progress},
		Options:      engines.RestoreOptions{DropPrevious: req.DropPrevious, Extra: req.Options},
		Progress:     progress.Engine,
	}
	return idx, src, eng, job, notes, nil
}

// legacyArtifacts is the engines.ArtifactReader of an old backup: its one
// artifact is the dump, streamed as stored. There is no checksum to
// verify; the read fails at its end when the bytes do not add up to the
// size the bucket listed.
type legacyArtifacts struct {
	store    *legacy.Store
	b        *legacy.Backup
	progress *Tracker
}

func (a *legacyArtifacts) Names() []string { return []string{legacy.Artifact} }

func (a *legacyArtifacts) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	if name != legacy.Artifact {
		return nil, fmt.Errorf("legacy backup %s has no artifact %s", a.b.BackupID, name)
	}
	rc, err := a.store.OpenDump(ctx, a.b)
	if err != nil {
		return nil, err
	}
	a.progress.Artifact(name)
	return &countingReader{ReadCloser: rc, ctx: ctx, progress: a.progress}, nil
}

func (a *legacyArtifacts) Verify(ctx context.Context, name string) error {
	rc, err := a.Open(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// countingReader reports the bytes read to the tracker and stops when
// the run's context ends.
type countingReader struct {
	io.ReadCloser
	ctx      context.Context
	progress *Tracker
}

func (r *countingReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, context.Cause(r.ctx)
	}
	n, err := r.ReadCloser.Read(p)
	r.progress.Bytes(int64(n), 0)
	return n, err
}

// Store commits a backup made elsewhere (capsule legacy import): write
// gives its artifacts, which go through the backup pipeline like an
// engine's (compression, sha256, multipart upload, Object Lock) into the
// folder of idx's attempt, each written create-only; idx, completed with
// them (artifacts, sizes, retain-until, capsule version, worker), is then
// written create-only. When an index is there already, the artifacts
// this call wrote are removed and the error wraps
// bucket.ErrPreconditionFailed; so they are when write fails.
func (x *Executor) Store(ctx context.Context, idx *index.BackupIndex, write func(engines.ArtifactWriter) error) error {
	if idx.Attempt < 1 {
		return fmt.Errorf("store backup %s: attempt %d: want 1 or more", idx.BackupID, idx.Attempt)
	}
	if _, err := x.cfg.Bucket.Head(ctx, idx.Key()); err == nil {
		return fmt.Errorf("store backup %s: %w: its index exists", idx.BackupID, bucket.ErrPreconditionFailed)
	}
	sink := &artifactSink{x: x, ctx: ctx, cluster: idx.Cluster, source: idx.Source, backupID: idx.BackupID,
		attempt: idx.Attempt, retain: x.retainUntil(), createOnly: true}
	// The worker's recipients (checked by New), as for its own backups.
	sink.recipients, _ = crypt.ParseRecipients(x.cfg.Recipients)
	err := write(sink)
	if abortErr := sink.abortOpen(); err == nil && abortErr != nil {
		err = abortErr
	}
	if err == nil && len(sink.artifacts) == 0 {
		err = errors.New("no artifact written")
	}
	if err != nil {
		x.removeArtifacts(sink.artifacts)
		return fmt.Errorf("store backup %s: %w", idx.BackupID, err)
	}
	idx.Artifacts, idx.Bytes, idx.StoredBytes = sink.artifacts, 0, 0
	for _, a := range sink.artifacts {
		idx.Bytes += a.Size
		idx.StoredBytes += a.StoredSize
	}
	idx.RetainUntil, idx.CapsuleVersion = sink.retain, x.cfg.Version
	if idx.Worker == "" {
		idx.Worker = x.cfg.Worker
	}
	if err := index.WriteSigned(ctx, x.cfg.Bucket, idx, x.cfg.Signer); err != nil {
		if errors.Is(err, bucket.ErrPreconditionFailed) {
			x.removeArtifacts(sink.artifacts)
		}
		return err
	}
	return nil
}

// removeArtifacts deletes artifacts this process wrote and no index
// names; what it cannot delete garbage collection removes later.
func (x *Executor) removeArtifacts(arts []index.Artifact) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, a := range arts {
		if err := x.cfg.Bucket.Delete(ctx, a.Key); err != nil {
			x.cfg.Log.WithField("key", a.Key).WithError(err).Warn("could not remove an artifact no index names; garbage collection will")
		}
	}
}

// legacyRef returns the old service's id a request names, if it does.
func legacyRef(req *requests.Request) (string, bool) {
	return requests.LegacyBackupID(req.BackupID)
}
