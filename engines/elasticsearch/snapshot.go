package elasticsearch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
)

// snapshotRecord is the one artifact of a snapshot-mode backup: where the
// cluster keeps the data, and what a restore needs to swap aliases.
type snapshotRecord struct {
	Format      string      `json:"format"`
	Server      string      `json:"server"`
	Repository  string      `json:"repository"`
	Snapshot    string      `json:"snapshot"`
	UUID        string      `json:"uuid,omitempty"`
	Indices     []indexMeta `json:"indices"`
	DataStreams []string    `json:"dataStreams,omitempty"`
}

type snapshotState struct {
	Snapshots []struct {
		Snapshot string   `json:"snapshot"`
		UUID     string   `json:"uuid"`
		State    string   `json:"state"`
		Indices  []string `json:"indices"`
		Reason   string   `json:"reason"`
	} `json:"snapshots"`
}

var unsafeSnapshotChars = regexp.MustCompile(`[^a-z0-9._-]+`)

// snapshotName is the snapshot a backup takes: the backup's id and the
// time, so that a retried attempt never collides with an earlier one.
func snapshotName(id string, now time.Time) string {
	return "capsule-" + unsafeSnapshotChars.ReplaceAllString(strings.ToLower(id), "-") + "-" + now.UTC().Format("20060102t150405")
}

func (e *Engine) checkRepository(ctx context.Context, c *client, repo string, log logrus.FieldLogger) error {
	var r map[string]struct {
		Type string `json:"type"`
	}
	err := c.request(ctx, http.MethodGet, esPath("_snapshot", seg(repo)), nil, nil, &r)
	if isStatus(err, http.StatusNotFound) {
		return fmt.Errorf("repository: %s does not exist on the cluster (register it first)", repo)
	}
	if err != nil {
		return fmt.Errorf("repository %s: %w", repo, err)
	}
	if t := r[repo].Type; t != "s3" {
		log.WithFields(logrus.Fields{"repository": repo, "type": t}).Warn("snapshot repository is not of type s3")
	}
	return nil
}

func (e *Engine) snapshotBackup(ctx context.Context, job *engines.BackupJob, cfg *Config, c *client, si *serverInfo, log logrus.FieldLogger) (info *engines.BackupInfo, err error) {
	if err := e.checkRepository(ctx, c, cfg.Repository, log); err != nil {
		return nil, err
	}
	b := &backuper{c: c, cfg: cfg, si: si, log: log, progress: job.Progress}
	idx, streams, err := b.resolve(ctx)
	if err != nil {
		return nil, err
	}
	if len(idx) == 0 && len(streams) == 0 {
		return nil, fmt.Errorf("indices %v match no open index or data stream", cfg.Indices)
	}
	rec := &snapshotRecord{Format: FormatSnapshot, Server: si.product(), Repository: cfg.Repository, Snapshot: snapshotName(job.ID, time.Now()), DataStreams: streams}
	for _, name := range idx {
		im, err := b.indexMeta(ctx, name)
		if err != nil {
			return nil, err
		}
		rec.Indices = append(rec.Indices, indexMeta{Name: im.Name, Aliases: im.Aliases})
	}
	snapPath := esPath("_snapshot", seg(cfg.Repository), seg(rec.Snapshot))
	body := map[string]any{
		"indices":              strings.Join(append(append([]string(nil), idx...), streams...), ","),
		"include_global_state": false,
		"metadata":             map[string]string{"taken_by": "capsule", "backup_id": job.ID},
	}
	err = c.request(ctx, http.MethodPut, snapPath, url.Values{"wait_for_completion": {"false"}}, body, nil)
	if err != nil {
		return nil, fmt.Errorf("start snapshot %s: %w", rec.Snapshot, err)
	}
	log = log.WithFields(logrus.Fields{"repository": cfg.Repository, "snapshot": rec.Snapshot})
	log.Info("snapshot started")
	defer func() {
		if err == nil {
			return
		}
		// Abort (or delete) the snapshot a failed or canceled backup
		// started: nothing will refer to it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := c.request(cctx, http.MethodDelete, snapPath, nil, nil, nil); derr != nil && !isStatus(derr, http.StatusNotFound) {
			log.WithField("error", derr).Warn("could not delete the snapshot of a failed backup")
		}
	}()
	for {
		var st snapshotState
		if err := c.request(ctx, http.MethodGet, snapPath, nil, nil, &st); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", rec.Snapshot, err)
		}
		if len(st.Snapshots) != 1 {
			return nil, fmt.Errorf("snapshot %s: status lists %d snapshots", rec.Snapshot, len(st.Snapshots))
		}
		s := st.Snapshots[0]
		job.Progress.Report("snapshot "+strings.ToLower(s.State), 0, 0)
		switch s.State {
		case "SUCCESS":
			rec.UUID = s.UUID
		case "IN_PROGRESS", "STARTED", "INIT":
			if err := sleep(ctx, e.poll()); err != nil {
				return nil, err
			}
			continue
		default:
			return nil, fmt.Errorf("snapshot %s ended %s: %s", rec.Snapshot, s.State, s.Reason)
		}
		break
	}
	if err := writeJSONArtifact(job.Artifacts, snapshotArtifact, rec); err != nil {
		return nil, err
	}
	log.WithField("indices", len(rec.Indices)).Info("snapshot done")
	si2 := sourceInfo(cfg, si)
	si2["snapshot"] = rec.Snapshot
	return &engines.BackupInfo{
		Format:        FormatSnapshot,
		ServerVersion: si.product(),
		SourceInfo:    si2,
		Details:       map[string]any{"indices": len(rec.Indices), "dataStreams": len(rec.DataStreams), "uuid": rec.UUID},
	}, nil
}

func readSnapshotRecord(ctx context.Context, arts engines.ArtifactReader) (*snapshotRecord, error) {
	names := arts.Names()
	if len(names) != 1 || names[0] != snapshotArtifact {
		return nil, fmt.Errorf("backup has artifacts %v, want only %s", names, snapshotArtifact)
	}
	rc, err := arts.Open(ctx, snapshotArtifact)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	raw, err := readWhole(rc, snapshotArtifact)
	if err != nil {
		return nil, err
	}
	var rec snapshotRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", snapshotArtifact, err)
	}
	if rec.Format != FormatSnapshot || rec.Repository == "" || rec.Snapshot == "" {
		return nil, fmt.Errorf("%s: not a snapshot record of format %s", snapshotArtifact, FormatSnapshot)
	}
	if err := rec.checkNames(); err != nil {
		return nil, err
	}
	return &rec, nil
}

type restoreAnswer struct {
	Snapshot struct {
		Shards struct {
			Total  int `json:"total"`
			Failed int `json:"failed"`
		} `json:"shards"`
	} `json:"snapshot"`
}

// snapshotRestore restores through the cluster's snapshot API: in place
// (delete, then restore), or with renameSuffix into renamed indices whose
// aliases are then swapped as in a logical restore.
func (e *Engine) snapshotRestore(ctx context.Context, job *engines.RestoreJob, cfg *Config, opts restoreOptions, c *client, si *serverInfo, log logrus.FieldLogger) (info *engines.RestoreInfo, err error) {
	rec, err := readSnapshotRecord(ctx, job.Artifacts)
	if err != nil {
		return nil, err
	}
	// The snapshot must come from the target's own repository: another
	// one may hold another tenant's data.
	if rec.Repository != cfg.Repository {
		return nil, fmt.Errorf("%s: repository %s: %w (repository %q): a snapshot backup restores only from the target's own repository", snapshotArtifact, rec.Repository, ErrOutsideTarget, cfg.Repository)
	}
	log = log.WithFields(logrus.Fields{"repository": rec.Repository, "snapshot": rec.Snapshot})
	r := &restorer{e: e, c: c, cfg: cfg, si: si, log: log, job: job, opts: opts, m: &meta{Indices: rec.Indices}}
	g := &guard{r: r, artifact: snapshotArtifact}
	if err := g.check(ctx, rec.Indices, rec.DataStreams, nil); err != nil {
		return nil, err
	}
	if err := e.checkRepository(ctx, c, rec.Repository, log); err != nil {
		return nil, err
	}
	snapPath := esPath("_snapshot", seg(rec.Repository), seg(rec.Snapshot))
	var st snapshotState
	if err := c.request(ctx, http.MethodGet, snapPath, nil, nil, &st); err != nil {
		return nil, fmt.Errorf("snapshot %s in repository %s: %w", rec.Snapshot, rec.Repository, err)
	}
	if len(st.Snapshots) != 1 || st.Snapshots[0].State != "SUCCESS" {
		return nil, fmt.Errorf("snapshot %s in repository %s is not a successful snapshot", rec.Snapshot, rec.Repository)
	}
	if rec.UUID != "" && st.Snapshots[0].UUID != rec.UUID {
		return nil, fmt.Errorf("snapshot %s in repository %s has uuid %s, the backup recorded %s", rec.Snapshot, rec.Repository, st.Snapshots[0].UUID, rec.UUID)
	}
	var idx []string
	for _, im := range rec.Indices {
		idx = append(idx, im.Name)
	}
	restore := func(indices []string, extra map[string]any) error {
		if len(indices) == 0 {
			return nil
		}
		body := map[string]any{"indices": strings.Join(indices, ","), "include_global_state": false}
		for k, v := range extra {
			body[k] = v
		}
		var ans restoreAnswer
		err := c.request(ctx, http.MethodPost, snapPath+"/_restore", url.Values{"wait_for_completion": {"true"}}, body, &ans)
		if err != nil {
			return fmt.Errorf("restore snapshot %s: %w", rec.Snapshot, err)
		}
		if ans.Snapshot.Shards.Failed > 0 {
			return fmt.Errorf("restore snapshot %s: %d of %d shards failed", rec.Snapshot, ans.Snapshot.Shards.Failed, ans.Snapshot.Shards.Total)
		}
		return nil
	}
	deleteStreams := func() error {
		for _, ds := range rec.DataStreams {
			if err := c.request(ctx, http.MethodDelete, esPath("_data_stream", seg(ds)), nil, nil, nil); err != nil && !isStatus(err, http.StatusNotFound) {
				return fmt.Errorf("delete data stream %s: %w", ds, err)
			}
		}
		return nil
	}
	if opts.renameSuffix == "" {
		if err := r.fence(ctx); err != nil {
			return nil, err
		}
		start := time.Now()
		for _, i := range idx {
			if err := c.request(ctx, http.MethodDelete, esPath(seg(i)), url.Values{"ignore_unavailable": {"true"}}, nil, nil); err != nil {
				return nil, fmt.Errorf("delete index %s: %w", i, err)
			}
		}
		if err := deleteStreams(); err != nil {
			return nil, err
		}
		if err := restore(append(append([]string(nil), idx...), rec.DataStreams...), map[string]any{"include_aliases": true}); err != nil {
			return nil, err
		}
		log.WithField("indices", len(idx)).Info("snapshot restored in place")
		return &engines.RestoreInfo{Downtime: time.Since(start), Details: map[string]any{"snapshot": rec.Snapshot, "indices": idx}}, nil
	}
	for _, i := range idx {
		exists, err := r.exists(ctx, i+opts.renameSuffix)
		if err != nil {
			return nil, err
		}
		if exists {
			return nil, fmt.Errorf("index %s exists already: restore with another renameSuffix", i+opts.renameSuffix)
		}
	}
	swapped := false
	defer func() {
		if err == nil || swapped {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for _, i := range idx {
			if derr := c.request(cctx, http.MethodDelete, esPath(seg(i+opts.renameSuffix)), url.Values{"ignore_unavailable": {"true"}}, nil, nil); derr != nil {
				log.WithFields(logrus.Fields{"index": i + opts.renameSuffix, "error": derr}).Error("could not delete a staged index")
			}
		}
	}()
	err = restore(idx, map[string]any{
		"include_aliases":    false,
		"rename_pattern":     "(.+)",
		"rename_replacement": "$1" + opts.renameSuffix,
	})
	if err != nil {
		return nil, err
	}
	if err := r.fence(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	previous, err := r.swapAliases(ctx)
	if err != nil {
		return nil, err
	}
	swapped = true
	if err := deleteStreams(); err != nil {
		return nil, err
	}
	if err := restore(rec.DataStreams, map[string]any{"include_aliases": true}); err != nil {
		return nil, err
	}
	log.WithField("indices", len(idx)).Info("snapshot restored beside the live indices and aliases swapped")
	return &engines.RestoreInfo{
		Downtime: time.Since(start),
		Previous: strings.Join(previous, ","),
		Details:  map[string]any{"snapshot": rec.Snapshot, "indices": len(idx)},
	}, nil
}
