package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
)

// prepareRestore finds the backup and the target of a Restore or Verify,
// run as the given attempt: the job's staging is named after it, and its
// Fence is the lease holder's, handed over through the tracker.
func (x *Executor) prepareRestore(ctx context.Context, req *requests.Request, attempt int, progress *Tracker) (*index.BackupIndex, engines.Source, engines.Engine, *engines.RestoreJob, map[string]any, error) {
	if id, ok := legacyRef(req); ok {
		// The old service signed nothing: where signatures are checked, its
		// backups are made before signing, accepted only when allowed.
		if t := x.cfg.Trust.WithUnsigned(req.AllowUnsigned); t.Checks() && !t.AllowUnsigned {
			return nil, engines.Source{}, nil, nil, nil, Reject(fmt.Errorf("backupId: backup %s was made by the old cnvrg-capsule service and has no signature: "+
				"where signatures are checked it is used only with allowUnsigned (capsule restore --allow-unsigned)", req.BackupID))
		}
		return x.prepareLegacy(ctx, req, id, attempt, progress)
	}
	entry, err := index.FindTrusted(ctx, x.cfg.Bucket, req.BackupID, x.cfg.Trust.WithUnsigned(req.AllowUnsigned))
	if err == nil {
		// A backup no trusted key signed may be anyone's: never restored,
		// never verified (a verification record would vouch for it).
		err = entry.TrustError()
	}
	if err != nil {
		if errors.Is(err, index.ErrUntrusted) {
			return nil, engines.Source{}, nil, nil, nil, Reject(fmt.Errorf("backupId: %w", err))
		}
		if errors.Is(err, index.ErrBackupNotFound) || errors.Is(err, index.ErrDamaged) {
			// Neither can ever be restored as the request is written.
			return nil, engines.Source{}, nil, nil, nil, Reject(fmt.Errorf("backupId: %w", err))
		}
		return nil, engines.Source{}, nil, nil, nil, fmt.Errorf("find backup %s: %w", req.BackupID, err)
	}
	idx := entry.BackupIndex
	target := req.Target
	if target == "" {
		target = idx.Source
	}
	src, eng, err := x.lookupSource(target, "target")
	if err != nil {
		return idx, src, nil, nil, nil, err
	}
	if target != idx.Source {
		// The backup's source must not belong to another bucket either:
		// a backup is only ever restored where its own bucket is served.
		if _, err := x.cfg.Sources.Lookup(idx.Source); errors.Is(err, ErrNotServed) {
			return idx, src, nil, nil, nil, Reject(fmt.Errorf("backupId: backup %s: %w", idx.BackupID, err))
		}
	}
	if eng.Name() != idx.Engine {
		return idx, src, nil, nil, nil, Reject(fmt.Errorf("target: %s is a %s source; backup %s was made by the %s engine", target, eng.Name(), idx.BackupID, idx.Engine))
	}
	if err := engines.CheckRestoreOptions(eng, req.Options); err != nil {
		return idx, src, nil, nil, nil, Reject(fmt.Errorf("options: %w", err))
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
		Backup: engines.BackupInfo{
			Format: idx.Format, ServerVersion: idx.ServerVersion, ToolVersion: idx.ToolVersion,
			SourceInfo: idx.SourceInfo, Details: idx.Details,
		},
		Artifacts: &artifactSource{x: x, idx: idx, progress: progress},
		Options:   engines.RestoreOptions{DropPrevious: req.DropPrevious, Extra: req.Options},
		Progress:  progress.Engine,
	}
	return idx, src, eng, job, notes, nil
}

func (x *Executor) restore(ctx context.Context, req *requests.Request, attempt int, progress *Tracker, out *Outcome, log logrus.FieldLogger) error {
	idx, src, eng, job, notes, err := x.prepareRestore(ctx, req, attempt, progress)
	if idx != nil {
		out.Result.Cluster, out.Result.Source = idx.Cluster, idx.Source
		out.Engine = idx.Engine
	}
	if err != nil {
		return err
	}
	if len(notes) > 0 {
		// Said even when the restore fails: the role is part of why.
		out.Result.Details = notes
	}
	job.Log = log.WithFields(logrus.Fields{"backup_id": idx.BackupID, "engine": eng.Name(), "target": src.Name})
	progress.Phase("restore")
	progress.Expect(idx.Bytes, false)
	info, err := eng.Restore(ctx, job)
	if err != nil {
		return fmt.Errorf("restore %s into %s: %w", idx.BackupID, src.Name, err)
	}
	out.Result.Bytes, out.Result.StoredBytes = idx.Bytes, idx.StoredBytes
	if info != nil {
		out.Result.DowntimeMillis = info.Downtime.Milliseconds()
		details := map[string]any{"target": src.Name}
		if info.Previous != "" {
			details["previous"] = info.Previous
		} else if req.DropPrevious {
			details["droppedPrevious"] = true
		}
		for k, v := range info.Details {
			details[k] = v
		}
		for k, v := range notes {
			details[k] = v
		}
		out.Result.Details = details
	}
	if _, ok := legacyRef(req); ok {
		if out.Result.Details == nil {
			out.Result.Details = map[string]any{"target": src.Name}
		}
		out.Result.Details["checksum"] = NoChecksum
	}
	return nil
}

func (x *Executor) verify(ctx context.Context, req *requests.Request, attempt int, progress *Tracker, out *Outcome, log logrus.FieldLogger) error {
	started := time.Now()
	idx, src, eng, job, notes, err := x.prepareRestore(ctx, req, attempt, progress)
	if idx != nil {
		out.Result.Cluster, out.Result.Source = idx.Cluster, idx.Source
		out.Engine = idx.Engine
	}
	if err != nil {
		return err
	}
	job.Log = log.WithFields(logrus.Fields{"backup_id": idx.BackupID, "engine": eng.Name(), "target": src.Name})
	progress.Phase("verify")
	progress.Expect(idx.Bytes, false)
	rec := &index.Verification{
		APIVersion: requests.APIVersion, Kind: index.KindVerification,
		BackupID: idx.BackupID, RequestID: req.ID, Target: src.Name, Worker: x.cfg.Worker,
	}
	var report *engines.VerifyReport
	// What a passing verification proves: a restore only where the
	// engine restored into scratch space and checked it.
	proven := index.VerifyRestored
	if v, ok := eng.(engines.Verifier); ok {
		report, err = v.Verify(ctx, job)
	} else {
		proven = index.VerifyChecksum
		// The engine cannot restore into scratch space: verify what can be
		// verified without touching anything, and say so in the checks.
		report = &engines.VerifyReport{OK: true}
		for _, name := range job.Artifacts.Names() {
			c := engines.Check{Name: "sha256 " + name, OK: true, Detail: "checksum only: engine " + eng.Name() + " has no scratch restore"}
			if verr := job.Artifacts.Verify(ctx, name); verr != nil {
				c.OK, c.Detail, report.OK = false, verr.Error(), false
			}
			report.Checks = append(report.Checks, c)
		}
	}
	if ctx.Err() != nil {
		// Canceled or lost: no verdict about the backup.
		if err == nil {
			err = context.Cause(ctx)
		}
		return err
	}
	rec.VerifiedAt = time.Now().UTC()
	rec.DurationMillis = time.Since(started).Milliseconds()
	if report != nil {
		rec.OK = report.OK && err == nil
		for _, c := range report.Checks {
			rec.Checks = append(rec.Checks, index.CheckResult{Name: c.Name, OK: c.OK, Detail: c.Detail})
		}
	}
	if rec.Checks == nil {
		rec.Checks = []index.CheckResult{}
	}
	if err != nil {
		rec.Error = err.Error()
	}
	rec.State = proven
	if !rec.OK {
		rec.State = index.VerifyFailed
	}
	out.Verification, out.VerifiedIndex = rec, idx
	out.Result.Details = map[string]any{"ok": rec.OK, "state": rec.State, "checks": rec.Checks}
	if _, ok := legacyRef(req); ok {
		// The old service's folder is not capsule's to write: the
		// outcome is in the result only.
		out.VerifiedIndex = nil
		out.Result.Details["checksum"] = NoChecksum
		out.Result.Details["recorded"] = "in this result only: capsule writes nothing into the old service's folder (capsule legacy import makes a backup whose verifications are recorded beside it)"
	}
	for k, v := range notes {
		out.Result.Details[k] = v
	}
	if err != nil {
		return fmt.Errorf("verify %s: %w", idx.BackupID, err)
	}
	if !rec.OK {
		return fmt.Errorf("verify %s: backup failed verification", idx.BackupID)
	}
	return nil
}

// DecodeMargin is how many bytes an artifact may decode to beyond the size
// its index records before the restore stops: the index is exact, so any
// excess is a damaged or hostile backup (a decompression bomb whose
// stored bytes match a forged checksum), and the engine never receives
// more than the recorded size plus this margin.
const DecodeMargin = 1 << 20

// MaxDecoderWindow caps the zstd window (the history a decoder keeps in
// memory) of an artifact, and the decoder's memory for a frame: capsule's
// encoder uses at most 8 MiB, so 32 MiB leaves room for artifacts made
// by the zstd tool's high levels, while a frame that asks for more is
// refused before any memory is taken for it (the library's default is
// 512 MiB per decoder).
const MaxDecoderWindow = 32 << 20

// ArtifactSizeError is a restore stopped because an artifact decoded to
// more bytes than its index records plus DecodeMargin. The engine was
// given at most Limit bytes of it.
type ArtifactSizeError struct {
	Artifact string
	// Recorded is the index's size of the artifact; Limit is Recorded
	// plus DecodeMargin.
	Recorded, Limit int64
}

func (e *ArtifactSizeError) Error() string {
	return fmt.Sprintf("artifact %s decodes to more than %d bytes, but the index records %d bytes (limit: the recorded size plus a %s margin): the backup is damaged or forged; stopped",
		e.Artifact, e.Limit, e.Recorded, bucket.FormatSize(DecodeMargin))
}

// artifactSource is the engines.ArtifactReader of one restore: each
// artifact streams from the bucket through sha256 verification and zstd
// decompression to the engine, and stops at the size the index recorded
// (plus DecodeMargin).
type artifactSource struct {
	x        *Executor
	idx      *index.BackupIndex
	progress *Tracker
}

func (a *artifactSource) Names() []string {
	names := make([]string, len(a.idx.Artifacts))
	for i, art := range a.idx.Artifacts {
		names[i] = art.Name
	}
	return names
}

func (a *artifactSource) find(name string) (index.Artifact, error) {
	for _, art := range a.idx.Artifacts {
		if art.Name == name {
			return art, nil
		}
	}
	return index.Artifact{}, fmt.Errorf("backup %s has no artifact %s", a.idx.BackupID, name)
}

func (a *artifactSource) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	art, err := a.find(name)
	if err != nil {
		return nil, err
	}
	if art.Encryption != nil {
		return nil, fmt.Errorf("artifact %s is encrypted (%s): this capsule cannot decrypt it", name, art.Encryption.Scheme)
	}
	body, _, err := a.x.cfg.Bucket.Get(ctx, art.Key)
	if err != nil {
		if errors.Is(err, bucket.ErrNotFound) {
			return nil, fmt.Errorf("artifact %s (%s) is missing from the bucket: %w", name, art.Key, err)
		}
		return nil, fmt.Errorf("open artifact %s: %w", name, err)
	}
	a.progress.Artifact(name)
	verified := engines.NewVerifyingReader(body, name, art.SHA256, art.StoredSize)
	if art.Size < 0 {
		body.Close()
		return nil, fmt.Errorf("artifact %s: the index records a negative size %d", name, art.Size)
	}
	r := &restoreStream{ctx: ctx, name: name, body: body, verified: verified, progress: a.progress,
		recorded: art.Size, left: art.Size + DecodeMargin}
	switch art.Compression {
	case "none":
		r.plain = verified
	case "zstd":
		dec, err := zstd.NewReader(verified, zstd.WithDecoderConcurrency(2),
			zstd.WithDecoderMaxWindow(MaxDecoderWindow), zstd.WithDecoderMaxMemory(MaxDecoderWindow))
		if err != nil {
			body.Close()
			return nil, err
		}
		r.dec = dec
	default:
		body.Close()
		return nil, fmt.Errorf("artifact %s: unknown compression %q", name, art.Compression)
	}
	return r, nil
}

func (a *artifactSource) Verify(ctx context.Context, name string) error {
	rc, err := a.Open(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// restoreStream yields an artifact's original bytes. When the
// decompressor reaches the end of its frames it drains the stored stream
// to its end, so the checksum verdict always arrives with the last Read:
// a zstd frame can end before the bytes after it were checked. It yields
// at most the recorded size plus DecodeMargin; past that it fails with an
// *ArtifactSizeError (or the checksum's verdict, if the stored bytes are
// damaged).
type restoreStream struct {
	ctx      context.Context
	name     string
	body     io.ReadCloser
	verified io.Reader
	plain    io.Reader
	dec      *zstd.Decoder
	progress *Tracker
	recorded int64
	// left is how many more bytes may be yielded.
	left int64
	err  error
}

func (r *restoreStream) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if err := r.ctx.Err(); err != nil {
		r.err = context.Cause(r.ctx)
		return 0, r.err
	}
	// Ask for at most one byte more than may be yielded: if it comes,
	// the artifact is over its limit.
	if int64(len(p)) > r.left+1 {
		p = p[:r.left+1]
	}
	var n int
	var err error
	if r.dec != nil {
		n, err = r.dec.Read(p)
		if err == io.EOF {
			if _, derr := io.Copy(io.Discard, r.verified); derr != nil {
				err = derr
			}
		} else if err != nil {
			// A decode error on damaged bytes: prefer the checksum's
			// verdict, which names the artifact.
			err = r.checksumOr(r.decodeErr(err))
		}
	} else {
		n, err = r.plain.Read(p)
	}
	if int64(n) > r.left {
		n = int(r.left)
		err = r.checksumOr(&ArtifactSizeError{Artifact: r.name, Recorded: r.recorded, Limit: r.recorded + DecodeMargin})
	}
	r.left -= int64(n)
	r.progress.Bytes(int64(n), 0)
	if err != nil {
		r.err = err
	}
	return n, err
}

// checksumOr reads the rest of the stored bytes and returns their
// checksum error if they are damaged, else err: damage is the better
// explanation of a stream that misbehaves. It stops the decoder first,
// whose goroutines read the stored bytes too.
func (r *restoreStream) checksumOr(err error) error {
	if r.dec != nil {
		r.dec.Close()
		r.dec = nil
	}
	if _, derr := io.Copy(io.Discard, r.verified); derr != nil {
		var ce *engines.ChecksumError
		if errors.As(derr, &ce) {
			return derr
		}
	}
	return err
}

// decodeErr names the artifact in a decoder's error, and the cap when the
// frame asked for a larger window than this worker decodes with.
func (r *restoreStream) decodeErr(err error) error {
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return fmt.Errorf("artifact %s: a zstd frame needs a window over the %s this worker decodes with (executor.MaxDecoderWindow): %w",
			r.name, bucket.FormatSize(MaxDecoderWindow), err)
	}
	return fmt.Errorf("decompress artifact %s: %w", r.name, err)
}

func (r *restoreStream) Close() error {
	if r.dec != nil {
		r.dec.Close()
		r.dec = nil
	}
	if r.err == nil {
		r.err = errors.New("closed")
	}
	return r.body.Close()
}
