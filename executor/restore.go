package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/crypt"
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
	// An encrypted backup is opened only with an identity of one of its
	// recipients: without one, fail here, before the engine touches the
	// target, naming the recipients that would open it.
	ids, err := x.identitiesFor(ctx, idx, src)
	if err != nil {
		return idx, src, nil, nil, nil, err
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
		Artifacts: &artifactSource{x: x, idx: idx, progress: progress, ids: ids},
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
	// Only a restore that could not reach the target at all is tried
	// again: nothing of the target was touched (and an engine leaves the
	// target as it was on any error, but a retry after a partial swap is
	// not a risk worth taking).
	var info *engines.RestoreInfo
	err = x.withDataRetry(ctx, job.Log, "restore", func(err error) bool { return dialFailure(err) && DataTransient(err) }, func() (err error) {
		info, err = eng.Restore(ctx, job)
		return err
	})
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
	if fv := x.cfg.FormatVerifiers[idx.Format]; fv != nil {
		var ids *crypt.Identities
		if ids, err = x.gatherIdentities(ctx, idx, src); err != nil {
			return err
		}
		vj := &VerifyJob{Bucket: x.cfg.Bucket, Index: idx, Job: job, Identities: ids, Trust: x.cfg.Trust.WithUnsigned(req.AllowUnsigned)}
		err = x.withDataRetry(ctx, job.Log, "verification", DataTransient, func() (err error) {
			report, err = fv(ctx, vj)
			return err
		})
	} else if v, ok := eng.(engines.Verifier); ok {
		// A verification restores into scratch space only: it may start
		// over after any passing fault of the service.
		err = x.withDataRetry(ctx, job.Log, "verification", DataTransient, func() (err error) {
			report, err = v.Verify(ctx, job)
			return err
		})
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
	// ids open the encrypted artifacts (nil when none is encrypted).
	ids *crypt.Identities
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
	if art.Encryption != nil && art.Encryption.Scheme != crypt.Scheme {
		return nil, fmt.Errorf("artifact %s is encrypted with %q: this capsule decrypts only %s", name, art.Encryption.Scheme, crypt.Scheme)
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
	// stored bytes (sha256 checked) → age → zstd → the engine.
	compressed := verified
	if art.Encryption != nil {
		plain, err := r.decrypt(a.ids, art.Encryption.Recipients)
		if err != nil {
			body.Close()
			return nil, err
		}
		compressed, r.sealed = plain, true
	}
	switch art.Compression {
	case "none":
		r.plain = compressed
	case "zstd":
		dec, err := zstd.NewReader(compressed, zstd.WithDecoderConcurrency(2),
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
	// sealed says the stored bytes are age-encrypted: plain (or the
	// decoder) reads the decryption of verified.
	sealed   bool
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
		if r.sealed && err == io.EOF {
			if _, derr := io.Copy(io.Discard, r.verified); derr != nil {
				err = derr
			}
		} else if r.sealed && err != nil {
			err = r.checksumOr(fmt.Errorf("decrypt artifact %s: %w", r.name, err))
		}
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

// decrypt reads the age header of the stored bytes and returns their
// decryption. A header that cannot be read or opened is explained by the
// checksum when the stored bytes are damaged.
func (r *restoreStream) decrypt(ids *crypt.Identities, recipients []string) (io.Reader, error) {
	if ids.Len() == 0 {
		return nil, &crypt.NoIdentityError{What: "artifact " + r.name, Recipients: recipients}
	}
	plain, err := ids.Decrypt(r.verified)
	if err != nil {
		return nil, r.checksumOr(fmt.Errorf("decrypt artifact %s (encrypted to %s): %w", r.name, strings.Join(recipients, ", "), err))
	}
	return plain, nil
}

// identitiesFor returns the identities that open idx's encrypted
// artifacts, gathered from the worker (Config.Identities), the target
// and, when another, the backup's own source; nil when no artifact is
// encrypted. It fails, naming the recipients, when none of them opens
// every encrypted artifact.
func (x *Executor) identitiesFor(ctx context.Context, idx *index.BackupIndex, target engines.Source) (*crypt.Identities, error) {
	var sealed []index.Artifact
	for _, art := range idx.Artifacts {
		if art.Encryption != nil {
			sealed = append(sealed, art)
		}
	}
	if len(sealed) == 0 {
		return nil, nil
	}
	ids, err := x.gatherIdentities(ctx, idx, target)
	if err != nil {
		return nil, err
	}
	for _, art := range sealed {
		if art.Encryption.Scheme != crypt.Scheme {
			return nil, Reject(fmt.Errorf("backupId: artifact %s of backup %s is encrypted with %q: this capsule decrypts only %s", art.Name, idx.BackupID, art.Encryption.Scheme, crypt.Scheme))
		}
		if err := ids.Check("backup "+idx.BackupID, art.Encryption.Recipients); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// gatherIdentities returns every identity at hand for a restore of idx
// into target: the worker's (Config.Identities), the target's and, when
// another, the backup's own source's. It checks none against anything.
func (x *Executor) gatherIdentities(ctx context.Context, idx *index.BackupIndex, target engines.Source) (*crypt.Identities, error) {
	var ids *crypt.Identities
	if x.cfg.Identities != nil {
		own, err := x.cfg.Identities(ctx)
		if err != nil {
			return nil, fmt.Errorf("backup %s is encrypted: the worker's identities: %w", idx.BackupID, err)
		}
		ids = ids.Merge(own)
	}
	srcs := []engines.Source{target}
	if idx.Source != target.Name {
		if own, err := x.cfg.Sources.Lookup(idx.Source); err == nil {
			srcs = append(srcs, own)
		}
	}
	for _, s := range srcs {
		if s.Identities == nil {
			continue
		}
		found, err := s.Identities(ctx)
		if err != nil {
			return nil, fmt.Errorf("backup %s is encrypted: source %s's identities: %w", idx.BackupID, s.Name, err)
		}
		for origin, data := range found {
			more, err := crypt.ParseIdentities(data, origin)
			if err != nil {
				return nil, fmt.Errorf("backup %s is encrypted: source %s: %w", idx.BackupID, s.Name, err)
			}
			ids = ids.Merge(more)
		}
	}
	return ids, nil
}

// FormatVerify verifies one backup (see Config.FormatVerifiers) and
// reports its checks like an engine's Verify: the report so far and an
// error when it could not go on.
type FormatVerify func(ctx context.Context, vj *VerifyJob) (*engines.VerifyReport, error)

// VerifyJob is what a FormatVerify gets.
type VerifyJob struct {
	// Bucket is the executor's bucket: where the backup and what else it
	// needs (a source's WAL) are.
	Bucket bucket.Bucket
	Index  *index.BackupIndex
	// Job is the verification as an engine would get it: its Artifacts
	// stream with checksums checked and decrypted.
	Job *engines.RestoreJob
	// Identities are every identity at hand (the worker's, the target's
	// and the source's), for what the backup's artifacts do not cover.
	Identities *crypt.Identities
	// Trust is the verification's: signatures of what the backup needs
	// besides its index are judged by it.
	Trust *index.Trust
}

// OpenArtifacts gives the artifacts of a committed backup to code that
// is not a claimed request (a point-in-time restore reads a base
// backup's archive through it): each streams from b with its checksum
// and size checked, as a restore's do, and is decrypted with ids when it
// is encrypted (failing with a *crypt.NoIdentityError when none fits).
func OpenArtifacts(b bucket.Bucket, idx *index.BackupIndex, ids *crypt.Identities) engines.ArtifactReader {
	return &artifactSource{x: &Executor{cfg: Config{Bucket: b}}, idx: idx, ids: ids}
}
