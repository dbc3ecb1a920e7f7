// Package watcher finds pending requests, claims them with conditional
// writes, and runs them under a renewed lease. It implements the claim
// protocol of DESIGN.md:
//
//  1. RunOnce lists requests/ (oldest first: ids are time-ordered) and for
//     each request without a lease creates leases/<id>.json create-only
//     (If-None-Match: *). Exactly one worker wins.
//  2. The holder renews the lease every third of its length with If-Match
//     on the ETag of its own last write; every body differs (token, time,
//     progress), so every ETag differs. Each renewal also looks for
//     cancel/<id>.json and publishes the run's progress.
//  3. A renewal that fails with 412 means the lease was lost: the run is
//     canceled at once and nothing more is written. A holder that cannot
//     renew at all stops before the lease could be judged expired.
//  4. A lease is expired when the bucket's clock (the Date of the GET
//     that read it) says its Last-Modified is older than its length.
//     Another worker takes it over with If-Match on the ETag it read, as
//     attempt n+1; past MaxAttempts the request ends failed ("abandoned
//     after n attempts"). A lease handed back at shutdown (released) is
//     taken over at once and does not count as a failed attempt.
//  5. Each attempt writes its artifacts under its own folder (the
//     executor's job), so a paused zombie cannot overwrite the attempt
//     that took over. Restores are fenced the same way: their staging is
//     named after the attempt, and the run's tracker carries a fence that
//     renews the lease (If-Match, the renewals' write) which the engine
//     calls immediately before its swap; a 412 there cancels the run with
//     ErrLeaseLost and the engine does not swap.
//  6. To finish, the holder renews once more, commits the index
//     (create-only), writes results/<id>.json create-only, then deletes
//     the request, its cancel object and the lease. Every step is
//     idempotent; a claim checks for a result before it runs anything, so
//     a crash between any two steps is finished by the next attempt.
//  7. Notifications only hurry things: ClaimHint claims the request a
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
