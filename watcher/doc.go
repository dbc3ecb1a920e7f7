// Package watcher finds pending requests, claims them, and runs them
// under a renewed lease. The claim protocol itself (create-only claim,
// If-Match renewal, expiry by the bucket's clock, takeover as attempt
// n+1, hand-back, fencing) is the lease package's; its doc describes it.
// The watcher holds one lease per request, leases/<id>.json, written as a
// requests.Lease, and adds what a request needs:
//
//   - RunOnce lists requests/ (oldest first: ids are time-ordered) and,
//     when it could claim one, leases/ and cancel/ once each, and claims
//     what it can (lease.Acquire). While the queue is busy (the last
//     listing of requests/ showed some) it lists leases/ before
//     requests/: a request finished between the two listings then shows
//     in neither, where listed the other way it would show unleased and
//     be claimed in vain (three calls). A request with no listed lease is claimed
//     create-only without reading a lease first (lease.Claim.Fresh: one
//     call; a 412 means another worker holds it now); the oldest few are
//     tried in an order of each worker's own (a hash of worker and id)
//     so that workers rarely race for one. A listed lease that looks old
//     enough to have expired is read and judged by the bucket's clock; a
//     lease found held is not read again until it is written again or
//     due to expire. Past MaxAttempts (hand-backs at shutdown not
//     counted) a request ends failed ("abandoned after n attempts").
//   - A pass less than a poll interval after the last listing (a job
//     finished and freed a slot) first claims from what that listing
//     showed unleased and its pass did not try, without listing again:
//     the oldest few (every worker's first tries) left out, in this
//     worker's own order, at most two tries (a request another worker
//     claimed since costs a failed create, one it finished since three
//     calls); only when none is claimed does it list.
//   - Once every lease length a pass sweeps, by turns, expired leases
//     whose request is gone (a holder that died between deleting the
//     request and the lease) and cancel objects older than a lease whose
//     request is gone (written after the holder's last look). An idle
//     worker, whose last listing of requests/ was empty, makes the
//     sweep's LIST instead of that listing: one LIST per poll interval.
//   - A fresh claim (attempt 1) reads the request's body first (its size
//     is the listing's): gone means it finished since the listing, and
//     the lease just made is deleted, nothing more. Then it looks for a
//     cancel object (in the pass's one listing of cancel/, made when the
//     pass may claim, not with a HEAD per claim: a cancel written after
//     that listing is seen at the first renewal, like any other) and,
//     unless the request is a backup, for a result (a finished id
//     submitted again: client.Submit refuses one except in a race). A backup does not look: its first attempt writes its
//     artifacts create-only, so a backup this id committed before stops
//     the run and is found (the executor's doc), its index is create-only,
//     and so is the result, which keeps the first. An id whose earlier
//     life made no backup (failed, canceled) and was submitted again in
//     that race is backed up again, and its first result stays. A
//     takeover looks for the result first, then at the request's size (a
//     HEAD when no listing gave it) and the attempt limit, and only then
//     reads it.
//   - Each renewal (every third of the lease) also looks for
//     cancel/<id>.json and publishes the run's progress in the lease. A
//     lost lease cancels the run with ErrLeaseLost and nothing more is
//     written.
//   - Each attempt writes its artifacts under its own folder (the
//     executor's job), so a paused zombie cannot overwrite the attempt
//     that took over. Restores are fenced the same way: their staging is
//     named after the attempt, and the run's tracker carries a fence that
//     renews the lease, which the engine calls immediately before its
//     swap; a loss there cancels the run and the engine does not swap.
//   - To finish, the holder renews once more (marked finishing) unless
//     its lease was confirmed less than a sixth of its length ago (a
//     short run: the lease is surely still its own while the writes run,
//     the fence of lease.Valid), commits the index (create-only), writes
//     results/<id>.json create-only, then deletes the request, its cancel
//     object when one was seen, and the lease: in one call where the
//     bucket deletes in batches (S3 DeleteObjects, bucket.DeleteKeys),
//     else one by one, the lease last. Every step is idempotent; a
//     takeover checks for a result before it runs anything, so a crash
//     between any two steps is finished by the next attempt. A batch
//     promises no order and a key can fail alone (it is then deleted once
//     more by itself): a request left behind without its lease is claimed
//     afresh by a later pass and changes nothing, as a finished id
//     submitted again does (a restore or verification finds its result; a
//     backup's create-only artifacts, index and result keep the first
//     commit, at worst after running again into a free attempt-1 folder
//     when a takeover made the backup).
//   - Notifications only hurry things: ClaimHint claims the request a
//     notification names at once (within the concurrency limit), Wake
//     asks for a pass; the periodic LIST is the backstop that
//     correctness relies on.
//
// Malformed requests get a "rejected" result naming the problem; they
// never stop a worker. An object under requests/ whose name is not
// <id>.json with a valid id gets one "rejected" result under
// requests.MisnamedID of its key (create-only: one worker answers), and
// passes skip it from then on. A request that names no cluster belongs to
// Config.Cluster, the worker's configured cluster. Whatever a request holds: after taking the lease a
// worker checks the attempt limit and the request's size (from a HEAD)
// before reading its body, and rejects one over MaxControlObject unread;
// a lease over that limit counts as damaged (it expires by the worker's
// own lease length). Run shuts down in two stages: stop claiming, let
// running work finish within the grace period, then cancel it and hand
// the leases back.
package watcher
