package executor

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/redact"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/requests"
	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
)

// Sources resolves a request's source name to its configuration. An
// executor's Sources are the sources its bucket serves: a request found in
// the bucket may use no other.
type Sources interface {
	// Lookup returns the named source, or an error wrapping
	// ErrUnknownSource. A source that exists but serves another bucket
	// (another tenant's) is an error wrapping both ErrUnknownSource and
	// ErrNotServed.
	Lookup(name string) (engines.Source, error)
}

// ErrUnknownSource is wrapped by Sources.Lookup for a name it does not
// know; such requests end rejected.
var ErrUnknownSource = errors.New("unknown source")

// ErrNotServed is wrapped by Sources.Lookup for a source that another
// bucket serves. Besides rejecting a request that names it, a Restore or
// Verify of a backup whose recorded source is not served here ends
// rejected, whatever its target.
var ErrNotServed = errors.New("not served by this bucket")

// ErrServedElsewhere is wrapped by Sources.Lookup for a source that this
// bucket does serve, but through another client of it (a bucket that two
// Secrets name with different keys gets one client, and one watcher, per
// set of keys). The run writes nothing: the watcher hands the request
// back for the watcher of that client to run.
var ErrServedElsewhere = errors.New("served by another client of this bucket")

// Config configures an Executor.
type Config struct {
	Bucket bucket.Bucket
	// Prefix is the bucket prefix Bucket works under, recorded in every
	// index (BackupIndex.Prefix). Default: Bucket's own, when it is a
	// bucket.Prefixed view itself (not wrapped).
	Prefix  string
	Engines *engines.Registry
	Sources Sources
	// Worker names this worker in indexes and results.
	Worker string
	// Version is capsule's version, recorded in every index.
	Version string
	// Timeout bounds one run (default 24h).
	Timeout time.Duration
	// Compression: "zstd-fastest" (the default), "zstd" (the library's
	// default level), "zstd-better" or "none". See DefaultCompression.
	Compression string
	// RetainFor, when set, asks the bucket to keep every object written
	// under backups/ immutable for this long (S3 Object Lock).
	RetainFor time.Duration
	// Legacy, when set, is where the old cnvrg-capsule service's backups
	// are: a Restore or Verify may name one as legacy:<id>.
	Legacy *legacy.Store
	// RestoreAs, when set, may give a Restore's or Verify's target
	// another way into the same service (the scanner's PostgreSQL plans
	// restore as the server's superuser when the application role cannot;
	// scanner.Scanner.RestoreAs), and returns what to say about the choice
	// in the result's details. Backups never pass through it. An error
	// fails the run.
	RestoreAs func(ctx context.Context, kind requests.Kind, target engines.Source) (engines.Source, map[string]any, error)
	// Recipients are the public keys (age1… or SSH; package crypt) every
	// backup of a source that names none of its own is encrypted to,
	// after compression. Empty: such backups are stored in the clear.
	Recipients []string
	// Identities, when set, returns the worker's own age identities
	// (from a file or an environment variable), resolved for each
	// Restore or Verify of an encrypted backup so that a rotated key is
	// picked up. The target's and the backup source's
	// engines.Source.Identities are added to them.
	Identities func(ctx context.Context) (*crypt.Identities, error)
	// Signer, when set, signs every index and verification record this
	// executor commits (index.WriteSigned).
	Signer *index.Signer
	// PointInTime runs Restores that name a point in time of a source
	// (pitr.Restorer). Nil: such requests end rejected.
	PointInTime PointInTimeRestorer
	// Trust judges the signature of a backup that a Restore or Verify
	// names: one it finds untrusted is rejected, naming the backup and
	// the reason (a request's allowUnsigned accepts one that has no
	// signature at all). Nil checks none.
	Trust *index.Trust
	// FormatVerifiers verify backups of the formats they are keyed by
	// in place of their engine's Verify: a PostgreSQL base backup
	// (postgres.FormatBase) is recovered with the source's WAL from the
	// bucket, which no engine reads (pitr.VerifyBase).
	FormatVerifiers map[string]FormatVerify
	// ProgressEvery is how often a run logs its progress (percentage,
	// rate and time left where a total is known); default 30s, negative
	// never.
	ProgressEvery time.Duration
	// DataRetries is how many times a run is tried again, within its
	// attempt, after the data service failed transiently (DataTransient):
	// a refused or dropped connection, a server restarting. A backup and
	// a verification are retried on any such fault; a restore only when
	// it could not connect at all, so never after it touched the target.
	// DefaultDataRetries when zero; negative: none. DataRetryInterval is
	// the first wait (2s when zero), doubling up to 30s.
	DataRetries       int
	DataRetryInterval time.Duration
	Log               logrus.FieldLogger
}

// Executor runs claimed requests. It is safe for concurrent use.
type Executor struct {
	cfg   Config
	level zstd.EncoderLevel
}

// New validates cfg and returns an Executor.
func New(cfg Config) (*Executor, error) {
	if cfg.Bucket == nil || cfg.Engines == nil || cfg.Sources == nil {
		return nil, errors.New("executor: Bucket, Engines and Sources are required")
	}
	if cfg.Prefix == "" {
		_, cfg.Prefix = bucket.Unprefixed(cfg.Bucket)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 24 * time.Hour
	}
	if cfg.Version == "" {
		cfg.Version = "devel"
	}
	switch {
	case cfg.DataRetries == 0:
		cfg.DataRetries = DefaultDataRetries
	case cfg.DataRetries < 0:
		cfg.DataRetries = 0
	}
	if cfg.DataRetryInterval <= 0 {
		cfg.DataRetryInterval = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = engines.DiscardLog()
	}
	if cfg.ProgressEvery == 0 {
		cfg.ProgressEvery = 30 * time.Second
	}
	if _, err := crypt.ParseRecipients(cfg.Recipients); err != nil {
		return nil, fmt.Errorf("executor: recipients: %w", err)
	}
	x := &Executor{cfg: cfg}
	switch cfg.Compression {
	case "zstd":
		x.level = zstd.SpeedDefault
	case "", "zstd-fastest":
		x.level = zstd.SpeedFastest
	case "zstd-better":
		x.level = zstd.SpeedBetterCompression
	case "none":
		x.level = 0
	default:
		return nil, fmt.Errorf("executor: compression %q: want zstd, zstd-fastest, zstd-better or none", cfg.Compression)
	}
	return x, nil
}

// Outcome is what a run produced: the result to write and, for a backup
// or a verification, the objects to commit before it. The watcher commits
// them in the order the claim protocol requires (index, then result).
type Outcome struct {
	Result       requests.Result
	Index        *index.BackupIndex
	Verification *index.Verification
	// VerifiedIndex is the backup a Verification belongs to.
	VerifiedIndex *index.BackupIndex
	// Engine names the engine the run used, once it got that far (for
	// metrics; empty when the request never reached an engine).
	Engine string
	// HandBack is set when the request belongs to another client of this
	// bucket (ErrServedElsewhere): nothing is to be written, and the
	// lease goes back for that client's watcher.
	HandBack bool
}

// rejectError marks a request that can never succeed as written.
type rejectError struct{ err error }

func (e *rejectError) Error() string { return e.err.Error() }
func (e *rejectError) Unwrap() error { return e.err }

// Reject marks err as the request's fault: the result is "rejected".
func Reject(err error) error { return &rejectError{err} }

// IsRejected reports whether err was marked with Reject.
func IsRejected(err error) bool {
	var r *rejectError
	return errors.As(err, &r)
}

// ErrCanceled is the cause given to a run's context when a client asked to
// cancel it; the result is "canceled".
var ErrCanceled = errors.New("canceled by request")

// Run executes one claimed request as the given attempt. It never panics:
// a panicking engine becomes a failed result. When ctx is canceled with
// ErrCanceled as its cause, the result is canceled; for any other cause
// the caller decides whether a result is written at all.
func (x *Executor) Run(ctx context.Context, req *requests.Request, attempt int, progress *Tracker) (out *Outcome) {
	started := time.Now().UTC()
	log := x.cfg.Log.WithFields(logrus.Fields{"request_id": req.ID, "kind": req.Kind, "attempt": attempt})
	ctx, cancel := context.WithTimeoutCause(ctx, x.cfg.Timeout, fmt.Errorf("run timed out after %s", x.cfg.Timeout))
	defer cancel()
	out = &Outcome{Result: requests.Result{
		APIVersion: requests.APIVersion, Kind: "Result", ID: req.ID,
		Attempts: attempt, Worker: x.cfg.Worker, StartedAt: started,
	}}
	req.Describe(&out.Result)
	defer func() {
		if p := recover(); p != nil {
			log.WithField("panic", p).Error("engine panicked")
			out.Index, out.Verification = nil, nil
			x.finish(ctx, out, fmt.Errorf("engine panicked: %v\n%s", p, clipStack(debug.Stack())))
		}
	}()
	if progress != nil && x.cfg.ProgressEvery > 0 {
		stop := make(chan struct{})
		defer close(stop)
		go progress.logEvery(x.cfg.ProgressEvery, log, stop)
	}
	var err error
	switch req.Kind {
	case requests.KindBackup:
		err = x.backup(ctx, req, attempt, progress, out, log)
	case requests.KindRestore:
		if req.PointInTime != nil {
			err = x.restorePointInTime(ctx, req, attempt, progress, out, log)
			break
		}
		err = x.restore(ctx, req, attempt, progress, out, log)
	case requests.KindVerify:
		err = x.verify(ctx, req, attempt, progress, out, log)
	default:
		err = Reject(fmt.Errorf("kind: unknown kind %q", req.Kind))
	}
	if errors.Is(err, ErrServedElsewhere) {
		out.HandBack, out.Index, out.Verification = true, nil, nil
		out.Result.Error = err.Error()
		log.WithError(err).Info("handing the request back: another client of this bucket serves its source")
		return out
	}
	x.finish(ctx, out, err)
	if err != nil {
		log.WithError(err).WithField("status", out.Result.Status).Warn("request did not succeed")
	} else {
		log.WithFields(logrus.Fields{"bytes": out.Result.Bytes, "stored_bytes": out.Result.StoredBytes, "seconds": time.Since(started).Seconds()}).Info("request succeeded")
	}
	return out
}

func (x *Executor) finish(ctx context.Context, out *Outcome, err error) {
	out.Result.FinishedAt = time.Now().UTC()
	switch {
	case err == nil:
		out.Result.Status = requests.StatusSucceeded
	case IsRejected(err):
		out.Result.Status = requests.StatusRejected
		out.Result.Error = err.Error()
	case errors.Is(context.Cause(ctx), ErrCanceled):
		out.Result.Status = requests.StatusCanceled
		out.Result.Error = "canceled by request"
	default:
		out.Result.Status = requests.StatusFailed
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		out.Result.Error = err.Error()
	}
	// An error may quote what a client wrote or what a driver saw (a
	// connection string): the result and the verification record are
	// written to the bucket, so they carry it redacted.
	out.Result.Error = redact.String(out.Result.Error)
	if err != nil {
		out.Index = nil
		if out.Verification == nil {
			return
		}
		// A verification that ran and failed is a fact worth recording.
		if out.Verification.Error == "" && !out.Verification.OK {
			out.Verification.Error = redact.String(err.Error())
		}
	}
}

// lookupSource resolves a source and its engine.
func (x *Executor) lookupSource(name, field string) (engines.Source, engines.Engine, error) {
	src, err := x.cfg.Sources.Lookup(name)
	if err != nil {
		if errors.Is(err, ErrServedElsewhere) {
			return src, nil, fmt.Errorf("%s: %w", field, err)
		}
		if errors.Is(err, ErrUnknownSource) {
			return src, nil, Reject(fmt.Errorf("%s: %w", field, err))
		}
		return src, nil, err
	}
	eng, err := x.cfg.Engines.Get(src.Engine)
	if err != nil {
		return src, nil, Reject(fmt.Errorf("%s %s: %w", field, name, err))
	}
	return src, eng, nil
}

func (x *Executor) retainUntil() time.Time {
	if x.cfg.RetainFor <= 0 {
		return time.Time{}
	}
	return time.Now().Add(x.cfg.RetainFor).UTC()
}

func (x *Executor) compression() string {
	if x.level == 0 {
		return "none"
	}
	return "zstd"
}

// DefaultCompression is the compression of a worker that sets none:
// zstd's fastest level. On the benchmarks' data it stores what the zstd
// command stores at its default level 3, for less CPU than the library's
// default level: a PostgreSQL archive (pgbench's 0.37 GB, custom format,
// uncompressed) 16.38 % of its size against 16.36 % (zstd -3) and 16.25 %
// ("zstd"), Redis key records (1 M keys of 32 random characters) 54.9 %
// against 55.3 % and 55.3 %, at 55–75 % of "zstd"'s CPU time
// (2026-12-07, measured with getrusage on a synthetic keys.bin of that
// shape and the archive; bench/README.md's pgbench tables show both
// levels end to end). A worker's CPU is what a backup's wall
// time is made of on a busy node: "zstd" and "zstd-better" stay for
// smaller artifacts at more CPU.
const DefaultCompression = "zstd-fastest"

// encoderConcurrency is how many goroutines an artifact's encoder may
// use. The library's streaming encoder then compresses one block while the
// next is filled: at the default level that took a fifth off the wall
// time for the same CPU when a core was free; at the fastest level it
// cost 10 % more CPU for no less wall time (the block is compressed about
// as fast as it is filled), so that level encodes in the writer's own
// goroutine.
func encoderConcurrency(level zstd.EncoderLevel) int {
	if level == zstd.SpeedFastest {
		return 1
	}
	return max(1, min(runtime.GOMAXPROCS(0), 4))
}

// encoderWindow is the zstd window of the default and fastest levels:
// 512 KiB, as the zstd command uses at level 1. The library keeps a
// history of twice the window (at least 1 MiB) per artifact being written:
// 1 MiB here against 4 MiB at 2 MiB and 16 MiB at the library's 8 MiB,
// for no larger output on pgbench's 0.37 GB archive (60.60 MB at 512 KiB,
// 60.64 at 1 MiB, 60.76 at 2 MiB; 2026-12-07), and the worker's peak RSS
// has 100 MiB (issue 20). zstd-better keeps the library's window.
const encoderWindow = 512 << 10

// encoderOptions are the zstd options of an artifact's encoder.
func (x *Executor) encoderOptions() []zstd.EOption {
	opts := []zstd.EOption{zstd.WithEncoderLevel(x.level), zstd.WithEncoderConcurrency(encoderConcurrency(x.level))}
	if x.level != zstd.SpeedBetterCompression {
		opts = append(opts, zstd.WithWindowSize(encoderWindow))
	}
	return opts
}

func clipStack(b []byte) string {
	if len(b) > 2000 {
		b = b[:2000]
	}
	return string(b)
}

// ErrConflict is returned by Commit when the backup id is already taken by
// another request's backup: the run can never be committed.
var ErrConflict = errors.New("conflict")

// Commit writes what a finished run produced, before its result: a
// backup's index (create-only; an index that names this request already
// means an earlier attempt committed it), or a verification record beside
// the verified backup.
func (x *Executor) Commit(ctx context.Context, out *Outcome) error {
	if out.Index != nil {
		err := index.WriteSigned(ctx, x.cfg.Bucket, out.Index, x.cfg.Signer)
		if errors.Is(err, bucket.ErrPreconditionFailed) {
			prev, rerr := index.Read(ctx, x.cfg.Bucket, out.Index.Key())
			if rerr != nil {
				return fmt.Errorf("index exists but cannot be read: %w", rerr)
			}
			if prev.RequestID != out.Index.RequestID {
				return fmt.Errorf("%w: backup %s was committed by request %s", ErrConflict, out.Index.BackupID, prev.RequestID)
			}
			x.cfg.Log.WithFields(logrus.Fields{"request_id": out.Result.ID, "committed_attempt": prev.Attempt}).Info("an earlier attempt committed this backup")
			out.Result.Attempts = max(out.Result.Attempts, prev.Attempt)
			if x.cfg.Signer != nil {
				// It may have stopped between the index and its signature.
				if err := index.SignStored(ctx, x.cfg.Bucket, out.Index.Key(), x.cfg.Signer); err != nil {
					return err
				}
			}
			// It may have stopped before the catalog's copies (written
			// after the signature: a listing that reads the event finds
			// the signature).
			if err := index.Record(ctx, x.cfg.Bucket, prev, x.cfg.Signer); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	if out.Verification != nil && out.VerifiedIndex != nil {
		if err := index.WriteVerificationSigned(ctx, x.cfg.Bucket, out.VerifiedIndex, out.Verification, x.cfg.Signer); err != nil {
			return err
		}
	}
	return nil
}
