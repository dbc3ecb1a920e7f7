// Package lease is capsule's one lease: who may act on a request, a
// retention policy, garbage collection or any other continuous job now.
// The watcher's request leases (leases/<id>.json) and the maintenance
// locks (locks/…) are both held through it, so expiry is judged one way
// everywhere. It implements the claim protocol of DESIGN.md:
//
//  1. Claim. Acquire reads the lease object. When there is none it
//     creates it create-only (If-None-Match: *): of any number of
//     replicas exactly one wins, as attempt 1. A caller whose listing
//     just found no lease says so (Claim.Fresh) and Acquire writes
//     create-only without the read: a 412 then means the lease is held.
//  2. Renewal. The holder rewrites the object every third of its length
//     (Keep, or Renew) with If-Match on the ETag of its own last write.
//     Every body differs (a fresh token per write, the write's time, a
//     renewal count, the caller's data such as progress), so every ETag
//     differs and a stale holder's write can never match.
//  3. Loss. A renewal answered 412 means another replica took the lease
//     over: Renew returns ErrLost and the holder must write nothing more.
//     A holder that cannot renew at all gives up (ErrLost) once 5/6 of its
//     length has passed since its last confirmed write, before anyone
//     else may judge the lease expired.
//  4. Expiry, by the bucket's clock only. A lease is expired when the
//     bucket's time of the response that read it (its Date) is more than
//     the lease's length after the object's Last-Modified. No local clock
//     is compared with the bucket's. The length is the one the holder
//     wrote in the body; a damaged lease (not JSON, no positive length,
//     over the size limit, never read whole) is judged by the length the
//     reader is told to assume for that kind of lease (Claim.Damaged,
//     Read's damaged argument): for request leases that is the workers'
//     lease length (DefaultRequestLength unless configured), whoever
//     reads it — a worker, garbage collection or an operator's command.
//     A response without a server time cannot be judged: such a lease
//     counts as held.
//  5. Takeover. An expired or released lease is taken over with If-Match
//     on the ETag that was read, as attempt n+1; a lost race is a 412 and
//     the loser walks away. A lease handed back (Release: the body says
//     released) is taken over at once and the hand-back is counted
//     (Handbacks), so callers may leave it out of attempt limits.
//  6. Fencing. Before a write that must not happen twice (a restore's
//     swap, a commit, a delete), the holder either renews once more
//     (Renew: a 412 there means it must not write) or checks Valid: its
//     last confirmed write is recent enough that no other replica can
//     judge the lease expired yet.
//  7. Release. A holder that is done or shutting down marks the lease
//     released (Release) so the next claim need not wait; a lease lost
//     meanwhile is left to its new holder.
//
// MinLength (3s) is the shortest lease anyone may hold: renewals come
// every third of the length, and S3's Last-Modified has a resolution of
// one second, so a shorter lease cannot be judged. Validate says so,
// naming the setting.
//
// The package knows nothing of what a lease protects: the caller encodes
// each write's body (Claim.Encode) from the Write it is given, and the
// fields the protocol reads back (holder, attempt, handbacks,
// durationMillis, released) keep these JSON names in every body.
package lease
