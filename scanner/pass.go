package scanner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
	"github.com/cnvrg/capsule/schedule"
	"github.com/sirupsen/logrus"
)

// planState is what one replica remembers about a plan between passes.
// Losing it (a restart) costs a few HEADs: everything is in the bucket.
type planState struct {
	// slotID is the request of the latest slot known to exist, slotAt
	// that slot's start.
	slotID string
	slotAt time.Time
	// pending are backups whose end this replica waits for, to run
	// verification and retention after each; by when they were seen.
	pending map[string]time.Time
	// verifyID is the latest periodic verification known to exist.
	verifyID string
}

// pendingFor is how long a replica waits for a backup's end before it
// forgets it (a request lost with the bucket's data, say).
const pendingFor = 48 * time.Hour

type retentionRunner struct {
	b bucket.Bucket
	r *retention.Runner
}

// verifyPlan names a plan's verification requests (schedule.VerifyPlan).
func verifyPlan(plan string) string { return schedule.VerifyPlan(plan) }

// pass runs every plan's schedule once at now and returns when the next
// pass is due: the earliest next slot, or now+Tick.
func (s *Scanner) pass(ctx context.Context, now time.Time) time.Time {
	s.mu.RLock()
	snap := s.snap
	s.mu.RUnlock()
	next := now.Add(s.cfg.Tick)
	live := map[string]bool{}
	for _, p := range snap.plans {
		live[p.Name] = true
		b := snap.buckets[p.Bucket.Key()]
		if b == nil {
			continue
		}
		st := s.state[p.Name]
		if st == nil {
			st = &planState{pending: map[string]time.Time{}}
			s.state[p.Name] = st
		}
		s.runPlan(ctx, b, p, st, now)
		if n := p.Schedule.Next(now); !n.IsZero() && n.Before(next) {
			next = n
		}
		if p.Verify != nil && p.Verify.Schedule != nil {
			if n := p.Verify.Schedule.Next(now); !n.IsZero() && n.Before(next) {
				next = n
			}
		}
	}
	for name := range s.state {
		if !live[name] {
			delete(s.state, name) // the plan is gone: its schedule stops
		}
	}
	for key := range s.retention {
		if snap.buckets[key] == nil {
			delete(s.retention, key)
		}
	}
	return next
}

func (s *Scanner) runPlan(ctx context.Context, b bucket.Bucket, p Plan, st *planState, now time.Time) {
	log := s.log.WithFields(logrus.Fields{"plan": p.Name, "source": p.Name})
	slot := p.Schedule.Slot(now)
	if slot.IsZero() {
		return
	}
	id := requests.SlotID(p.Name, slot)
	if st.slotID != id {
		// Only the current slot is ever submitted: a slot missed while no
		// replica ran is caught up once, by this one.
		if s.ensureBackup(ctx, b, p, id, log) {
			s.reportMissed(ctx, b, p, st, slot, log)
			st.slotID, st.slotAt, st.pending[id] = id, slot, now
		}
	}
	// Oldest first: each success is followed by its own retention run.
	ids := make([]string, 0, len(st.pending))
	for pid, seen := range st.pending {
		if now.Sub(seen) > pendingFor {
			log.WithField("request_id", pid).Warn("the backup never ended; no longer waiting for it")
			s.emit(Event{Type: EventMissed, Plan: p.Name, ID: pid, Kind: requests.KindBackup,
				Err: fmt.Errorf("the scheduled backup did not end within %s of its submission", pendingFor)})
			delete(st.pending, pid)
			continue
		}
		ids = append(ids, pid)
	}
	sort.Strings(ids)
	for _, pid := range ids {
		if s.checkBackup(ctx, b, p, pid, log) {
			delete(st.pending, pid)
		}
	}
	if len(st.pending) == 0 && p.Verify != nil && p.Verify.Schedule != nil {
		s.periodicVerify(ctx, b, p, st, now, log)
	}
}

// reportMissed emits EventMissed when this replica saw an earlier slot of
// p and the slot just before the current one (slot) got no backup at all:
// no replica submitted it while it was current (they were all down, or a
// pass took longer than the period). Only the latest missed slot is
// named; the current slot's backup catches up.
func (s *Scanner) reportMissed(ctx context.Context, b bucket.Bucket, p Plan, st *planState, slot time.Time, log logrus.FieldLogger) {
	if st.slotID == "" {
		return
	}
	prev := p.Schedule.Slot(slot.Add(-time.Nanosecond))
	if prev.IsZero() || !prev.After(st.slotAt) {
		return
	}
	prevID := requests.SlotID(p.Name, prev)
	for _, key := range []string{requests.RequestKey(prevID), requests.ResultKey(prevID), requests.IndexKey(p.Cluster, p.Name, prevID)} {
		if _, err := b.Head(ctx, key); !errors.Is(err, bucket.ErrNotFound) {
			return // it exists, or the bucket cannot tell: no alarm
		}
	}
	log.WithFields(logrus.Fields{"slot": prev.Format(time.RFC3339), "request_id": prevID}).Warn("a scheduled backup was missed: no backup was submitted in its slot")
	s.emit(Event{Type: EventMissed, Plan: p.Name, ID: prevID, Kind: requests.KindBackup,
		Err: fmt.Errorf("no backup was submitted in the slot that started %s (schedule %s)", prev.Format(time.RFC3339), p.Schedule)})
}

// ensureBackup makes sure the slot's request exists (or ran), writing it
// create-only when it does not. It reports whether it now exists.
func (s *Scanner) ensureBackup(ctx context.Context, b bucket.Bucket, p Plan, id string, log logrus.FieldLogger) bool {
	log = log.WithField("request_id", id)
	req := &requests.Request{Kind: requests.KindBackup, ID: id, Cluster: p.Cluster, Source: p.Name, Plan: p.Name}
	wrote, err := schedule.Submit(ctx, b, req, requests.IndexKey(p.Cluster, p.Name, id))
	switch {
	case err != nil:
		log.WithError(err).Warn("cannot submit the scheduled backup; will retry")
		return false
	case wrote:
		log.WithField("engine", p.Engine).Info("scheduled backup submitted")
		s.emit(Event{Type: EventSubmitted, Plan: p.Name, ID: id, Kind: requests.KindBackup})
	default:
		log.Debug("the slot's backup was already submitted")
		s.emit(Event{Type: EventExists, Plan: p.Name, ID: id, Kind: requests.KindBackup})
	}
	return true
}

// checkBackup looks for the end of a pending backup; after a success it
// schedules a verification (every N backups) and applies retention. It
// reports whether the backup needs no more looking after.
func (s *Scanner) checkBackup(ctx context.Context, b bucket.Bucket, p Plan, id string, log logrus.FieldLogger) bool {
	log = log.WithField("request_id", id)
	status, err := s.resultStatus(ctx, b, p, id)
	if err != nil {
		log.WithError(err).Warn("cannot read the backup's result; will retry")
		return false
	}
	if status == "" {
		return false // not ended yet
	}
	if status != requests.StatusSucceeded {
		log.WithField("status", status).Warn("scheduled backup did not succeed; retention waits for a successful one")
		s.emit(Event{Type: EventBackupEnded, Plan: p.Name, ID: id, Status: status})
		return true
	}
	s.emit(Event{Type: EventBackupEnded, Plan: p.Name, ID: id, Status: status})
	// Verification is decided before retention, which may delete the
	// backups that tell when the last verification was.
	if p.Verify != nil && p.Verify.Every > 0 {
		if err := s.verifyEvery(ctx, b, p, log); err != nil {
			log.WithError(err).Warn("cannot schedule the verification; will retry")
			return false
		}
	}
	rep, err := s.applyRetention(ctx, b, p)
	if err != nil {
		log.WithError(err).Warn("retention failed; will retry")
		s.emit(Event{Type: EventRetention, Plan: p.Name, ID: id, Rotation: p.Rotation, Retention: rep, Err: err})
		return false
	}
	if len(rep.Deleted) > 0 {
		log.WithFields(logrus.Fields{"deleted": rep.Deleted, "rotation": p.Rotation}).Info("retention deleted old backups")
	}
	s.emit(Event{Type: EventRetention, Plan: p.Name, ID: id, Rotation: p.Rotation, Retention: rep})
	return true
}

// resultStatus returns how request id ended, or "" while it has not.
func (s *Scanner) resultStatus(ctx context.Context, b bucket.Bucket, p Plan, id string) (requests.Status, error) {
	data, _, err := bucket.GetBytesLimit(ctx, b, requests.ResultKey(id), requests.DefaultMaxControlObject)
	if err == nil {
		var r requests.Result
		if err := json.Unmarshal(data, &r); err != nil {
			return "", err
		}
		if !r.Status.Ended() {
			return "", nil
		}
		return r.Status, nil
	}
	if !errors.Is(err, bucket.ErrNotFound) {
		return "", err
	}
	// A committed index means the backup succeeded, even when its result
	// was cleaned up since.
	if _, err := b.Head(ctx, requests.IndexKey(p.Cluster, p.Name, id)); err == nil {
		if _, err := b.Head(ctx, requests.RequestKey(id)); errors.Is(err, bucket.ErrNotFound) {
			return requests.StatusSucceeded, nil
		}
	}
	return "", nil
}

func (s *Scanner) applyRetention(ctx context.Context, b bucket.Bucket, p Plan) (*retention.Report, error) {
	key := p.Bucket.Key()
	rr := s.retention[key]
	if rr == nil || rr.b != b {
		r, err := retention.New(retention.Config{Bucket: b, Holder: s.cfg.Holder, Lease: s.cfg.RetentionLease, Log: s.cfg.Log, Damaged: s.cfg.Damaged, WAL: pitr.PruneWAL, Trust: s.cfg.Trust})
		if err != nil {
			return nil, err
		}
		rr = &retentionRunner{b: b, r: r}
		s.retention[key] = rr
	}
	return rr.r.Apply(ctx, retention.Policy{Cluster: p.Cluster, Source: p.Name, Plan: p.Name, Keep: p.Rotation})
}

// planBackups lists the plan's successful backups that trust believes,
// newest first: a forged backup is never the one verified.
func planBackups(ctx context.Context, b bucket.Reader, p Plan, trust *index.Trust) ([]index.Entry, error) {
	all, err := index.List(ctx, b, index.Filter{Cluster: p.Cluster, Source: p.Name, Trust: trust})
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, e := range all {
		if e.Plan == p.Name && e.Status == requests.StatusSucceeded && e.Trusted() {
			out = append(out, e)
		}
	}
	// Newest by slot, not by finish: two slots' backups can finish in
	// the other order, and "every N backups" counts slots.
	slices.SortStableFunc(out, func(a, b index.Entry) int {
		sa, oka := backupSlot(a.BackupID)
		sb, okb := backupSlot(b.BackupID)
		if !oka || !okb {
			return 0
		}
		return sb.Compare(sa)
	})
	return out, nil
}

// backupSlot returns the slot a scheduled backup's id names.
func backupSlot(id string) (time.Time, bool) { return requests.SlotOf(id) }

// verifyEvery submits a verification of the newest backup when none of
// the plan's newest Every backups is verified or being verified. Every
// replica decides the same from the bucket, and the request's id is derived
// from the backup's slot, so only one request is written.
func (s *Scanner) verifyEvery(ctx context.Context, b bucket.Bucket, p Plan, log logrus.FieldLogger) error {
	entries, err := planBackups(ctx, b, p, s.cfg.Trust)
	if err != nil || len(entries) == 0 {
		return err
	}
	window := entries[:min(p.Verify.Every, len(entries))]
	ids := make([]string, len(window))
	for i, e := range window {
		if e.Verification != nil {
			return nil
		}
		slot, ok := backupSlot(e.BackupID)
		if !ok {
			return nil
		}
		ids[i] = requests.SlotID(verifyPlan(p.Name), slot)
		for _, key := range []string{requests.RequestKey(ids[i]), requests.ResultKey(ids[i])} {
			if _, err := b.Head(ctx, key); err == nil {
				return nil // being verified, or verified and recorded
			} else if !errors.Is(err, bucket.ErrNotFound) {
				return err
			}
		}
	}
	return s.submitVerify(ctx, b, p, ids[0], window[0].BackupID, log)
}

// periodicVerify submits, once per verification slot, a verification of
// the plan's newest backup.
func (s *Scanner) periodicVerify(ctx context.Context, b bucket.Bucket, p Plan, st *planState, now time.Time, log logrus.FieldLogger) {
	slot := p.Verify.Schedule.Slot(now)
	if slot.IsZero() {
		return
	}
	id := requests.SlotID(verifyPlan(p.Name), slot)
	if st.verifyID == id {
		return
	}
	if _, err := b.Head(ctx, requests.ResultKey(id)); err == nil {
		st.verifyID = id
		return
	}
	entries, err := planBackups(ctx, b, p, s.cfg.Trust)
	if err != nil {
		log.WithError(err).Warn("cannot list the plan's backups; will retry")
		return
	}
	if len(entries) == 0 {
		return // nothing to verify yet; the next successful backup retries
	}
	if err := s.submitVerify(ctx, b, p, id, entries[0].BackupID, log); err == nil {
		st.verifyID = id
	}
}

func (s *Scanner) submitVerify(ctx context.Context, b bucket.Bucket, p Plan, id, backupID string, log logrus.FieldLogger) error {
	log = log.WithFields(logrus.Fields{"request_id": id, "backup_id": backupID})
	req := &requests.Request{Kind: requests.KindVerify, ID: id, Cluster: p.Cluster, BackupID: backupID, Plan: p.Name}
	wrote, err := schedule.Submit(ctx, b, req, "")
	switch {
	case err != nil:
		log.WithError(err).Warn("cannot submit the scheduled verification; will retry")
		return err
	case wrote:
		log.Info("scheduled verification submitted")
		s.emit(Event{Type: EventSubmitted, Plan: p.Name, ID: id, Kind: requests.KindVerify})
	default:
		s.emit(Event{Type: EventExists, Plan: p.Name, ID: id, Kind: requests.KindVerify})
	}
	return nil
}
