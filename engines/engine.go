package engines

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Engine backs up and restores one kind of data service. Implementations
// are stateless and safe for concurrent use: every call gets its job.
type Engine interface {
	// Name is the engine's registry name ("files", "postgres", ...), the
	// value of a source's "engine" setting.
	Name() string
	// Validate checks a source's configuration without contacting the
	// service, with an error that names the bad setting.
	Validate(src Source) error
	// Backup reads the source and writes its data as one or more
	// artifacts, one at a time, through job.Artifacts. It must not keep a
	// copy on local disk: artifacts stream to the bucket.
	Backup(ctx context.Context, job *BackupJob) (*BackupInfo, error)
	// Restore writes a backup into job.Target. It must not damage the
	// target before the whole backup is known good: either it stages
	// everything (a side database, a sibling directory) and swaps it in
	// only after every artifact was read to its end without a
	// *ChecksumError, or it calls job.Artifacts.Verify for every artifact
	// before it changes anything. On error or cancellation it removes
	// what it staged and leaves the target as it was.
	Restore(ctx context.Context, job *RestoreJob) (*RestoreInfo, error)
}

// Verifier is implemented by engines that can prove a backup restorable:
// restore it into a scratch target next to job.Target (never the target
// itself), check the result against what the backup recorded, and remove
// the scratch target.
type Verifier interface {
	Verify(ctx context.Context, job *RestoreJob) (*VerifyReport, error)
}

// Documented is implemented by every engine capsule ships: what a source
// of it may set, and which restore options it takes. docs/engines/<name>.md
// documents both (a test checks that every setting and option appears
// there), and the CLI and the worker refuse options an engine does not
// take (CheckRestoreOptions).
type Documented interface {
	// Settings returns a zero value of the engine's settings struct: its
	// json tags are the keys a source of the engine may set.
	Settings() any
	// RestoreOptions lists the restore options the engine takes; nil
	// when it takes none.
	RestoreOptions() []RestoreOption
}

// RestoreOption is one engine-specific restore option: a key of
// RestoreOptions.Extra (capsule restore --option key=value).
type RestoreOption struct {
	Name string
	// Values are the values it takes; empty when any value goes (the
	// engine checks it).
	Values []string
	// Doc says what it does, in a sentence.
	Doc string
}

// CheckRestoreOptions refuses an option that eng does not take, or a
// value outside the option's Values, naming the options it takes. An
// engine that is not Documented is not checked.
func CheckRestoreOptions(eng Engine, extra map[string]string) error {
	d, ok := eng.(Documented)
	if !ok || len(extra) == 0 {
		return nil
	}
	known := d.RestoreOptions()
	names := make([]string, 0, len(known))
	for _, o := range known {
		names = append(names, o.Name)
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		i := slices.IndexFunc(known, func(o RestoreOption) bool { return o.Name == k })
		if i < 0 {
			takes := "it takes none"
			if len(names) > 0 {
				takes = "it takes " + strings.Join(names, ", ")
			}
			return fmt.Errorf("engine %s has no restore option %q (%s)", eng.Name(), k, takes)
		}
		if vs := known[i].Values; len(vs) > 0 && !slices.Contains(vs, extra[k]) {
			return fmt.Errorf("engine %s: restore option %s=%q: want %s", eng.Name(), k, extra[k], strings.Join(vs, " or "))
		}
	}
	return nil
}

// PreviousKeeper is implemented by engines whose restores keep the
// replaced data beside the target (RestoreInfo.Previous) under names
// that carry the restore's request id and attempt: it lists the copies
// kept for a source and drops one. capsule prune-previous uses it.
type PreviousKeeper interface {
	// ListPrevious lists the copies restores kept beside src's target.
	ListPrevious(ctx context.Context, src Source) ([]KeptPrevious, error)
	// DropPrevious removes one of them, by the Name ListPrevious gave;
	// a name that is not a kept copy of src is refused.
	DropPrevious(ctx context.Context, src Source, name string) error
}

// KeptPrevious is one copy of a target's former data that a restore
// kept.
type KeptPrevious struct {
	// Name is as RestoreInfo.Previous named it (a path, a database).
	Name string `json:"name"`
	// Request is the restore that kept it (shortened with a hash where
	// the engine's names are short: PostgreSQL's 63 bytes), and Attempt
	// its attempt.
	Request string `json:"request"`
	Attempt int    `json:"attempt"`
	// KeptAt is when, read from the request id (capsule's ids are
	// time-ordered ULIDs); zero when the id tells no time.
	KeptAt time.Time `json:"keptAt,omitzero"`
}

// Source is a configured data service, resolved by the worker from its own
// configuration or from the scanner. It never travels in a request.
type Source struct {
	// Name is the source's name as requests refer to it ("cnvrg/pg").
	Name string
	// Engine names the engine that handles it.
	Engine string
	// Config holds the engine-specific settings as decoded from YAML or
	// JSON: nothing secret (a password arrives through Password).
	Config map[string]any
	// Password returns the source's secret (a database password), or ""
	// when there is none. It is resolved when called, so a rotated file or
	// Secret is picked up. Nil means no secret.
	Password func(ctx context.Context) (string, error) `json:"-"`
	// Recipients are the public keys (age1… or SSH) the executor encrypts
	// this source's backups to; empty: the worker's own, if any. Engines
	// never see encrypted bytes: the executor encrypts after them and
	// decrypts before them.
	Recipients []string `json:"recipients,omitempty"`
	// Identities returns age identities that open this source's
	// encrypted backups: each value the content of an age identity file
	// or of an SSH private key, keyed by where it came from ("file …",
	// "Secret ns/name key …"). It is resolved when called, so a rotated
	// Secret is picked up. Nil means none.
	Identities func(ctx context.Context) (map[string][]byte, error) `json:"-"`
}

// Secret returns the source's password, "" when it has none.
func (s Source) Secret(ctx context.Context) (string, error) {
	if s.Password == nil {
		return "", nil
	}
	pw, err := s.Password(ctx)
	if err != nil {
		return "", fmt.Errorf("source %s: password: %w", s.Name, err)
	}
	return pw, nil
}

// Decode copies the source's Config into the struct pointed to by into
// (json tags), refusing unknown settings with an error naming them.
func (s Source) Decode(into any) error {
	raw, err := json.Marshal(s.Config)
	if err != nil {
		return fmt.Errorf("source %s: settings: %w", s.Name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		msg := strings.TrimPrefix(err.Error(), "json: ")
		return fmt.Errorf("source %s (engine %s): %s", s.Name, s.Engine, msg)
	}
	return nil
}

// BackupJob is one backup run.
type BackupJob struct {
	// ID is the backup's id: usable in names of temporary objects.
	ID        string
	Source    Source
	Artifacts ArtifactWriter
	Progress  Progress
	// SizeHint, when set, takes the engine's estimate of the raw bytes
	// the backup will write (a database's size on disk), which the
	// progress shows as a percentage marked estimated. Engines call it
	// through Estimate, once, when they know; nil ignores it.
	SizeHint func(bytes int64)
	Log      logrus.FieldLogger
}

// Estimate passes the engine's estimate of the backup's raw size to
// SizeHint, unless it is nil or bytes is not positive.
func (j *BackupJob) Estimate(bytes int64) {
	if j.SizeHint != nil && bytes > 0 {
		j.SizeHint(bytes)
	}
}

// ArtifactWriter receives a backup's artifacts, one at a time.
type ArtifactWriter interface {
	// Create starts the next artifact. name is [a-z0-9][a-z0-9._-]*, unique
	// within the backup. The previous artifact must be closed first. Close
	// returns the error of the upload behind it; an engine that fails
	// midway returns its error from Backup without closing.
	Create(name string) (io.WriteCloser, error)
}

// BackupInfo is what an engine reports about a finished backup; it goes
// into backupIndex.json and comes back in RestoreJob.Backup.
type BackupInfo struct {
	// Format names the artifacts' format ("tar", "pg_dump-custom", ...),
	// versioned by the engine when it changes.
	Format        string `json:"format"`
	ServerVersion string `json:"serverVersion,omitempty"`
	ToolVersion   string `json:"toolVersion,omitempty"`
	// SourceInfo is what a restore needs to know about the source (host,
	// database, mode): never a secret.
	SourceInfo map[string]string `json:"sourceInfo,omitempty"`
	// Details is engine-specific (row counts, key counts, ...).
	Details map[string]any `json:"details,omitempty"`
}

// RestoreJob is one restore (or verification) run.
//
// A restore is fenced by attempt, like a backup: everything it stages
// (side databases and schemas, side collections, renamed indices,
// staging directories) is named after both ID and Attempt, so a paused
// worker whose request was taken over never shares a name with its
// successor; and the engine calls Fence immediately before its swap, so
// that a worker that lost its lease never swaps. Earlier attempts'
// staging of the same request is removed by the successor, never reused;
// the data a swap kept as previous is the user's and is never removed
// but by the attempt that swapped it out (DropPrevious).
type RestoreJob struct {
	// ID is the restore request's id: usable in names of side databases.
	ID string
	// Attempt is the claim's attempt number, 1 for the first (0 counts
	// as 1). Every name the restore stages under includes it.
	Attempt int
	// Fence confirms that this attempt still holds the request's lease,
	// now: it renews the lease with If-Match on the holder's last write.
	// An engine calls it (through CheckFence) immediately before it
	// swaps anything into the target, and on an error does not swap,
	// removes its own staging and returns the error. Nil (engine tests,
	// one-shot runs) always passes.
	Fence func(ctx context.Context) error
	// StaleStaging reports whether the staging of attempt attempt of
	// request id (another request's, or this one's) is abandoned: that
	// request has finished, or a later attempt of it holds the lease.
	// Engines ask it about staging they find on the target that is not
	// their own, and remove what it reports stale. Nil reports nothing
	// stale.
	StaleStaging func(ctx context.Context, id string, attempt int) (bool, error)
	// Target is where the backup goes; for Verify, the server whose
	// scratch space to use.
	Target Source
	// Backup is what the engine reported when it made the backup.
	Backup    BackupInfo
	Artifacts ArtifactReader
	Options   RestoreOptions
	Progress  Progress
	Log       logrus.FieldLogger
}

// AttemptNumber is the job's attempt, 1 when it was not set.
func (j *RestoreJob) AttemptNumber() int {
	if j.Attempt < 1 {
		return 1
	}
	return j.Attempt
}

// ErrFenced is wrapped by the error of a restore that did not swap
// because its Fence failed: another attempt holds the request now (or the
// lease could not be confirmed).
var ErrFenced = errors.New("lease not confirmed before the swap")

// CheckFence calls job.Fence, unless it is nil, and wraps its error in
// ErrFenced. Engines call it immediately before their swap.
func (j *RestoreJob) CheckFence(ctx context.Context) error {
	if j.Fence == nil {
		return nil
	}
	if err := j.Fence(ctx); err != nil {
		return fmt.Errorf("restore %s attempt %d: %w: %w", j.ID, j.AttemptNumber(), ErrFenced, err)
	}
	return nil
}

// IsStale asks job.StaleStaging about staging of request id's attempt,
// false when the job has no way to tell.
func (j *RestoreJob) IsStale(ctx context.Context, id string, attempt int) (bool, error) {
	if j.StaleStaging == nil {
		return false, nil
	}
	return j.StaleStaging(ctx, id, attempt)
}

// RestoreOptions are a restore request's choices.
type RestoreOptions struct {
	// DropPrevious drops the replaced data after a swap instead of
	// keeping it beside the target.
	DropPrevious bool
	// Extra holds engine-specific options from the request.
	Extra map[string]string
}

// ArtifactReader gives a restore the backup's artifacts.
type ArtifactReader interface {
	// Names lists the artifacts in the order they were written.
	Names() []string
	// Open streams an artifact's original (decompressed) bytes. The stored
	// bytes are checked against the recorded sha256 and size while they
	// stream: the Read that reaches the end returns a *ChecksumError
	// instead of io.EOF when they do not match.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// Verify reads the whole artifact, checks it, and hands no byte to
	// the caller; for engines that cannot stage.
	Verify(ctx context.Context, name string) error
}

// RestoreInfo is what an engine reports about a finished restore.
type RestoreInfo struct {
	// Downtime is how long the target was unavailable (the swap).
	Downtime time.Duration `json:"downtime"`
	// Previous names where the replaced data was kept, if it was.
	Previous string         `json:"previous,omitempty"`
	Details  map[string]any `json:"details,omitempty"`
}

// VerifyReport is the outcome of a verification.
type VerifyReport struct {
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
}

// Check is one verified property.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// ChecksumError reports an artifact whose stored bytes do not match what
// the index recorded.
type ChecksumError struct {
	Artifact   string
	Want, Got  string // hex sha256
	WantSize   int64
	GotSize    int64
	SizeDiffer bool
}

func (e *ChecksumError) Error() string {
	if e.SizeDiffer {
		return fmt.Sprintf("artifact %s is corrupt: %d bytes stored, index says %d", e.Artifact, e.GotSize, e.WantSize)
	}
	return fmt.Sprintf("artifact %s is corrupt: sha256 %s, index says %s", e.Artifact, e.Got, e.Want)
}

// Progress receives an engine's progress: a phase and, where it knows
// them, counts of items done and in total (0 when unknown). Bytes are
// counted by the pipeline, not the engine. A nil Progress ignores reports.
type Progress func(phase string, done, total int64)

// Report calls p unless it is nil.
func (p Progress) Report(phase string, done, total int64) {
	if p != nil {
		p(phase, done, total)
	}
}

// Registry holds the engines a worker can run. Build it explicitly in
// main; engines never register themselves.
type Registry struct {
	engines map[string]Engine
}

// NewRegistry returns a registry of the given engines.
func NewRegistry(es ...Engine) *Registry {
	r := &Registry{engines: map[string]Engine{}}
	for _, e := range es {
		r.engines[e.Name()] = e
	}
	return r
}

// Get returns the engine called name.
func (r *Registry) Get(name string) (Engine, error) {
	if e, ok := r.engines[name]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("unknown engine %q (known: %s)", name, strings.Join(r.Names(), ", "))
}

// Names lists the registered engines in order.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.engines))
	for n := range r.engines {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// DiscardLog is a logger that drops everything, for jobs without one.
func DiscardLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
