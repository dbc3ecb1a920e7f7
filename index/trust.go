package index

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/requests"
)

// MaxClockSkew is how far a worker's clock may run ahead of the bucket's.
// An index whose startedAt or finishedAt is later than the bucket's clock
// when the index was written (its LastModified) plus MaxClockSkew claims
// to have finished in the future: it is damaged. The same holds for a
// verification record's verifiedAt.
const MaxClockSkew = 5 * time.Minute

// MaxIndexSize is the largest backupIndex.json that is read: a larger one
// is damaged (and never read whole). An index lists its artifacts, a few
// hundred bytes each, plus an engine's details (per-table row counts);
// capsule's own stay far below this.
const MaxIndexSize = 16 << 20

// MaxVerificationSize is the largest verify-<time>.json that is read; a
// larger one is ignored like any record that is not believed.
const MaxVerificationSize = 4 << 20

// ErrDamaged is wrapped by every error about a damaged index.
var ErrDamaged = errors.New("damaged backup index")

// Damaged is a backupIndex.json that is not believed: it cannot be
// parsed, its content does not match its key, or it finished in the
// future by the bucket's clock. Cluster, Source and BackupID come from the
// key, never from the content.
type Damaged struct {
	Key      string `json:"key"`
	Cluster  string `json:"cluster,omitempty"`
	Source   string `json:"source,omitempty"`
	BackupID string `json:"backupId,omitempty"`
	// Reason says what is wrong, for a person.
	Reason string `json:"reason"`
}

// DamagedError is the error of reading a damaged index.
type DamagedError struct{ Damaged Damaged }

func (e *DamagedError) Error() string {
	return fmt.Sprintf("index %s is damaged and not used: %s", e.Damaged.Key, e.Damaged.Reason)
}

// Unwrap makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Unwrap() error { return ErrDamaged }

func damaged(key, format string, args ...any) *DamagedError {
	d := Damaged{Key: key, Reason: fmt.Sprintf(format, args...)}
	if k, err := requests.ParseBackupKey(key); err == nil {
		d.Cluster, d.Source, d.BackupID = k.Cluster, k.Source, k.BackupID
	}
	return &DamagedError{Damaged: d}
}

// artifactName is the form of an artifact's name (as the executor
// enforces when an engine creates one).
var artifactName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,199}$`)

// ValidArtifactName says whether name may name an artifact: 1-200 of
// [a-z0-9._-], starting with a letter or digit (no '/', no "..").
func ValidArtifactName(name string) bool { return artifactName.MatchString(name) }

// check believes the index x read from key, written when the bucket's
// clock said modified, only where it is: its cluster, source and backup
// id make exactly key, every artifact lies in the folder of the attempt
// the index names under a valid name, and it did not finish after the
// bucket's clock (plus MaxClockSkew). modified zero skips the clock test
// (a store that does not say).
func check(key string, x *BackupIndex, modified time.Time) *DamagedError {
	k, err := requests.ParseBackupKey(key)
	if err != nil || k.Rest != requests.IndexName {
		return damaged(key, "not the key of a backup index (want backups/<cluster>/<source>/<backupId>/%s)", requests.IndexName)
	}
	switch {
	case x.Cluster != k.Cluster:
		return damaged(key, "its cluster %q is not the key's %q", clip(x.Cluster), k.Cluster)
	case x.Source != k.Source:
		return damaged(key, "its source %q is not the key's %q", clip(x.Source), k.Source)
	case x.BackupID != k.BackupID:
		return damaged(key, "its backupId %q is not the key's %q", clip(x.BackupID), k.BackupID)
	}
	if err := requests.ValidateName(x.Cluster); err != nil {
		return damaged(key, "cluster: %v", err)
	}
	if err := requests.ValidateName(x.Source); err != nil {
		return damaged(key, "source: %v", err)
	}
	if err := requests.ValidateID(x.BackupID); err != nil {
		return damaged(key, "backupId: %v", err)
	}
	if want := x.Key(); want != key {
		return damaged(key, "the key is not the one its cluster, source and backupId make (%s)", want)
	}
	if x.Attempt < 1 {
		return damaged(key, "attempt %d: want 1 or more", x.Attempt)
	}
	for i, a := range x.Artifacts {
		if !ValidArtifactName(a.Name) {
			return damaged(key, "artifacts[%d]: name %q is not a valid artifact name", i, clip(a.Name))
		}
		if want := requests.ArtifactKey(x.Cluster, x.Source, x.BackupID, x.Attempt, a.Name); a.Key != want {
			return damaged(key, "artifacts[%d]: key %q is not in the folder of attempt %d of this backup (want %s)", i, clip(a.Key), x.Attempt, want)
		}
	}
	if modified.IsZero() {
		return nil
	}
	limit := modified.Add(MaxClockSkew)
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"finishedAt", x.FinishedAt}, {"startedAt", x.StartedAt}} {
		if t.at.After(limit) {
			return damaged(key, "finished in the future: %s %s is later than the bucket's clock when the index was written (%s) plus %s",
				t.name, t.at.UTC().Format(time.RFC3339), modified.UTC().Format(time.RFC3339), MaxClockSkew)
		}
	}
	return nil
}

// checkVerification believes the verification record v read from key
// (beside the index of backupID), written when the bucket's clock said
// modified, only where it is: its backupId is the folder's, its key names
// its verifiedAt, and verifiedAt is not later than modified plus
// MaxClockSkew. It returns why not, or "".
func checkVerification(key, backupID string, v *Verification, modified time.Time) string {
	k, err := requests.ParseBackupKey(key)
	switch {
	case err != nil:
		return err.Error()
	case v.APIVersion != requests.APIVersion || v.Kind != KindVerification:
		return fmt.Sprintf("unsupported apiVersion %q kind %q", clip(v.APIVersion), clip(v.Kind))
	case v.BackupID != backupID || k.BackupID != backupID:
		return fmt.Sprintf("its backupId %q is not the folder's %q", clip(v.BackupID), k.BackupID)
	case requests.VerifyKey(k.Cluster, k.Source, k.BackupID, v.VerifiedAt) != key:
		return fmt.Sprintf("its verifiedAt %s is not the time its key names", v.VerifiedAt.UTC().Format(time.RFC3339Nano))
	case !modified.IsZero() && v.VerifiedAt.After(modified.Add(MaxClockSkew)):
		return fmt.Sprintf("verified in the future: verifiedAt %s is later than the bucket's clock when it was written (%s) plus %s",
			v.VerifiedAt.UTC().Format(time.RFC3339), modified.UTC().Format(time.RFC3339), MaxClockSkew)
	}
	return ""
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Reporter reports each damaged index once: the first time a listing
// meets its key (or the key's reason changes) it logs a warning and calls
// the hook given to NewReporter. A nil *Reporter reports nothing. It is
// safe for concurrent use; share one per process.
type Reporter struct {
	log   logrus.FieldLogger
	onNew func(Damaged)

	mu   sync.Mutex
	seen map[string]string // key → reason
}

// NewReporter returns a Reporter that logs to log (nothing when nil) and
// calls onNew (when set) for each damaged index it has not reported yet.
func NewReporter(log logrus.FieldLogger, onNew func(Damaged)) *Reporter {
	return &Reporter{log: log, onNew: onNew, seen: map[string]string{}}
}

// Report reports the damaged indexes it has not reported before, and
// returns them.
func (r *Reporter) Report(ds []Damaged) []Damaged {
	if r == nil {
		return nil
	}
	var fresh []Damaged
	r.mu.Lock()
	for _, d := range ds {
		if r.seen[d.Key] == d.Reason {
			continue
		}
		r.seen[d.Key] = d.Reason
		fresh = append(fresh, d)
	}
	r.mu.Unlock()
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].Key < fresh[j].Key })
	for _, d := range fresh {
		if r.log != nil {
			r.log.WithFields(logrus.Fields{"key": d.Key, "reason": d.Reason}).
				Warn("damaged backup index: skipped; it is not listed, restored or deleted")
		}
		if r.onNew != nil {
			r.onNew(d)
		}
	}
	return fresh
}
