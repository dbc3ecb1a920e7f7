package watcher

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/internal/redact"
	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/requests"
	"github.com/sirupsen/logrus"
)

// RunOnce makes one pass: it lists requests/ oldest first and claims
// what it can up to the concurrency limit, starting each claimed request
// in the background. It returns how many requests it started.
//
// A pass is frugal with calls. When the listing holds something this
// worker could claim, it lists leases/ once too, and claims the requests
// with no lease first, create-only without reading a lease (one call per
// claim); a lease that looks old enough to have expired is read and
// judged (takeover); a lease that is held is read once per write it
// makes, not once per pass. Within a poll interval of its last listing
// (a job just finished) it first claims from what that listing left
// (claimLeftover) and lists only when that claims nothing. Once every lease length it removes leases
// and cancel objects orphaned by a crash (sweep): an idle worker, whose
// last listing was empty, makes that sweep's LIST instead of its listing
// of requests/, so it makes one LIST per poll interval.
func (w *Watcher) RunOnce(ctx context.Context) (int, error) {
	w.pass.Lock()
	defer w.pass.Unlock()
	w.forgetHandedBack()
	now := time.Now()
	sweepDue := w.lastSweep.IsZero() || now.Sub(w.lastSweep) >= w.cfg.Lease
	if !sweepDue {
		if w.free() == 0 {
			// Every slot is busy: a listing could claim nothing (the job
			// that frees a slot wakes the next pass).
			return 0, nil
		}
		if n, ok := w.claimLeftover(ctx, now); ok {
			return n, nil
		}
	}
	if sweepDue && w.quiet && w.Running() == 0 {
		w.lastSweep, w.quiet = now, false
		if err := w.sweep(ctx, nil, nil); err != nil {
			w.log.WithError(err).Warn("sweeping orphaned leases failed")
		}
		return 0, nil
	}
	// leases/ is listed before requests/ when the last listing of
	// requests/ showed some (a busy queue; the sweep's pass too): a
	// request finished between the two listings then shows in neither,
	// its lease being deleted with or after it. Listed after, it would
	// show unleased, and its claim would cost a lease, a GET and a delete
	// for nothing. An idle worker lists requests/ alone, and leases/ only
	// once it sees one.
	var leases map[string]bucket.ObjectInfo
	listLeases := func() error {
		var err error
		if leases, err = w.listLeases(ctx); err != nil {
			return fmt.Errorf("list leases: %w", err)
		}
		return nil
	}
	if !w.quiet || sweepDue {
		if err := listLeases(); err != nil {
			return 0, err
		}
	}
	pending := map[string]bool{}
	var listed []bucket.ObjectInfo
	err := bucket.Walk(ctx, w.cfg.Bucket, requests.RequestsPrefix, func(o bucket.ObjectInfo) error {
		id, ok := requests.IDFromKey(requests.RequestsPrefix, o.Key)
		if !ok {
			if err := w.answerMisnamed(ctx, o.Key); err != nil {
				w.log.WithError(err).WithField("key", o.Key).Warn("answering a misnamed request failed; the next pass tries again")
			}
			return nil
		}
		pending[id] = true
		o.Key = id
		listed = append(listed, o)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list requests: %w", err)
	}
	w.quiet = len(pending) == 0
	// Only a pass with a free slot when it listed claims: one whose slot
	// frees meanwhile (a job finished; it wakes the next pass) knows
	// neither the leases nor the cancel objects.
	canClaim := len(listed) > 0 && w.free() > 0
	if canClaim && leases == nil {
		if err := listLeases(); err != nil {
			return 0, err
		}
	}
	// The cancel objects, when this pass may claim: a claim looks them up
	// here, not with a HEAD per request (nil: it HEADs).
	var cancels map[string]bool
	if canClaim {
		cancels = map[string]bool{}
		err := bucket.Walk(ctx, w.cfg.Bucket, requests.CancelPrefix, func(o bucket.ObjectInfo) error {
			if id, ok := requests.IDFromKey(requests.CancelPrefix, o.Key); ok {
				cancels[id] = true
			}
			return nil
		})
		if err != nil {
			cancels = nil
		}
	}
	if sweepDue {
		w.lastSweep = now
		if err := w.sweep(ctx, pending, leases); err != nil {
			w.log.WithError(err).Warn("sweeping orphaned leases failed")
		}
	}
	if !canClaim {
		w.forgetSeen(leases)
		return 0, nil
	}
	started := 0
	var claimErr error
	order := w.claimOrder(listed, leases, now)
	w.leftover, w.leftoverAt, w.leftoverCancels = nil, now, cancels
	for i, c := range order {
		if w.free() == 0 {
			w.keepLeftover(order[min(len(order), max(i, 4*w.cfg.Concurrency)):])
			break
		}
		if !w.reserve(c.id) {
			continue
		}
		ok, err := w.tryClaim(ctx, c.id, c.size, c.fresh, cancels)
		w.unreserve(c.id)
		if err != nil {
			w.log.WithError(err).WithField("request_id", c.id).Warn("claim failed")
			claimErr = err
		}
		if ok {
			started++
		}
	}
	w.forgetSeen(leases)
	return started, claimErr
}

// leftoverTries is how many of the last listing's requests a pass tries
// without a listing before it lists: each that another worker claimed or
// finished since costs a call or three.
const leftoverTries = 2

// claimLeftover claims, without a listing, from the unleased requests
// the last pass listed and did not try, if that listing is less than a
// poll interval old and this worker has a free slot (a job just
// finished): the listing a new pass would make is almost the same. A
// claim there is as safe as any (create-only, the request read first);
// one that another worker took since fails or finds the request gone. ok
// is false when it claimed nothing: the pass lists as usual.
func (w *Watcher) claimLeftover(ctx context.Context, now time.Time) (int, bool) {
	if len(w.leftover) == 0 || now.Sub(w.leftoverAt) >= w.cfg.Poll || w.free() == 0 {
		return 0, false
	}
	started, tries := 0, 0
	for len(w.leftover) > 0 && tries < leftoverTries && w.free() > 0 {
		c := w.leftover[0]
		w.leftover = w.leftover[1:]
		if !w.reserve(c.id) {
			continue
		}
		tries++
		ok, err := w.tryClaim(ctx, c.id, c.size, true, w.leftoverCancels)
		w.unreserve(c.id)
		if err != nil {
			w.log.WithError(err).WithField("request_id", c.id).Warn("claim failed")
		}
		if ok {
			started++
		}
	}
	return started, started > 0
}

// keepLeftover keeps the unleased requests of rest for claimLeftover,
// in this worker's own order (rank): the oldest few, which every
// worker's pass tries first, are not among them, and workers that claim
// from their leftovers at once rarely pick the same request.
func (w *Watcher) keepLeftover(rest []candidate) {
	for _, c := range rest {
		if c.fresh {
			w.leftover = append(w.leftover, c)
		}
	}
	slices.SortFunc(w.leftover, func(a, b candidate) int { return cmp.Compare(w.rank(a.id), w.rank(b.id)) })
}

// candidate is a listed request a pass may try to claim.
type candidate struct {
	id    string
	size  int64
	fresh bool // no lease was listed: claim create-only, unread
}

// claimOrder says which listed requests a pass tries, in order: first
// those with no lease and those whose lease looks old enough (by this
// worker's clock) to have expired, oldest first, except that the first
// few are tried in an order of this worker's own (a hash of worker and
// id), so that workers listing the same requests rarely race for the same
// one; then the leases this worker has not read since their last write
// (a hand-back, or a lease of another length). A lease read and found
// held is not read again until it is written again or would expire.
func (w *Watcher) claimOrder(listed []bucket.ObjectInfo, leases map[string]bucket.ObjectInfo, now time.Time) []candidate {
	var first, later []candidate
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range listed {
		id := o.Key
		if _, ok := w.running[id]; ok || w.claims[id] {
			continue
		}
		l, held := leases[id]
		switch {
		case !held:
			first = append(first, candidate{id: id, size: o.Size, fresh: true})
		case !l.LastModified.IsZero() && now.Sub(l.LastModified) > w.cfg.Lease:
			first = append(first, candidate{id: id, size: o.Size})
		default:
			if s, ok := w.seen[id]; ok && (s.etag == "" || s.etag == l.ETag) && now.Before(s.until) {
				continue
			}
			later = append(later, candidate{id: id, size: o.Size})
		}
	}
	n := min(len(first), 4*w.cfg.Concurrency)
	slices.SortStableFunc(first[:n], func(a, b candidate) int {
		return cmp.Compare(w.rank(a.id), w.rank(b.id))
	})
	return append(first, later...)
}

// rank is this worker's preference for id among the oldest requests.
func (w *Watcher) rank(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(w.cfg.Worker))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return h.Sum64()
}

// seenLease is a lease this worker found held: it is not read again
// before until unless its ETag changes (etag "" matches any: a lease
// created since a listing cannot expire before MinLength).
type seenLease struct {
	etag  string
	until time.Time
}

// heldSeen records that id's lease was found held.
func (w *Watcher) heldSeen(id string, st *lease.State) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st == nil {
		w.seen[id] = seenLease{until: time.Now().Add(lease.MinLength)}
		return
	}
	if st.Found && st.Held() && !st.ServerTime.IsZero() {
		w.seen[id] = seenLease{etag: st.ETag, until: time.Now().Add(st.Length - st.Age)}
	}
}

// forgetSeen drops what a pass's listing of leases shows is gone.
func (w *Watcher) forgetSeen(leases map[string]bucket.ObjectInfo) {
	if leases == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for id := range w.seen {
		if _, ok := leases[id]; !ok {
			delete(w.seen, id)
		}
	}
}

// free is how many more requests this worker may claim now.
func (w *Watcher) free() int {
	if !w.claiming() {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cfg.Concurrency - len(w.running) - len(w.claims)
}

// ClaimHint claims request id at once if this worker may take more work:
// a notification named it. Like a pass, it claims nothing while shutting
// down, at the concurrency limit, or when id already runs or is being
// claimed here; a request it cannot take now is left for the passes (a
// finished job wakes one). A request that is already gone costs one HEAD
// and no write, so stale, duplicated or foreign hints are cheap.
func (w *Watcher) ClaimHint(ctx context.Context, id string) (bool, error) {
	if !w.reserve(id) {
		return false, nil
	}
	defer w.unreserve(id)
	info, err := w.cfg.Bucket.Head(ctx, requests.RequestKey(id))
	if errors.Is(err, bucket.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("claim hint %s: %w", id, err)
	}
	return w.tryClaim(ctx, id, info.Size, false, nil)
}

// reserve marks id as being claimed if this worker may claim it now.
func (w *Watcher) reserve(id string) bool {
	if !w.claiming() {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.running[id]; ok || w.claims[id] || len(w.running)+len(w.claims) >= w.cfg.Concurrency {
		return false
	}
	if until, ok := w.elsewhere[id]; ok {
		if time.Now().Before(until) {
			return false
		}
		delete(w.elsewhere, id)
	}
	w.claims[id] = true
	return true
}

func (w *Watcher) unreserve(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.claims, id)
}

func (w *Watcher) isRunning(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.running[id]
	return ok
}

// TryClaim tries to claim request id: create its lease, or take over an
// expired one. On success the request runs in the background and
// TryClaim returns true.
//
// Whatever a request holds, it cannot stop the worker or outlive its
// attempts: the attempt limit is checked, and the request's size compared
// with the limit, before its body is read; a request over the limit is
// rejected without being read. A lease over the limit counts as damaged.
func (w *Watcher) TryClaim(ctx context.Context, id string) (bool, error) {
	return w.tryClaim(ctx, id, -1, false, nil)
}

// tryClaim is TryClaim of a request whose size a listing gave (size -1:
// unknown) and, when fresh, whose listing showed no lease: the lease is
// then written create-only without being read first, and the request's
// body is read before its result is looked for (a request finished since
// the listing is gone: its lease was deleted after it). cancels, when
// set, are the ids with a cancel object as a listing of cancel/ made in
// the same pass showed them (a cancel written since is seen at the first
// renewal, as a cancel of a running request is); nil: a HEAD looks.
func (w *Watcher) tryClaim(ctx context.Context, id string, size int64, fresh bool, cancels map[string]bool) (bool, error) {
	log := w.log.WithField("request_id", id)
	c := w.leaseClaim(id)
	c.Fresh = fresh
	l, old, err := lease.Acquire(ctx, c)
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", id, err)
	}
	if l == nil {
		w.heldSeen(id, old)
		return false, nil // held, or another worker won
	}
	if old.Found {
		if old.Damaged {
			log.Warn("lease damaged or over the size limit: took it over as expired")
		}
		log.WithFields(logrus.Fields{"attempt": l.Attempt(), "previous_holder": old.Holder, "age": old.Age.Round(time.Millisecond).String(), "released": old.Released}).Info("took over lease")
	}
	attempt, handbacks := l.Attempt(), l.Handbacks()

	// We hold the lease. Is there still work to do?
	lh := &leaseHolder{w: w, id: id, attempt: attempt, l: l}
	var raw []byte
	if fresh {
		// A new lease: nobody ran this request unless a result exists from
		// an earlier life of the same id. The request's body first: gone
		// means finished since the listing (its lease was deleted after
		// it), and costs no more calls.
		raw, err = w.readRequest(ctx, id, bucket.ObjectInfo{Size: size})
		if errors.Is(err, bucket.ErrNotFound) {
			_ = w.cfg.Bucket.Delete(ctx, requests.LeaseKey(id))
			return false, nil
		}
	}
	if !fresh {
		if done, err := w.finishedBefore(ctx, id, lh); done || err != nil {
			return false, err
		}
	}
	if !fresh {
		// Before reading the request's body: is it still there, has it
		// used up its attempts (an earlier one may have died reading it),
		// and is it small enough to read at all? A listing gave its size.
		rinfo := bucket.ObjectInfo{Size: size}
		if size < 0 {
			rinfo, err = w.cfg.Bucket.Head(ctx, requests.RequestKey(id))
			if errors.Is(err, bucket.ErrNotFound) {
				_ = w.cfg.Bucket.Delete(ctx, requests.LeaseKey(id))
				return false, nil
			}
			if err != nil {
				return false, lh.release(ctx, fmt.Errorf("read request %s: %w", id, err))
			}
		}
		if attempt-handbacks > w.cfg.MaxAttempts {
			msg := fmt.Sprintf("abandoned after %d attempts", attempt-handbacks-1)
			log.Warn(msg)
			w.emit(Event{Type: EventAbandoned, ID: id, Attempt: attempt})
			return false, w.writeResult(ctx, id, w.result(id, requests.StatusFailed, msg, attempt-1, nil), "")
		}
		raw, err = w.readRequest(ctx, id, rinfo)
	}
	var tl *bucket.TooLargeError
	if errors.As(err, &tl) {
		msg := w.tooLarge(tl)
		log.WithFields(logrus.Fields{"size": tl.Size, "limit": tl.Limit}).Warn("rejecting a request over the size limit without reading it")
		return false, w.writeResult(ctx, id, w.result(id, requests.StatusRejected, msg, attempt, nil), "")
	}
	if errors.Is(err, bucket.ErrNotFound) {
		_ = w.cfg.Bucket.Delete(ctx, requests.LeaseKey(id))
		return false, nil
	}
	if err != nil {
		return false, lh.release(ctx, fmt.Errorf("read request %s: %w", id, err))
	}
	req, perr := requests.Parse(raw)
	if perr == nil && req.Cluster == "" {
		req.Cluster = w.cfg.Cluster // the worker's cluster, as its CLI's
	}
	if perr == nil && req.ID != id {
		perr = fmt.Errorf("id: %q does not match the object's name %s", req.ID, requests.RequestKey(id))
	}
	if perr != nil {
		log.WithError(perr).Warn("rejecting malformed request")
		return false, w.writeResult(ctx, id, w.result(id, requests.StatusRejected, "invalid request: "+perr.Error(), attempt, req), "")
	}
	if fresh && req.Kind != requests.KindBackup {
		// A fresh claim of a backup does not look for a result: one can
		// exist only if a finished id was submitted again (client.Submit
		// refuses that except in a race), and then the backup's
		// create-only writes stop it (its first attempt's artifacts, its
		// index) and the create-only result keeps the first. Any other
		// kind acts outside the bucket (a restore): it looks.
		if done, err := w.finishedBefore(ctx, id, lh); done || err != nil {
			return false, err
		}
	}
	if w.hasCancel(ctx, id, cancels) {
		w.sawCancel(id)
		log.Info("request canceled before it started")
		return false, w.writeResult(ctx, id, w.result(id, requests.StatusCanceled, "canceled by request before it started", attempt, req), "")
	}
	// Only now is the claim real: the request is there, unfinished and
	// not canceled.
	source := req.SourceName()
	if attempt == 1 {
		w.emit(Event{Type: EventClaimed, ID: id, Attempt: attempt, Kind: req.Kind, Source: source})
	} else {
		w.emit(Event{Type: EventTakeover, ID: id, Attempt: attempt, Kind: req.Kind, Source: source})
	}
	w.start(req, lh)
	return true, nil
}

// hasCancel says whether request id has a cancel object: in cancels
// when a listing gave them, else by a HEAD.
func (w *Watcher) hasCancel(ctx context.Context, id string, cancels map[string]bool) bool {
	if cancels != nil {
		return cancels[id]
	}
	_, err := w.cfg.Bucket.Head(ctx, requests.CancelKey(id))
	return err == nil
}

// finishedBefore looks for request id's result: there, it was finished
// by an earlier holder that died while cleaning up (or an earlier life
// of the id), and the rest of the cleanup is done.
func (w *Watcher) finishedBefore(ctx context.Context, id string, lh *leaseHolder) (bool, error) {
	_, err := w.cfg.Bucket.Head(ctx, requests.ResultKey(id))
	switch {
	case err == nil:
		w.cleanup(ctx, id, true)
		return true, nil
	case errors.Is(err, bucket.ErrNotFound):
		return false, nil
	}
	return true, lh.release(ctx, fmt.Errorf("check result %s: %w", id, err))
}

// answerMisnamed answers an object under requests/ whose name is not
// <id>.json with a valid id, once: a rejected result under the id
// requests.MisnamedID derives from its key (create-only, so one worker
// writes it), which capsule tail and status show. The object itself is
// left for its writer to rename or delete, and later passes skip it
// without a request.
func (w *Watcher) answerMisnamed(ctx context.Context, key string) error {
	w.mu.Lock()
	done := w.answered[key]
	w.mu.Unlock()
	if done {
		return nil
	}
	id := requests.MisnamedID(key)
	_, err := w.cfg.Bucket.Head(ctx, requests.ResultKey(id))
	if errors.Is(err, bucket.ErrNotFound) {
		msg := fmt.Sprintf("invalid request: the object %s is not named requests/<id>.json with a valid id (1-128 of [a-z0-9._-], starting with a letter or digit); it was not read: upload it again as requests/<its id>.json", key)
		r := w.result(id, requests.StatusRejected, msg, 0, nil)
		_, err = bucket.PutBytes(ctx, w.cfg.Bucket, requests.ResultKey(id), marshal(redactResult(r)), bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json"})
		if err == nil {
			w.log.WithFields(logrus.Fields{"key": key, "request_id": id}).Warn("rejected an object under requests/ whose name is not a valid id; it is left alone from now on")
			w.emit(Event{Type: EventFinished, ID: id, Status: requests.StatusRejected, Finished: r.FinishedAt})
		}
		if errors.Is(err, bucket.ErrPreconditionFailed) {
			err = nil // another worker answered it
		}
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.answered[key] = true
	w.mu.Unlock()
	return nil
}

// readRequest reads request id's body through the size limit, refusing it
// from the size its HEAD reported before any GET.
func (w *Watcher) readRequest(ctx context.Context, id string, info bucket.ObjectInfo) ([]byte, error) {
	key := requests.RequestKey(id)
	if info.Size > w.cfg.MaxControlObject {
		return nil, &bucket.TooLargeError{Key: key, Size: info.Size, Limit: w.cfg.MaxControlObject}
	}
	raw, _, err := bucket.GetBytesLimit(ctx, w.cfg.Bucket, key, w.cfg.MaxControlObject)
	return raw, err
}

// tooLarge is the rejection of a request over the size limit.
func (w *Watcher) tooLarge(tl *bucket.TooLargeError) string {
	size := fmt.Sprintf("%d bytes", tl.Size)
	if tl.SizeUnknown {
		size = fmt.Sprintf("more than %d bytes", tl.Size-1)
	}
	return fmt.Sprintf("invalid request: request object %s is %s, over the %s limit of control objects (worker.maxControlObject); it was not read",
		tl.Key, size, bucket.FormatSize(tl.Limit))
}

// leaseData is what a request lease's writes carry beside the protocol's
// fields.
type leaseData struct {
	progress  *requests.Progress
	finishing bool
}

// leaseClaim is the claim of request id's lease, written as a
// requests.Lease. A damaged lease is judged by this worker's length.
func (w *Watcher) leaseClaim(id string) lease.Claim {
	return lease.Claim{
		Bucket: w.cfg.Bucket, Key: requests.LeaseKey(id), Holder: w.cfg.Worker, Length: w.cfg.Lease,
		Limit: w.cfg.MaxControlObject,
		Encode: func(wr lease.Write) []byte {
			d, _ := wr.Data.(leaseData)
			return marshal(&requests.Lease{
				APIVersion: requests.APIVersion, Kind: "Lease", ID: id, Holder: wr.Holder,
				Token: wr.Token, Attempt: wr.Attempt, Handbacks: wr.Handbacks, Renewals: wr.Renewals,
				DurationMillis: wr.Length.Milliseconds(), AcquiredAt: wr.AcquiredAt, RenewedAt: wr.At,
				Progress: d.progress, Released: wr.Released, Finishing: d.finishing,
			})
		},
	}
}

func (w *Watcher) result(id string, status requests.Status, msg string, attempts int, req *requests.Request) *requests.Result {
	r := &requests.Result{
		APIVersion: requests.APIVersion, Kind: "Result", ID: id, Status: status, Error: msg,
		Attempts: attempts, Worker: w.cfg.Worker, FinishedAt: time.Now().UTC(),
	}
	if req != nil {
		req.Describe(r)
	}
	return r
}

// writeResult writes a result create-only while holding the lease, then
// removes the request, its cancel object and the lease. engine is the
// run's engine, if it got that far.
func (w *Watcher) writeResult(ctx context.Context, id string, r *requests.Result, engine string) error {
	r = redactResult(r)
	_, err := bucket.PutBytes(ctx, w.cfg.Bucket, requests.ResultKey(id), marshal(r), bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json"})
	if err != nil && !errors.Is(err, bucket.ErrPreconditionFailed) {
		return fmt.Errorf("write result %s: %w", id, err)
	}
	w.cleanup(ctx, id, false)
	ev := Event{
		Type: EventFinished, ID: id, Attempt: r.Attempts, Status: r.Status, Kind: r.RequestKind,
		Source: r.Source, Cluster: r.Cluster, Engine: engine, Bytes: r.Bytes, StoredBytes: r.StoredBytes, Finished: r.FinishedAt,
	}
	if !r.StartedAt.IsZero() && r.FinishedAt.After(r.StartedAt) {
		ev.Duration = r.FinishedAt.Sub(r.StartedAt)
	}
	if r.Error != "" {
		ev.Err = errors.New(r.Error)
	}
	w.emit(ev)
	return nil
}

// redactResult returns a copy of r with what looks like a credential
// masked: every result passes here on its way to the bucket, and its
// message may quote a request's fields (a source of
// postgres://user:password@host) or a driver's error.
func redactResult(r *requests.Result) *requests.Result {
	c := *r
	c.Error, c.Source, c.Cluster, c.BackupID = redact.String(r.Error), redact.String(r.Source), redact.String(r.Cluster), redact.String(r.BackupID)
	if r.Details != nil {
		// Through JSON, so that the details keep their shape (the
		// schema's) whatever Go types the engine used.
		var generic map[string]any
		raw, err := json.Marshal(r.Details)
		if err == nil {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			err = dec.Decode(&generic)
		}
		if err == nil {
			c.Details, _ = redact.Field("details", generic).(map[string]any)
		} else {
			c.Details = map[string]any{"error": "details could not be encoded"}
		}
	}
	return &c
}

// cleanup removes a finished request's control objects: the request,
// its cancel object when one was seen (all: whenever this worker cannot
// know, as after an earlier holder's finish), and the lease, in one call
// where the bucket deletes in batches (S3 DeleteObjects), else one by one
// with the lease last. A batch promises no order, and a key can fail
// alone: a request left behind while its lease went (deleted once more
// by itself, and failed again) is claimed afresh by a later pass, which
// finds it finished (a restore or verification looks for the result; a
// backup's create-only artifacts, index and result stop a second run's
// commit). A cancel object written after the last look is a sweep's.
func (w *Watcher) cleanup(ctx context.Context, id string, all bool) {
	w.mu.Lock()
	seen := w.canceled[id]
	delete(w.canceled, id)
	w.mu.Unlock()
	keys := []string{requests.RequestKey(id)}
	if all || seen {
		keys = append(keys, requests.CancelKey(id))
	}
	if err := bucket.DeleteKeys(ctx, w.cfg.Bucket, append(keys, requests.LeaseKey(id))...); err != nil {
		w.log.WithError(err).WithField("request_id", id).Warn("cleanup failed; the next pass finishes it")
	}
}

// sawCancel notes that request id has a cancel object, for its cleanup.
func (w *Watcher) sawCancel(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.canceled[id] = true
}

// listLeases lists leases/: the lease objects by request id.
func (w *Watcher) listLeases(ctx context.Context) (map[string]bucket.ObjectInfo, error) {
	leases := map[string]bucket.ObjectInfo{}
	err := bucket.Walk(ctx, w.cfg.Bucket, requests.LeasesPrefix, func(o bucket.ObjectInfo) error {
		if id, ok := requests.IDFromKey(requests.LeasesPrefix, o.Key); ok {
			leases[id] = o
		}
		return nil
	})
	return leases, err
}

// sweep removes what a crash or a late client left behind, by turns:
// expired leases whose request is gone (a holder that died after
// deleting the request and before deleting the lease), and cancel
// objects older than a lease whose request is gone (written after the
// holder's last look). pending are the ids of the pass's listing (nil:
// none made), leases its listing of leases/ (nil: none made).
func (w *Watcher) sweep(ctx context.Context, pending map[string]bool, leases map[string]bucket.ObjectInfo) error {
	w.sweeps++
	if w.sweeps%2 == 0 {
		return w.sweepCancels(ctx, pending)
	}
	if leases == nil {
		var err error
		if leases, err = w.listLeases(ctx); err != nil {
			return err
		}
	}
	for id, o := range leases {
		if pending[id] || w.isRunning(id) {
			continue
		}
		// The listing may predate a new request: look again.
		if _, err := w.cfg.Bucket.Head(ctx, requests.RequestKey(id)); !errors.Is(err, bucket.ErrNotFound) {
			continue
		}
		st, err := lease.Read(ctx, w.cfg.Bucket, o.Key, w.cfg.MaxControlObject, w.cfg.Lease)
		// A damaged lease of no request protects nothing: it goes now.
		if err != nil || (!st.Damaged && st.Held()) {
			continue
		}
		w.log.WithField("request_id", id).Info("removing an expired lease whose request is gone")
		if err := w.cfg.Bucket.Delete(ctx, o.Key); err != nil {
			return err
		}
	}
	return nil
}

// sweepCancels deletes cancel objects older than a lease whose request
// is gone.
func (w *Watcher) sweepCancels(ctx context.Context, pending map[string]bool) error {
	now := time.Now()
	return bucket.Walk(ctx, w.cfg.Bucket, requests.CancelPrefix, func(o bucket.ObjectInfo) error {
		id, ok := requests.IDFromKey(requests.CancelPrefix, o.Key)
		if !ok || pending[id] || w.isRunning(id) || now.Sub(o.LastModified) < w.cfg.Lease {
			return nil
		}
		if _, err := w.cfg.Bucket.Head(ctx, requests.RequestKey(id)); !errors.Is(err, bucket.ErrNotFound) {
			return nil
		}
		return w.cfg.Bucket.Delete(ctx, o.Key)
	})
}

// leaseHolder is a request's held lease.
type leaseHolder struct {
	w       *Watcher
	id      string
	attempt int
	l       *lease.Lease
}

// release hands the lease back so another worker takes over at once, and
// returns cause.
func (h *leaseHolder) release(ctx context.Context, cause error) error {
	if err := h.l.Release(ctx, leaseData{}); err != nil && !errors.Is(err, lease.ErrLost) {
		h.w.log.WithError(err).WithField("request_id", h.id).Warn("could not hand the lease back; it expires instead")
	} else if err == nil {
		h.w.emit(Event{Type: EventReleased, ID: h.id, Attempt: h.attempt})
	}
	return cause
}

func (w *Watcher) start(req *requests.Request, lh *leaseHolder) {
	ctx, cancel := context.WithCancelCause(w.jobsCtx)
	j := &job{id: req.ID, attempt: lh.attempt, cancel: cancel, done: make(chan struct{})}
	w.mu.Lock()
	w.running[req.ID] = j
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() {
			w.mu.Lock()
			delete(w.running, req.ID)
			delete(w.canceled, req.ID) // a lost or handed-back run's
			w.mu.Unlock()
			close(j.done)
			w.Wake() // a slot is free
		}()
		w.runJob(ctx, cancel, req, lh)
	}()
}

func (w *Watcher) runJob(ctx context.Context, cancel context.CancelCauseFunc, req *requests.Request, lh *leaseHolder) {
	defer cancel(nil)
	log := w.log.WithFields(logrus.Fields{"request_id": req.ID, "attempt": lh.attempt, "kind": req.Kind})
	log.Info("running request")
	tracker := executor.NewTracker()
	// A restore confirms the lease right before its swap, through the
	// same write path as the renewals.
	tracker.SetFence(func(fctx context.Context) error {
		return w.fence(fctx, cancel, lh, tracker, log)
	})
	stopRenew := make(chan struct{})
	renewDone := make(chan struct{})
	go func() {
		defer close(renewDone)
		w.renewLoop(ctx, cancel, lh, tracker, stopRenew, log)
	}()
	out := w.cfg.Runner.Run(ctx, req, lh.attempt, tracker)
	close(stopRenew)
	<-renewDone

	// The run is over; decide what to write with a context of our own:
	// the job's may be canceled by a cancel request.
	fctx, fcancel := context.WithTimeout(context.Background(), w.cfg.Lease)
	defer fcancel()
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, ErrLeaseLost):
		log.WithError(cause).Warn("lease lost: writing nothing more")
		return
	case errors.Is(cause, ErrShutdown):
		_ = lh.release(fctx, nil)
		log.Info("handed the lease back at shutdown")
		return
	case out.HandBack:
		// Another client of this bucket serves the request's source:
		// hand it back (not counted as an attempt) and leave it to that
		// client's watcher for a while.
		w.mu.Lock()
		w.elsewhere[req.ID] = time.Now().Add(handBackPause(w.cfg.Poll))
		w.mu.Unlock()
		_ = lh.release(fctx, nil)
		return
	}
	w.finish(req, lh, tracker, out, log)
}

// finish commits a finished run under its lease: a renewal marked
// finishing, then the index or verification record (Commit), then the
// result. A transient failure of any step is tried again, after another
// renewal, until the run's finishing budget (finishBudget) is spent: a
// flaky bucket must not throw a finished run away, since the next attempt
// would run it all again. Each round starts with a renewal, so every write
// happens under a lease confirmed less than a lease length ago; a lost
// lease stops it at once, and a renewal that cannot be confirmed before
// the lease would expire hands the request to the next attempt. Index and
// result are create-only, so a write that was applied though its answer
// was lost is found again, never made twice.
func (w *Watcher) finish(req *requests.Request, lh *leaseHolder, tracker *executor.Tracker, out *executor.Outcome, log logrus.FieldLogger) {
	budget := time.Now().Add(finishBudget(w.cfg.Lease))
	committed := false
	var lastErr error
	for round := 0; ; round++ {
		if round > 0 {
			if time.Now().After(budget) || !lh.l.Valid() || w.jobsCtx.Err() != nil {
				break // out of time, out of lease, or shutting down
			}
			log.WithError(lastErr).WithField("round", round).Warn("finishing failed; renewing and trying again")
			time.Sleep(min(w.cfg.Lease/6, 100*time.Millisecond<<min(round, 5)))
		}
		// Each round's writes must be done well within the lease its
		// renewal confirms.
		fctx, fcancel := context.WithTimeout(context.Background(), w.cfg.Lease*2/3)
		var err error
		if round > 0 || lh.l.SinceWrite() >= w.cfg.Lease/6 {
			err = lh.l.Renew(fctx, leaseData{progress: ptr(tracker.Snapshot()), finishing: true})
		}
		// else: the lease was confirmed less than a sixth of its length
		// ago (a short run), so it is still surely this holder's while
		// the writes below run (they end within two thirds of it): the
		// fence of lease.Valid, without the call.
		if errors.Is(err, lease.ErrLost) {
			fcancel()
			w.emit(Event{Type: EventLost, ID: req.ID, Attempt: lh.attempt})
			log.Warn("lease lost before commit: writing nothing more")
			return
		}
		if err != nil {
			fcancel()
			lastErr = fmt.Errorf("final renewal: %w", err)
			continue
		}
		if !committed {
			err := w.cfg.Runner.Commit(fctx, out)
			if errors.Is(err, executor.ErrConflict) {
				out.Result.Status, out.Result.Error = requests.StatusFailed, err.Error()
			} else if err != nil {
				fcancel()
				lastErr = fmt.Errorf("commit: %w", err)
				continue
			}
			committed = true
		}
		err = w.writeResult(fctx, req.ID, &out.Result, out.Engine)
		fcancel()
		if err != nil {
			lastErr = err
			continue
		}
		log.WithField("status", out.Result.Status).Info("request finished")
		return
	}
	rctx, rcancel := context.WithTimeout(context.Background(), w.cfg.Lease)
	defer rcancel()
	if committed && w.ownResult(rctx, req.ID, &out.Result) {
		// The last write of the result was applied though its answer was
		// lost (a timeout, a reset after the server took it): the request
		// is finished, by this attempt.
		w.cleanup(rctx, req.ID, false)
		log.WithFields(logrus.Fields{"status": out.Result.Status, "answer_lost": fmt.Sprint(lastErr)}).Info("request finished")
		return
	}
	log.WithError(lastErr).Warn("could not finish: handing the request to the next attempt")
	_ = lh.release(rctx, nil)
}

// ownResult says whether the request's result in the bucket is the one
// this attempt wrote (same worker, same attempt).
func (w *Watcher) ownResult(ctx context.Context, id string, mine *requests.Result) bool {
	raw, _, err := bucket.GetBytesLimit(ctx, w.cfg.Bucket, requests.ResultKey(id), w.cfg.MaxControlObject)
	if err != nil {
		return false
	}
	var r requests.Result
	if json.Unmarshal(raw, &r) != nil {
		return false
	}
	return r.Worker == mine.Worker && r.Attempts == mine.Attempts && r.Status == mine.Status
}

// finishBudget is how long a finished run keeps trying to commit before
// it hands the request on: many of the bucket's own retry rounds.
func finishBudget(lease time.Duration) time.Duration { return max(5*lease, time.Minute) }

// fence renews the lease now, with If-Match on the holder's last write
// (the renewals' write, under the holder's mutex): a restore calls it
// immediately before it swaps, so that a worker that was paused past its
// lease and woke after another worker took the request over cannot swap.
// A 412 means the lease is lost: the job is canceled with ErrLeaseLost,
// as the renewal loop would, and the error returned. Any other failure
// is returned too: the lease is not confirmed, so the swap must not
// happen; the renewal loop decides about the lease.
func (w *Watcher) fence(ctx context.Context, cancel context.CancelCauseFunc, lh *leaseHolder, tracker *executor.Tracker, log logrus.FieldLogger) error {
	err := lh.l.Renew(ctx, leaseData{progress: ptr(tracker.Snapshot())})
	switch {
	case err == nil:
		w.emit(Event{Type: EventRenewed, ID: lh.id, Attempt: lh.attempt})
		return nil
	case errors.Is(err, lease.ErrLost):
		w.emit(Event{Type: EventLost, ID: lh.id, Attempt: lh.attempt})
		lost := fmt.Errorf("%w: another worker took it over before the swap", ErrLeaseLost)
		log.Warn("lease lost before the swap: not swapping")
		cancel(lost)
		return lost
	default:
		return fmt.Errorf("before the swap: %w", err)
	}
}

// renewLoop renews the lease every third of its length, checks for a
// cancel object, and cancels the job when the lease is lost or cannot be
// confirmed before it would expire.
func (w *Watcher) renewLoop(ctx context.Context, cancel context.CancelCauseFunc, lh *leaseHolder, tracker *executor.Tracker, stop <-chan struct{}, log logrus.FieldLogger) {
	err := lh.l.Keep(ctx, lease.Keeping{
		Stop: stop,
		Before: func(ctx context.Context) (any, error) {
			if _, err := w.cfg.Bucket.Head(ctx, requests.CancelKey(lh.id)); err == nil {
				w.sawCancel(lh.id)
				return nil, executor.ErrCanceled
			}
			return leaseData{progress: ptr(tracker.Snapshot())}, nil
		},
		Renewed: func() { w.emit(Event{Type: EventRenewed, ID: lh.id, Attempt: lh.attempt}) },
		Failed: func(err error, since time.Duration) {
			log.WithError(err).WithField("since_last_renewal", since.Round(time.Millisecond).String()).Warn("lease renewal failed")
		},
	})
	switch {
	case errors.Is(err, executor.ErrCanceled):
		log.Info("cancel requested")
		cancel(executor.ErrCanceled)
	case err != nil:
		w.emit(Event{Type: EventLost, ID: lh.id, Attempt: lh.attempt})
		cancel(err)
	}
}

func ptr[T any](v T) *T { return &v }

// forgetHandedBack drops the handed-back requests whose pause is over.
func (w *Watcher) forgetHandedBack() {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	for id, until := range w.elsewhere {
		if !now.Before(until) {
			delete(w.elsewhere, id)
		}
	}
}

// handBackPause is how long a watcher leaves a request it handed back to
// another client of its bucket: a few passes, so that client's watcher
// claims it first.
func handBackPause(poll time.Duration) time.Duration { return max(3*poll, 10*time.Second) }
