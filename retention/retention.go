package retention

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/requests"
)

// Defaults of Config.
const (
	DefaultLease         = 30 * time.Second
	DefaultRetryRetained = 24 * time.Hour
)

// Config configures a Runner.
type Config struct {
	// Bucket is the bucket, scoped to capsule's prefix. Required.
	Bucket bucket.Bucket
	// Holder names this replica in lock objects (host/pid, a pod's name).
	// Required.
	Holder string
	// Lease is the length of a lock; DefaultLease when zero, else at
	// least lease.MinLength. It is renewed every third of it.
	Lease time.Duration
	// RequestLease is the workers' lease length: garbage collection
	// judges a damaged request lease by it, as the workers do;
	// lease.DefaultRequestLength when zero.
	RequestLease time.Duration
	// RetryRetained is how long an object that Object Lock kept rests
	// before the next try, when its retain-until date is unknown;
	// DefaultRetryRetained when zero.
	RetryRetained time.Duration
	// Log receives what was deleted and what could not be; nothing when
	// nil.
	Log logrus.FieldLogger
	// Damaged reports damaged indexes (logged once per key); when nil the
	// Runner logs each to Log once.
	Damaged *index.Reporter
	// WAL, when set, deletes the point-in-time WAL of a source that its
	// kept base backups no longer need (pitr.PruneWAL); each run calls it
	// after its deletions, under the policy's lease.
	WAL func(ctx context.Context, b bucket.Bucket, cluster, source string) (int, error)
	// DryRun deletes and aborts nothing: reports say what a run would
	// have done (the leases are still taken, so the view is one replica's).
	DryRun bool
	// Trust judges each backup's signature: one no trusted key signed is
	// neither counted, kept nor deleted (Report.Untrusted). Nil checks
	// none.
	Trust *index.Trust
}

// Validate checks the configuration, naming the bad setting.
func (c *Config) Validate() error {
	switch {
	case c.Bucket == nil:
		return errors.New("retention: Bucket is required")
	case c.Holder == "":
		return errors.New("retention: Holder is required (it names this replica in lock objects)")
	case c.Lease < 0:
		return fmt.Errorf("retention: Lease %s is negative", c.Lease)
	case c.Lease > 0 && c.Lease < lease.MinLength:
		return fmt.Errorf("retention: %w", lease.Validate("Lease", c.Lease))
	case c.RequestLease < 0:
		return fmt.Errorf("retention: RequestLease %s is negative", c.RequestLease)
	case c.RetryRetained < 0:
		return fmt.Errorf("retention: RetryRetained %s is negative", c.RetryRetained)
	}
	return nil
}

// Runner applies retention policies and collects garbage. It is safe for
// concurrent use; run one per process and share it, so that what Object Lock
// keeps is reported once.
type Runner struct {
	cfg Config
	log logrus.FieldLogger

	mu sync.Mutex
	// retained remembers objects Object Lock keeps: key → when to try again.
	retained map[string]time.Time
	// seen caches parsed requests by key and ETag (requests are never
	// rewritten); nil for one that is no Restore or Verify.
	seen map[string]*requests.Request
}

// New checks cfg and returns a Runner.
func New(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.RequestLease == 0 {
		cfg.RequestLease = lease.DefaultRequestLength
	}
	if cfg.RetryRetained == 0 {
		cfg.RetryRetained = DefaultRetryRetained
	}
	log := cfg.Log
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = l
	}
	if cfg.Damaged == nil {
		cfg.Damaged = index.NewReporter(log, nil)
	}
	return &Runner{cfg: cfg, log: log, retained: map[string]time.Time{}, seen: map[string]*requests.Request{}}, nil
}

// Policy says which backups to keep.
type Policy struct {
	// Cluster and Source select the backups. Required.
	Cluster, Source string
	// Plan selects scheduled backups: those whose index carries this
	// plan. Manual backups have none. Empty means manual backups only, and
	// then IncludeManual must be set.
	Plan string
	// Keep is how many good backups to keep, newest first (keepLast). At
	// least 1 unless a KeepDaily, KeepWeekly or KeepMonthly is set.
	Keep int
	// KeepDaily, KeepWeekly and KeepMonthly keep, grandfather-father-son,
	// the newest good backup of each of the newest that many days, ISO
	// weeks and months (UTC; a scheduled backup's slot, else its finish
	// time) that have one.
	KeepDaily, KeepWeekly, KeepMonthly int
	// IncludeManual also counts and deletes manual backups (no plan).
	IncludeManual bool
}

// Validate checks the policy, naming the bad field.
func (p Policy) Validate() error {
	if err := requests.ValidateName(p.Cluster); err != nil {
		return fmt.Errorf("retention policy: cluster: %w", err)
	}
	if err := requests.ValidateName(p.Source); err != nil {
		return fmt.Errorf("retention policy: source: %w", err)
	}
	if p.Plan == "" && !p.IncludeManual {
		return errors.New("retention policy: plan: is empty and includeManual is not set, so no backup is selected")
	}
	if p.Plan != "" {
		if err := requests.ValidateName(p.Plan); err != nil {
			return fmt.Errorf("retention policy: plan: %w", err)
		}
	}
	for _, f := range []struct {
		name string
		n    int
	}{{"keepDaily", p.KeepDaily}, {"keepWeekly", p.KeepWeekly}, {"keepMonthly", p.KeepMonthly}, {"keep", p.Keep}} {
		if f.n < 0 {
			return fmt.Errorf("retention policy: %s: must not be negative, got %d", f.name, f.n)
		}
	}
	if p.Keep < 1 && p.KeepDaily+p.KeepWeekly+p.KeepMonthly == 0 {
		return fmt.Errorf("retention policy: keep: must be at least 1 (or give keepDaily, keepWeekly or keepMonthly), got %d", p.Keep)
	}
	return nil
}

// selects says whether the listed backup e is one of p's. Its key must be
// the index key of a backup of p's cluster and source (index.List
// believes no other; this is the last guard before a delete).
func (p Policy) selects(e index.Entry) bool {
	x := e.BackupIndex
	return e.ListedKey == requests.IndexKey(p.Cluster, p.Source, x.BackupID) &&
		x.Status == requests.StatusSucceeded && (x.Plan == p.Plan || (p.IncludeManual && x.Plan == ""))
}

// Report is what one Apply did. Every backup of the policy is in exactly
// one of Kept, Deleted and Skipped, unless the lease was held elsewhere.
type Report struct {
	// LeaseHeldBy names the replica that held the policy's lease; when
	// set, this run did nothing.
	LeaseHeldBy string `json:"leaseHeldBy,omitempty"`
	// Kept are the backups the policy keeps, newest first.
	Kept []string `json:"kept"`
	// Deleted are the backups this run deleted (their index is gone), or
	// would have deleted in a dry run.
	Deleted []string `json:"deleted"`
	// Objects counts the objects deleted (or that would have been).
	Objects int `json:"objects"`
	// DryRun says nothing was deleted.
	DryRun bool `json:"dryRun,omitempty"`
	// Retained are objects Object Lock keeps, each reported by the first
	// run of this Runner that meets it.
	Retained []RetainedObject `json:"retained,omitempty"`
	// Skipped are backups the policy would delete, with the reason they
	// are still there (in use by a restore, retained by Object Lock).
	Skipped map[string]string `json:"skipped,omitempty"`
	// Damaged are the indexes under the policy's source that are not
	// believed (see the index package): neither counted, kept nor deleted.
	Damaged []index.Damaged `json:"damaged,omitempty"`
	// WALDeleted counts the point-in-time WAL objects deleted.
	WALDeleted int `json:"walDeleted,omitempty"`
	// Untrusted are the backups under the policy's source whose index no
	// trusted key signed, by id, with the reason: neither counted, kept
	// nor deleted (a forged backup pushes no real one out, and a person
	// decides what to do with it).
	Untrusted map[string]string `json:"untrusted,omitempty"`
}

// RetainedObject is an object that Object Lock keeps.
type RetainedObject struct {
	Key string `json:"key"`
	// Until is the retain-until date, when known.
	Until time.Time `json:"until,omitzero"`
	// Err is the store's refusal, or why it was not even tried.
	Err string `json:"error"`
}

// Apply deletes the backups p no longer keeps, under p's lease. When another
// replica holds the lease it returns at once with Report.LeaseHeldBy set.
// On an error the report says what was done before it.
func (r *Runner) Apply(ctx context.Context, p Policy) (*Report, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	log := r.log.WithFields(logrus.Fields{"cluster": p.Cluster, "source": p.Source, "plan": p.Plan})
	var rep *Report
	heldBy, err := r.withLock(ctx, LockKey(p), "retention", func(ctx context.Context, l *lease.Lease) error {
		var err error
		rep, err = r.apply(ctx, l, p, log)
		return err
	})
	if heldBy != "" {
		log.WithField("holder", heldBy).Debug("retention lease held by another replica")
		return &Report{LeaseHeldBy: heldBy}, nil
	}
	return rep, err
}

func (r *Runner) apply(ctx context.Context, l *lease.Lease, p Policy, log logrus.FieldLogger) (*Report, error) {
	rep := &Report{Kept: []string{}, Deleted: []string{}, Skipped: map[string]string{}, DryRun: r.cfg.DryRun}
	all, err := index.ListAll(ctx, r.cfg.Bucket, index.Filter{Cluster: p.Cluster, Source: p.Source, Trust: r.cfg.Trust})
	if err != nil {
		return rep, fmt.Errorf("list backups of %s/%s: %w", p.Cluster, p.Source, err)
	}
	rep.Damaged = all.Damaged
	r.cfg.Damaged.Report(all.Damaged)
	var mine []index.Entry
	for _, e := range all.Entries {
		if !e.Trusted() {
			if rep.Untrusted == nil {
				rep.Untrusted = map[string]string{}
			}
			rep.Untrusted[e.BackupID] = e.Signature.Reason
			log.WithFields(logrus.Fields{"backup_id": e.BackupID, "key": e.ListedKey, "reason": e.Signature.Reason}).
				Warn("untrusted backup: no trusted key signed its index; retention neither counts nor deletes it")
			continue
		}
		if p.selects(e) {
			mine = append(mine, e)
		}
	}
	kept, drop := p.choose(mine)
	for _, e := range kept {
		rep.Kept = append(rep.Kept, e.BackupID)
	}
	if len(drop) == 0 {
		return rep, r.pruneWAL(ctx, l, p, rep, log)
	}
	inUse, err := r.inUse(ctx)
	if err != nil {
		return rep, err
	}
	// Oldest first: an interrupted run leaves the newer ones.
	for i := len(drop) - 1; i >= 0; i-- {
		e := drop[i]
		x := e.BackupIndex
		blog := log.WithField("backup_id", x.BackupID)
		if why := r.keepReason(l, e, inUse, rep); why != "" {
			rep.Skipped[x.BackupID] = why
			continue
		}
		// Look again right before deleting: the lease, and the
		// requests written since the first look.
		if !l.Valid() {
			return rep, fmt.Errorf("%w: stopped before deleting %s", ErrLeaseLost, x.BackupID)
		}
		if inUse, err = r.inUse(ctx); err != nil {
			return rep, err
		}
		if why := r.keepReason(l, e, inUse, rep); why != "" {
			rep.Skipped[x.BackupID] = why
			continue
		}
		deleted, err := r.deleteBackup(ctx, l, e, rep, blog)
		switch _, skipped := rep.Skipped[x.BackupID]; {
		case deleted:
			rep.Deleted = append(rep.Deleted, x.BackupID)
		case err == nil && !skipped:
			rep.Skipped[x.BackupID] = "already deleted by another run"
		}
		if err != nil {
			return rep, err
		}
	}
	if err := context.Cause(ctx); err != nil {
		return rep, err
	}
	return rep, r.pruneWAL(ctx, l, p, rep, log)
}

// pruneWAL deletes the WAL the source's remaining base backups do not
// need, when the Runner was given the means.
func (r *Runner) pruneWAL(ctx context.Context, l *lease.Lease, p Policy, rep *Report, log logrus.FieldLogger) error {
	if r.cfg.WAL == nil || r.cfg.DryRun {
		return nil
	}
	if !l.Valid() {
		return fmt.Errorf("%w: stopped before pruning WAL", ErrLeaseLost)
	}
	n, err := r.cfg.WAL(ctx, r.cfg.Bucket, p.Cluster, p.Source)
	rep.WALDeleted = n
	if n > 0 {
		log.WithField("objects", n).Info("deleted WAL that no kept base backup needs")
	}
	return err
}

// choose splits a policy's backups, newest first, into those it keeps and
// those it deletes (see the package doc): it keeps the newest keep good
// backups and everything newer, and at least the newest keep backups.
func choose(entries []index.Entry, keep int) (kept, drop []index.Entry) {
	sorted := append([]index.Entry(nil), entries...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if !a.FinishedAt.Equal(b.FinishedAt) {
			return a.FinishedAt.After(b.FinishedAt)
		}
		return a.BackupID > b.BackupID
	})
	if keep < 1 {
		return nil, sorted
	}
	last := -1 // index of the oldest kept backup
	good := 0
	for i, e := range sorted {
		if e.Verification == nil || e.Verification.OK {
			good++
			last = i
			if good == keep {
				break
			}
		}
	}
	last = max(last, min(keep, len(sorted))-1)
	return sorted[:last+1], sorted[last+1:]
}

// backupTime is when a backup counts as made for keepDaily, keepWeekly
// and keepMonthly: a scheduled backup's slot (its id names it), else its
// finish time.
func backupTime(e index.Entry) time.Time {
	if e.Plan != "" {
		if t, ok := requests.SlotOf(e.BackupID); ok {
			return t
		}
	}
	return e.FinishedAt
}

// choose splits the policy's backups, newest first, into those it keeps
// and those it deletes: the newest Keep (see choose), the newest good
// backup of each of the newest KeepDaily days, KeepWeekly weeks and
// KeepMonthly months, and always the newest backup whose verification
// succeeded (the last verified good one).
func (p Policy) choose(entries []index.Entry) (kept, drop []index.Entry) {
	kept, drop = choose(entries, p.Keep)
	if len(drop) == 0 {
		return kept, drop
	}
	keep := map[string]bool{}
	all := append(append([]index.Entry(nil), kept...), drop...)
	for _, per := range []struct {
		n   int
		key func(time.Time) string
	}{
		{p.KeepDaily, func(t time.Time) string { return t.UTC().Format("2006-01-02") }},
		{p.KeepWeekly, func(t time.Time) string { y, w := t.UTC().ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{p.KeepMonthly, func(t time.Time) string { return t.UTC().Format("2006-01") }},
	} {
		seen := map[string]bool{}
		for _, e := range all {
			if len(seen) == per.n {
				break
			}
			if e.Verification != nil && !e.Verification.OK {
				continue
			}
			if k := per.key(backupTime(e)); !seen[k] {
				seen[k] = true
				keep[e.BackupID] = true
			}
		}
	}
	for _, e := range all {
		if e.Verification != nil && e.Verification.OK {
			keep[e.BackupID] = true
			break
		}
	}
	rest := drop[:0:0]
	for _, e := range drop {
		if keep[e.BackupID] {
			kept = append(kept, e)
		} else {
			rest = append(rest, e)
		}
	}
	return kept, rest
}

// keepReason says why backup e must stay, or "" when it may go.
func (r *Runner) keepReason(l *lease.Lease, e index.Entry, inUse map[string]string, rep *Report) string {
	x := e.BackupIndex
	if id, ok := inUse[x.BackupID]; ok {
		return "in use by request " + id
	}
	if id, ok := inUse[pitrKey(x.Cluster, x.Source)]; ok && x.Format == baseBackupFormat {
		return "a base backup that point-in-time request " + id + " may use"
	}
	key := e.ListedKey
	now := l.Now()
	if x.RetainUntil.After(now) {
		o := RetainedObject{Key: key, Until: x.RetainUntil, Err: "not tried: the index records a retainUntil date"}
		if r.noteRetained(o, now) {
			rep.Retained = append(rep.Retained, o)
		}
		return "retained by Object Lock until " + x.RetainUntil.UTC().Format(time.RFC3339)
	}
	if next, ok := r.retainedUntil(key, now); ok {
		return "retained by Object Lock; next try after " + next.UTC().Format(time.RFC3339)
	}
	return ""
}

// deleteBackup deletes the index e was listed at, then everything else
// under that folder: the keys it deletes come from the listing, never from
// the index's content. It reports whether this call deleted the index:
// false when it was gone already, or when Object Lock keeps it (then the
// backup is skipped).
func (r *Runner) deleteBackup(ctx context.Context, l *lease.Lease, e index.Entry, rep *Report, log logrus.FieldLogger) (bool, error) {
	x := e.BackupIndex
	key := e.ListedKey
	_, err := r.cfg.Bucket.Head(ctx, key)
	existed := err == nil
	if err != nil && !errors.Is(err, bucket.ErrNotFound) {
		return false, fmt.Errorf("delete backup %s: %w", x.BackupID, err)
	}
	if r.cfg.DryRun {
		n := 0
		err := bucket.Walk(ctx, r.cfg.Bucket, strings.TrimSuffix(key, requests.IndexName), func(bucket.ObjectInfo) error { n++; return nil })
		rep.Objects += n
		log.WithField("objects", n).Info("retention would delete this backup (dry run)")
		return existed, err
	}
	if existed {
		if err := r.cfg.Bucket.Delete(ctx, key); err != nil {
			if errors.Is(err, bucket.ErrRetained) {
				o := RetainedObject{Key: key, Until: x.RetainUntil, Err: err.Error()}
				if r.noteRetained(o, l.Now()) {
					rep.Retained = append(rep.Retained, o)
				}
				rep.Skipped[x.BackupID] = "retained by Object Lock: its index could not be deleted"
				return false, nil
			}
			return false, fmt.Errorf("delete backup %s: %w", x.BackupID, err)
		}
		log.WithFields(logrus.Fields{"finished_at": x.FinishedAt, "attempt": x.Attempt}).Info("deleted backup by retention")
	}
	// The backup is gone: the catalog learns it (its listings show it no
	// more); now its objects. Whatever fails here is left to the garbage
	// collector.
	if err := index.Forget(ctx, r.cfg.Bucket, e); err != nil {
		return existed, fmt.Errorf("delete backup %s: %w", x.BackupID, err)
	}
	n, retained, err := r.deleteFolder(ctx, l, strings.TrimSuffix(key, requests.IndexName), x.RetainUntil)
	rep.Retained = append(rep.Retained, retained...)
	if existed {
		n++ // the index
	}
	rep.Objects += n
	if err != nil {
		return existed, fmt.Errorf("delete objects of backup %s: %w", x.BackupID, err)
	}
	return existed, nil
}

// deleteFolder deletes every object under dir, but those Object Lock is
// known to keep. It returns how many it deleted and the objects Object Lock
// kept that this Runner had not reported yet.
func (r *Runner) deleteFolder(ctx context.Context, l *lease.Lease, dir string, until time.Time) (int, []RetainedObject, error) {
	var keys []string
	if err := bucket.Walk(ctx, r.cfg.Bucket, dir, func(o bucket.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		return 0, nil, err
	}
	n := 0
	var retained []RetainedObject
	for _, key := range keys {
		if _, ok := r.retainedUntil(key, l.Now()); ok {
			continue
		}
		if err := context.Cause(ctx); err != nil {
			return n, retained, err
		}
		err := r.cfg.Bucket.Delete(ctx, key)
		switch {
		case err == nil:
			n++
		case errors.Is(err, bucket.ErrRetained):
			o := RetainedObject{Key: key, Until: until, Err: err.Error()}
			if r.noteRetained(o, l.Now()) {
				retained = append(retained, o)
			}
		default:
			return n, retained, err
		}
	}
	return n, retained, nil
}

// noteRetained remembers that Object Lock keeps o.Key, until o.Until when
// that is later than now, else for RetryRetained. It logs and returns true
// unless the object is remembered already.
func (r *Runner) noteRetained(o RetainedObject, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if next, ok := r.retained[o.Key]; ok && now.Before(next) {
		return false
	}
	next := o.Until
	if !next.After(now) {
		next = now.Add(r.cfg.RetryRetained)
	}
	r.retained[o.Key] = next
	r.log.WithFields(logrus.Fields{"key": o.Key, "until": o.Until, "next_try": next}).WithField("reason", o.Err).
		Warn("object lock keeps an object: left in place")
	return true
}

// retainedUntil says whether key is remembered as retained at now, and
// when it will be tried again.
func (r *Runner) retainedUntil(key string, now time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, ok := r.retained[key]
	if ok && !now.Before(next) {
		delete(r.retained, key)
		return time.Time{}, false
	}
	return next, ok
}
