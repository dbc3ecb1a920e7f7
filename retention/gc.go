package retention

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/requests"
)

// GCReport is what one CollectGarbage did.
type GCReport struct {
	// LeaseHeldBy names the replica that held the garbage collector's
	// lease; when set, this run did nothing.
	LeaseHeldBy string `json:"leaseHeldBy,omitempty"`
	// Removed are the folders whose objects were deleted: an attempt's
	// (backups/<c>/<s>/<id>/<attempt>/) or a whole uncommitted backup's
	// (backups/<c>/<s>/<id>/).
	Removed []string `json:"removed"`
	// Objects counts the objects deleted (or that would have been).
	Objects int `json:"objects"`
	// DryRun says nothing was deleted or aborted: Removed, Objects and
	// Aborted say what would have been.
	DryRun bool `json:"dryRun,omitempty"`
	// Aborted are the uploads aborted.
	Aborted []bucket.PendingUpload `json:"aborted,omitempty"`
	// Retained are objects Object Lock keeps, each reported by the first
	// run of this Runner that meets it.
	Retained []RetainedObject `json:"retained,omitempty"`
	// Left are garbage folders and uploads (by key) left in place this
	// time, with the reason: too young, a live lease, a pending request.
	Left map[string]string `json:"left,omitempty"`
}

// CollectGarbage removes what no index names and no running work owns,
// in the bucket only: staging a restore left on its target (side
// databases, staging directories) is out of its sight, and the engines
// remove it when they next run there (engines.RestoreJob.StaleStaging,
// answered from the bucket by the executor).
// once it is at least olderThan old by the bucket's clock (see the package
// doc; zero means any age), under the garbage collector's lease. When another replica holds
// the lease it returns at once with GCReport.LeaseHeldBy set.
func (r *Runner) CollectGarbage(ctx context.Context, olderThan time.Duration) (*GCReport, error) {
	if olderThan < 0 {
		return nil, fmt.Errorf("collect garbage: olderThan %s is negative", olderThan)
	}
	var g *collector
	heldBy, err := r.withLock(ctx, GCLockKey, "garbage collection", func(ctx context.Context, l *lease.Lease) error {
		g = &collector{r: r, l: l, olderThan: olderThan, now: l.Now(), leases: map[string]bool{},
			rep: &GCReport{Removed: []string{}, Left: map[string]string{}, DryRun: r.cfg.DryRun}}
		return g.run(ctx)
	})
	if heldBy != "" {
		r.log.WithField("holder", heldBy).Debug("garbage collector lease held by another replica")
		return &GCReport{LeaseHeldBy: heldBy}, nil
	}
	if g == nil {
		return nil, err
	}
	return g.rep, err
}

type collector struct {
	r         *Runner
	l         *lease.Lease
	olderThan time.Duration
	now       time.Time       // the bucket's clock when the run began
	leases    map[string]bool // request id → its lease is live
	rep       *GCReport
}

// backupGroup is every object under one backup's folder.
type backupGroup struct {
	dir      string // backups/<c>/<s>/<id>/ as listed
	id       string
	hasIndex bool
	folders  map[string][]bucket.ObjectInfo // "<attempt>/" → its objects
	loose    []bucket.ObjectInfo            // beside the index: verify-*.json, ...
}

func (g *collector) run(ctx context.Context) error {
	// A backup's objects are contiguous in key order: gather one backup's
	// at a time and decide when the listing moves on.
	var cur *backupGroup
	err := bucket.Walk(ctx, g.r.cfg.Bucket, requests.BackupsPrefix, func(o bucket.ObjectInfo) error {
		k, err := requests.ParseBackupKey(o.Key)
		if err != nil {
			return nil // not capsule's layout: not ours to remove
		}
		dir := strings.TrimSuffix(o.Key, k.Rest)
		if cur == nil || cur.dir != dir {
			if cur != nil {
				if err := g.backup(ctx, cur); err != nil {
					return err
				}
			}
			cur = &backupGroup{dir: dir, id: k.BackupID, folders: map[string][]bucket.ObjectInfo{}}
		}
		switch folder, _, nested := strings.Cut(k.Rest, "/"); {
		case k.Rest == requests.IndexName:
			cur.hasIndex = true
		case nested:
			cur.folders[folder+"/"] = append(cur.folders[folder+"/"], o)
		default:
			cur.loose = append(cur.loose, o)
		}
		return nil
	})
	if err == nil && cur != nil {
		err = g.backup(ctx, cur)
	}
	if err != nil {
		return fmt.Errorf("collect garbage: %w", err)
	}
	if err := g.uploads(ctx); err != nil {
		return fmt.Errorf("collect garbage: %w", err)
	}
	return context.Cause(ctx)
}

// backup removes the garbage of one backup's folder.
func (g *collector) backup(ctx context.Context, b *backupGroup) error {
	log := g.r.log.WithField("backup_id", b.id)
	if !b.hasIndex {
		var all []bucket.ObjectInfo
		for _, objs := range b.folders {
			all = append(all, objs...)
		}
		all = append(all, b.loose...)
		if has, err := g.exists(ctx, requests.RequestKey(b.id)); err != nil || has {
			if has {
				g.rep.Left[b.dir] = "its request is pending"
			}
			return err
		}
		return g.remove(ctx, b, b.dir, all, log)
	}
	x, err := index.Read(ctx, g.r.cfg.Bucket, b.dir+requests.IndexName)
	var de *index.DamagedError
	switch {
	case errors.Is(err, bucket.ErrNotFound):
		return nil // deleted by retention since the listing
	case errors.As(err, &de):
		// A damaged index is no reason to delete anything, nor proof
		// that the folder is garbage: leave it all for a person.
		g.r.cfg.Damaged.Report([]index.Damaged{de.Damaged})
		g.rep.Left[b.dir] = "its index is damaged: " + de.Damaged.Reason
		return nil
	case err != nil:
		log.WithError(err).Warn("garbage collection: cannot read the index; leaving the backup alone")
		return nil
	}
	// A believed index names one attempt, and its artifacts all lie in
	// that attempt's folder.
	named := strconv.Itoa(x.Attempt) + "/"
	for folder, objs := range b.folders {
		if folder != named {
			if err := g.remove(ctx, b, b.dir+folder, objs, log.WithField("attempt", strings.TrimSuffix(folder, "/"))); err != nil {
				return err
			}
		}
	}
	return nil
}

// remove deletes the objects of one garbage folder, unless it is too young
// or its backup's lease is live.
func (g *collector) remove(ctx context.Context, b *backupGroup, folder string, objs []bucket.ObjectInfo, log logrus.FieldLogger) error {
	var newest time.Time
	for _, o := range objs {
		if o.LastModified.After(newest) {
			newest = o.LastModified
		}
	}
	if age := g.now.Sub(newest); g.olderThan > 0 && age < g.olderThan {
		g.rep.Left[folder] = "younger than " + g.olderThan.String()
		return nil
	}
	live, err := g.leaseLive(ctx, b.id)
	if err != nil || live {
		if live {
			g.rep.Left[folder] = "its request's lease is live"
		}
		return err
	}
	if !g.l.Valid() {
		return fmt.Errorf("%w: stopped before removing %s", ErrLeaseLost, folder)
	}
	if !b.hasIndex {
		// A backup committed since the listing is no garbage.
		if has, err := g.exists(ctx, b.dir+requests.IndexName); err != nil || has {
			return err
		}
	}
	n := 0
	for _, o := range objs {
		if _, ok := g.r.retainedUntil(o.Key, g.l.Now()); ok {
			continue
		}
		if err := context.Cause(ctx); err != nil {
			return err
		}
		if g.r.cfg.DryRun {
			n++
			continue
		}
		err := g.r.cfg.Bucket.Delete(ctx, o.Key)
		switch {
		case err == nil:
			n++
		case errors.Is(err, bucket.ErrRetained):
			ro := RetainedObject{Key: o.Key, Err: err.Error()}
			if g.r.noteRetained(ro, g.l.Now()) {
				g.rep.Retained = append(g.rep.Retained, ro)
			}
		default:
			return err
		}
	}
	if n > 0 {
		g.rep.Removed = append(g.rep.Removed, folder)
		g.rep.Objects += n
		msg := "garbage collection removed a folder no index names"
		if g.r.cfg.DryRun {
			msg = "garbage collection would remove a folder no index names (dry run)"
		}
		log.WithFields(logrus.Fields{"folder": folder, "objects": n}).Info(msg)
	}
	return nil
}

// uploads aborts the uploads under backups/ that are old enough and whose
// backup's lease is not live.
func (g *collector) uploads(ctx context.Context) error {
	ul, ok := g.r.cfg.Bucket.(bucket.UploadLister)
	if !ok {
		return nil
	}
	ups, err := ul.ListUploads(ctx, requests.BackupsPrefix)
	if err != nil {
		return err
	}
	for _, u := range ups {
		if age := g.now.Sub(u.Initiated); g.olderThan > 0 && age < g.olderThan {
			g.rep.Left[u.Key] = "an upload younger than " + g.olderThan.String()
			continue
		}
		if k, err := requests.ParseBackupKey(u.Key); err == nil {
			live, err := g.leaseLive(ctx, k.BackupID)
			if err != nil {
				return err
			}
			if live {
				g.rep.Left[u.Key] = "an upload whose request's lease is live"
				continue
			}
		}
		if !g.l.Valid() {
			return fmt.Errorf("%w: stopped before aborting an upload of %s", ErrLeaseLost, u.Key)
		}
		if g.r.cfg.DryRun {
			g.rep.Aborted = append(g.rep.Aborted, u)
			continue
		}
		if err := ul.AbortUpload(ctx, u.Key, u.UploadID); err != nil {
			return err
		}
		g.rep.Aborted = append(g.rep.Aborted, u)
		g.r.log.WithFields(logrus.Fields{"key": u.Key, "upload_id": u.UploadID, "initiated": u.Initiated}).Info("garbage collection aborted an upload left open")
	}
	return nil
}

// leaseLive says whether leases/<id>.json is held (lease.State.Held). A
// damaged request lease is judged by the workers' lease length
// (Config.RequestLease), as the workers judge it.
func (g *collector) leaseLive(ctx context.Context, id string) (bool, error) {
	if live, ok := g.leases[id]; ok {
		return live, nil
	}
	st, err := lease.Read(ctx, g.r.cfg.Bucket, requests.LeaseKey(id), requests.DefaultMaxControlObject, g.r.cfg.RequestLease)
	if err != nil {
		return false, err
	}
	g.leases[id] = st.Held()
	return st.Held(), nil
}

func (g *collector) exists(ctx context.Context, key string) (bool, error) {
	_, err := g.r.cfg.Bucket.Head(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, bucket.ErrNotFound):
		return false, nil
	}
	return false, err
}
