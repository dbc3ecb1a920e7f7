// Package retention deletes the backups a plan no longer keeps, and
// collects the garbage that crashed or superseded work leaves in the bucket.
//
// # Which backups a policy keeps
//
// A Policy names a cluster, a source and a plan. Its backups are the
// committed ones (a backupIndex.json with status succeeded) of that cluster
// and source whose index carries the plan's name; manual backups (no plan)
// belong to it only with IncludeManual. Indexes with another status are
// neither counted nor deleted. Backups are ordered newest first by their
// finish time, ties by backup id (as index.List orders them).
//
// A backup is good unless its newest verification record failed; a backup
// never verified is good. The policy keeps the newest Keep good backups and
// every backup newer than the oldest of them: a backup whose verification
// failed does not count toward Keep, but it is not deleted before older
// good ones either. When fewer than Keep good backups exist, everything
// down to the oldest good one is kept. In every case the newest Keep
// backups are kept whatever their verification says, so the newest backup
// is never deleted, nor is the only one. Everything older than what is kept
// is a candidate for deletion: the kept backups are always the newest ones,
// and deletions always take the oldest.
//
// A candidate is not deleted (and is listed in Report.Skipped with the
// reason) when a pending or running Restore or Verify request names it
// (for a point-in-time Restore, which names a source and not a backup:
// every base backup of that source), or when S3 Object Lock retains it. Such a backup stays beside the Keep newest
// ones and does not count toward Keep: retention never deletes a newer
// backup because an older one cannot go.
//
// # What retention believes
//
// Only what index.ListAll believes (see the index package): an index
// whose cluster, source, backup id or artifact keys do not match its key,
// that cannot be parsed, or that finished in the future by the bucket's
// clock (its LastModified plus index.MaxClockSkew) is damaged. A damaged
// index is never counted, kept or deleted: it is listed in Report.Damaged
// and logged once per key (Config.Damaged), and left for a person. So a
// forged index dated 2099 is not the newest backup and pushes no real one
// out, and the newest good backup that is always kept is a real one.
//
// Retention deletes the folders it listed, never keys it read: a backup's
// index is deleted at the key the listing returned under the policy's
// cluster and source, and then every object the LIST shows under that
// key's folder. Nothing is deleted because an index's content (its
// cluster, source, backup id or artifact keys) names it, so a forged index
// cannot point retention at another backup or another tenant's keys.
// Garbage collection likewise leaves a folder whose index is damaged
// alone (GCReport.Left says why).
//
// # Restores in flight
//
// Before deciding, and again right before deleting each backup, Apply
// lists requests/ and reads the requests it has not seen (requests are
// never rewritten, so each is read once per process): any Restore or Verify
// there names a backup in use. A request stays under requests/ until its
// result is written, so this covers pending and running ones alike (a lease
// without a request is a finished request being cleaned up). A request
// written after that last look and before the delete still races: the
// window is one LIST and one DELETE long. A restore that loses it fails
// cleanly, because restores check every artifact's checksum before they
// touch the target.
//
// # Deleting
//
// A backup is deleted index first: once backupIndex.json is gone, the
// backup is no longer listed or restorable, so a crash halfway never leaves
// a backup that looks complete and is not. Then every other object under
// the backup's folder goes (verify-*.json and each attempt's artifacts).
// Whatever a crash leaves behind is an index-less folder, which
// CollectGarbage removes.
//
// # Object Lock
//
// Objects written with a retain-until date cannot be deleted before it. A
// backup whose index records a retainUntil after the bucket's clock is
// known to be retained and is not even tried. A delete the store refuses
// (bucket.ErrRetained) leaves the object in place: if it was the index, the
// backup stays whole and listed. Either way the object appears in
// Report.Retained (or GCReport.Retained) and in the log once per Runner,
// and the Runner does not try it again before its retain-until date (when
// the index gives one) or Config.RetryRetained (when not).
//
// # Leases
//
// Retention for one policy runs under a lease, the object
// locks/retention/<cluster>/<source>/<plan>.json (the plan "_manual" for a
// policy of manual backups only), and garbage collection under
// locks/gc.json, both held through the lease package (the protocol of
// the workers' request leases: see its doc). Garbage collection judges
// the workers' request leases the same way, a damaged one by the
// workers' lease length (Config.RequestLease), as a worker would.
// A Runner that finds the lease held returns a report that
// says so (LeaseHeldBy) and deletes nothing; one whose renewal fails, or
// that could not renew for 5/6 of the lease, stops before its next delete.
// Two replicas running the same policy together therefore never delete the
// same backup, and neither deletes from a stale view once the other has
// taken over. Two policies of the same source that both include manual
// backups would count the same manual backups twice: give at most one
// policy per source IncludeManual.
//
// # Garbage
//
// CollectGarbage removes, once they are at least olderThan old by the
// bucket's clock (their newest object), attempt folders under a committed
// backup that its index does not name (an attempt that was taken over),
// and whole folders of backups that have no index and no request (failed or
// canceled backups, and what a crash in the middle of a retention delete
// left), unless the backup's lease is live. Where the bucket is a
// bucket.UploadLister it also aborts uploads under backups/ that were
// started at least olderThan ago and whose backup has no live lease. Choose
// olderThan longer than any backup may run; a day is the usual value.
package retention
