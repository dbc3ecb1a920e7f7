package legacy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// Labels an imported backup's index carries.
const (
	LabelID        = "legacy.id"
	LabelDate      = "legacy.date"
	LabelStateFile = "legacy.statefile"
)

// Artifact is the name of an imported backup's one artifact: the old
// dump, as it was, compressed and checksummed by capsule.
const Artifact = "pgdump.tar"

// ImportedID is the capsule backup id of an old backup's import:
// "legacy-" and the old id in lower case, then a hash of the old id as
// stored (lower case alone could merge two ids). Every replica derives
// the same id, so the create-only write of its index decides which one
// imported it.
func ImportedID(legacyID string) string {
	sum := sha256.Sum256([]byte(legacyID))
	return "legacy-" + strings.ToLower(legacyID) + "-" + hex.EncodeToString(sum[:4])
}

// Storer commits a backup made elsewhere through capsule's backup
// pipeline (executor.Executor.Store): write gives the artifacts, which
// are compressed, checksummed and written under the folder of idx's
// attempt; idx, completed with them, is written create-only. When an
// index is there already, what the call wrote is removed and its error
// wraps bucket.ErrPreconditionFailed.
type Storer interface {
	Store(ctx context.Context, idx *index.BackupIndex, write func(engines.ArtifactWriter) error) error
}

// ImportConfig configures Import.
type ImportConfig struct {
	// Bucket is capsule's own (prefixed) bucket: where imports go, and
	// where earlier imports are found.
	Bucket bucket.Reader
	// Cluster receives the imports (requests.DefaultCluster when empty).
	Cluster string
	Storer  Storer
	// DeleteStateFiles deletes the state files of every backup that is
	// imported (by this run or before) and of every failed one (it has
	// nothing to import); the dumps stay.
	DeleteStateFiles bool
	Log              logrus.FieldLogger
}

// Outcomes of one backup's import.
const (
	OutcomeImported = "imported"
	// OutcomeAlready: an earlier run, or another replica meanwhile,
	// imported it.
	OutcomeAlready = "already-imported"
	OutcomeSkipped = "skipped"
	OutcomeFailed  = "failed"
)

// ImportResult is what Import did with one old backup.
type ImportResult struct {
	LegacyID string `json:"legacyId"`
	Outcome  string `json:"outcome"`
	// Cluster, Source and BackupID name the capsule backup, once there
	// is one.
	Cluster  string `json:"cluster,omitempty"`
	Source   string `json:"source,omitempty"`
	BackupID string `json:"backupId,omitempty"`
	// Bytes is the dump's size; StoredBytes what capsule stored.
	Bytes       int64  `json:"bytes,omitempty"`
	StoredBytes int64  `json:"storedBytes,omitempty"`
	Detail      string `json:"detail,omitempty"`
	// StateFilesDeleted are the keys deleted (DeleteStateFiles).
	StateFilesDeleted []string `json:"stateFilesDeleted,omitempty"`
}

// ImportReport is what Import did.
type ImportReport struct {
	Results []ImportResult `json:"results"`
	// Damaged are the state files that were not believed, so not
	// imported (nor deleted).
	Damaged []Damaged `json:"damaged,omitempty"`
	// StateFilesLeft are the state files still in the bucket.
	StateFilesLeft []string `json:"stateFilesLeft,omitempty"`
}

// Failed counts the backups whose import failed.
func (r *ImportReport) Failed() int {
	n := 0
	for _, x := range r.Results {
		if x.Outcome == OutcomeFailed {
			n++
		}
	}
	return n
}

// Import converts every finished backup of the old service into a
// capsule backup: its dump, as stored, re-stored through the backup
// pipeline (compressed, with a sha256) as the artifact Artifact of
// backup ImportedID(id) in cfg.Cluster, with the old source's name,
// format postgres.FormatTar, the old date as its start and finish, and
// labels naming the old backup (LabelID, LabelDate, LabelStateFile).
// It is idempotent and safe to run from several replicas at once: a
// backup that has its import already is skipped, each replica writes
// its artifact under an attempt folder of its own, and the create-only
// write of the index decides; a replica that loses removes what it
// wrote. One backup's failure does not stop the others: it is reported.
func Import(ctx context.Context, s *Store, cfg ImportConfig) (*ImportReport, error) {
	if cfg.Bucket == nil || cfg.Storer == nil {
		return nil, errors.New("legacy import: Bucket and Storer are required")
	}
	if cfg.Cluster == "" {
		cfg.Cluster = requests.DefaultCluster
	}
	if err := requests.ValidateName(cfg.Cluster); err != nil {
		return nil, fmt.Errorf("legacy import: cluster: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = engines.DiscardLog()
	}
	l, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	twins, err := Imports(ctx, cfg.Bucket)
	if err != nil {
		return nil, err
	}
	rep := &ImportReport{Results: []ImportResult{}, Damaged: l.Damaged}
	for i := range l.Backups {
		b := &l.Backups[i]
		res := importOne(ctx, s, cfg, b, twins, log)
		done := res.Outcome == OutcomeImported || res.Outcome == OutcomeAlready || b.Status == StatusFailed
		if cfg.DeleteStateFiles && done && ctx.Err() == nil {
			deleted, err := s.DeleteStateFiles(ctx, b)
			res.StateFilesDeleted = deleted
			if err != nil {
				res.Outcome, res.Detail = OutcomeFailed, "imported, but its state files could not all be deleted: "+err.Error()
			} else {
				log.WithFields(logrus.Fields{"legacy_id": b.BackupID, "keys": deleted}).Info("deleted the old service's state files")
			}
		}
		for _, k := range b.StateFiles {
			if !contains(res.StateFilesDeleted, k) {
				rep.StateFilesLeft = append(rep.StateFilesLeft, k)
			}
		}
		rep.Results = append(rep.Results, res)
	}
	for _, d := range l.Damaged {
		rep.StateFilesLeft = append(rep.StateFilesLeft, d.Key)
	}
	return rep, ctx.Err()
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Imports finds the imports of old backups among capsule's committed
// backups, in every cluster: by old id, each backup whose id is
// ImportedID of its LabelID.
func Imports(ctx context.Context, b bucket.Reader) (map[string]index.Entry, error) {
	all, err := index.ListAll(ctx, b, index.Filter{})
	if err != nil {
		return nil, fmt.Errorf("list capsule's backups: %w", err)
	}
	twins := map[string]index.Entry{}
	for _, e := range all.Entries {
		if id := e.Labels[LabelID]; id != "" && e.BackupID == ImportedID(id) {
			twins[id] = e
		}
	}
	return twins, nil
}

func importOne(ctx context.Context, s *Store, cfg ImportConfig, b *Backup, twins map[string]index.Entry, log logrus.FieldLogger) ImportResult {
	id := ImportedID(b.BackupID)
	res := ImportResult{LegacyID: b.BackupID, Source: b.Source, Bytes: b.Bytes}
	log = log.WithFields(logrus.Fields{"legacy_id": b.BackupID, "backup_id": id})
	if e, ok := twins[b.BackupID]; ok {
		res.Outcome, res.Cluster, res.BackupID, res.StoredBytes = OutcomeAlready, e.Cluster, e.BackupID, e.StoredBytes
		res.Detail = "imported before"
		return res
	}
	switch {
	case b.Status != StatusFinished:
		res.Outcome, res.Detail = OutcomeSkipped, "it ended "+b.Status+": nothing to import"
		return res
	case !b.Restorable():
		res.Outcome, res.Detail = OutcomeSkipped, b.Problem
		return res
	case b.Date.After(time.Now().Add(index.MaxClockSkew)):
		res.Outcome, res.Detail = OutcomeSkipped, "it is dated in the future ("+b.Date.Format(time.RFC3339)+")"
		return res
	}
	info := postgres.TarBackupInfo(Artifact, b.Bytes)
	details := info.Details
	details["importedFrom"] = map[string]any{
		"legacyId": b.BackupID, "dump": b.Dump, "stateFile": b.Shape,
		"checksum": "none: the old service recorded none; the sha256 here was taken when capsule imported the dump",
	}
	// An attempt folder of its own: two replicas importing the same
	// backup never write the same key, and the index decides.
	attempt := 1 + rand.IntN(1<<30)
	idx := &index.BackupIndex{
		APIVersion: requests.APIVersion, Kind: index.KindIndex,
		BackupID: id, RequestID: id, Cluster: cfg.Cluster, Source: b.Source,
		Engine: Engine, Format: info.Format, Status: requests.StatusSucceeded, Attempt: attempt,
		StartedAt: b.Date, FinishedAt: b.Date,
		Labels: map[string]string{
			LabelID: b.BackupID, LabelDate: b.Date.Format(time.RFC3339Nano), LabelStateFile: b.Shape,
		},
		SourceInfo: map[string]string{"legacyService": b.Source},
		Details:    details,
	}
	log.WithField("bytes", b.Bytes).Info("importing a backup of the old service")
	err := cfg.Storer.Store(ctx, idx, func(w engines.ArtifactWriter) error {
		dump, err := s.OpenDump(ctx, b)
		if err != nil {
			return err
		}
		defer dump.Close()
		wc, err := w.Create(Artifact)
		if err != nil {
			return err
		}
		if _, err := io.Copy(wc, dump); err != nil {
			return fmt.Errorf("copy dump %s: %w", b.Dump, err)
		}
		return wc.Close()
	})
	res.Cluster, res.BackupID = cfg.Cluster, id
	if errors.Is(err, bucket.ErrPreconditionFailed) {
		// Another replica committed it first, or the id is taken.
		prev, rerr := index.Read(ctx, cfg.Bucket, idx.Key())
		if rerr == nil && prev.Labels[LabelID] == b.BackupID {
			res.Outcome, res.StoredBytes, res.Detail = OutcomeAlready, prev.StoredBytes, "imported meanwhile by another replica"
			log.Info("another replica imported it meanwhile")
			return res
		}
		res.Outcome, res.Detail = OutcomeFailed, fmt.Sprintf("backup %s exists and is not this backup's import", idx.Key())
		return res
	}
	if err != nil {
		res.Outcome, res.Detail = OutcomeFailed, err.Error()
		log.WithError(err).Warn("import failed")
		return res
	}
	res.Outcome, res.StoredBytes = OutcomeImported, idx.StoredBytes
	log.WithFields(logrus.Fields{"stored_bytes": idx.StoredBytes, "cluster": cfg.Cluster}).Info("imported")
	return res
}
