// Package index owns backupIndex.json and the catalog built from it.
//
// A backup lives under backups/<cluster>/<source>/<backupId>/. Its
// artifacts are written first, each attempt under its own <attempt>/
// folder; backupIndex.json is written last, create-only, and is the
// commit mark: a backup without one does not exist as far as listing and
// restore are concerned, and a second attempt that finds one knows the
// work is done. Nothing there is ever rewritten: a verification is a new
// verify-<time>.json object beside the index, and readers merge the newest
// one into the Entry they show. This keeps every backup object
// write-once, so a bucket with S3 Object Lock can hold them.
//
// The index is self-describing (apiVersion capsule/v1, engine and format,
// server and tool versions, every artifact's key, sizes and sha256 of the
// stored bytes): a fresh capsule binary restores from the bucket alone.
// The JSON Schema is schemas/backupIndex.schema.json.
//
// # What is believed
//
// Anyone who can write backups/ can plant any object there, so the
// bucket's content is data, never authority. An index is believed only
// where it is: Read, List, ListAll and Find check each index against its
// own key and skip it as damaged when
//
//   - it cannot be parsed, or its apiVersion or kind is not this one;
//   - its cluster, source or backupId is not what its key says (the key's
//     segments unescaped as requests.Segment escapes them), or the key is
//     not exactly the one they make, or they are not valid names and ids;
//   - an artifact's name is not a valid artifact name, or its key is not
//     backups/<cluster>/<source>/<backupId>/<attempt>/<name> for the
//     attempt the index names: an index never points into another
//     attempt's, backup's or cluster's folder;
//   - it finished in the future: its finishedAt (or startedAt) is later
//     than its LastModified, the bucket's clock when it was written, plus
//     MaxClockSkew (5 minutes). Times are judged by the bucket's clock, so
//     a forged index dated years ahead is neither the newest backup nor a
//     recent success.
//
// A damaged index is never used to list, restore or delete anything.
// ListAll returns it (its key, the cluster, source and id the key says,
// and the reason) beside the entries, never as an error for the whole
// listing; List leaves it out; Find refuses it with an error that wraps
// ErrDamaged and names the key and the reason (a real backup with the same
// id elsewhere is still found). A Reporter logs each damaged key once per
// process and feeds a metric. Each Entry carries the key it was listed at,
// and whoever deletes a backup deletes by that key's folder, never by
// what an index says.
//
// A verification record is believed only where it is too: its backupId is
// its folder's, its key names its verifiedAt, and verifiedAt is not later
// than the record's LastModified plus MaxClockSkew. Other records are
// ignored: they make no backup look verified, or failed.
//
// # Signatures
//
// A worker with a Signer writes, after each index (WriteSigned) and each
// verification record (WriteVerificationSigned), a signature beside it:
// backupIndex.json.sig, verify-<time>.json.sig. It is an SSH signature
// (internal/sshsig, the format of ssh-keygen -Y sign) of the object's
// exact stored bytes, in the namespace capsule-index or
// capsule-verification; the index lists every artifact's key, sizes and
// sha256, so the signature covers the artifacts too. The index goes
// first: a retry finishes an interrupted commit by signing the stored
// bytes (SignStored), and a signature that is there already must be this
// signer's.
//
// Readers judge signatures with a Trust (the public keys they trust, and
// whether they accept indexes with no signature at all): Filter.Trust
// for listings, FindTrusted for one backup. Each Entry's Signature is
// signed, unsigned (accepted), untrusted or unchecked (no trusted key:
// nothing is checked). An untrusted entry is listed, never used:
// Entry.TrustError refuses it, naming the backup and the reason, and
// restores, verifications, retention and metrics skip it. A verification
// record that no trusted key signed is ignored like one not believed.
//
// # What a verification proved
//
// A record's state is restored (the backup was restored into scratch
// space and the engine's checks passed), checksum (the stored bytes were
// read and match; the engine has no scratch restore) or failed; no record
// is never. Records written before the state existed get it derived when
// listed (StateOf: "checksum only" checks mean checksum), so nothing
// shows an old checksum-only verification as a restore.
//
// # The catalog
//
// Finding one backup by walking backups/ and listing a cluster by reading
// every index cost requests in proportion to the backups kept. The
// catalog answers both in a bounded number of requests, from write-once
// objects outside backups/ (nothing there is rewritten):
//
//	catalog/ids/<backupId>.json                          where the backup is: its cluster and source
//	catalog/clusters/<cluster>/snapshot-<time>-<rand>.json  the cluster's backups (their indexes and newest verifications)
//	catalog/clusters/<cluster>/new/<backupId>/index.json    a commit since the snapshot (the index's bytes)
//	catalog/clusters/<cluster>/new/<backupId>/verify-….json a verification since (the record's bytes)
//	catalog/clusters/<cluster>/new/<backupId>/deleted.json  a deletion since (retention calls Forget)
//	catalog/clusters/<cluster>/compacting-<snapshot>-<minute>.json  a commit's claim to compact from that snapshot
//	catalog/migrated.json                                the catalog holds every backup made before it
//
// Write writes the pointer and the commit event create-only right after
// the index; a later attempt that finds the backup committed calls Record
// to repair a crash in between. Find reads the pointer, LISTs the backup's
// folder and reads its index and newest verification (about 4 requests).
// Catalog.List reads a cluster's newest snapshot (by the bucket's clock)
// and the events it does not hold: a LIST, a GET and one GET per event.
// A listing that read more than CompactAfter events writes a new snapshot
// holding them, and so does a commit that counts more than CompactAfter
// since the newest snapshot. A commit LISTs the cluster's catalog only
// when its process's count may have passed that (what its last LIST
// counted, plus its own commits since times the cluster's commits per own
// commit between its last two LISTs): about once per compaction for a
// single writer. Of commits that would compact from the same snapshot at
// once, the first to create its marker (compacting-<snapshot>-<minute>.json,
// create-only) does; the others read nothing (a forged marker only delays
// compactions by commits; listings still compact). A compaction deletes
// folded events, markers and older snapshots only CatalogGrace after they
// were written, so a concurrent compaction that missed an event never
// outlives it; it deletes them in one call where the bucket deletes in
// batches (bucket.DeleteKeys: S3 DeleteObjects, 1000 keys a call).
// A process remembers the bytes and ETag of the last 4×CompactAfter
// commit events it wrote, and its compactions (and listings through the
// same bucket) copy those without a GET while the listing shows the same
// ETag: an event written over since is read and judged as any other.
//
// The catalog is a copy, believed no more than the indexes it copies:
//
//   - each snapshot entry and each commit event passes the same checks
//     as an index read at its own key (check), with the time it was
//     written no later than the snapshot's (or the event's) LastModified;
//     a verification passes checkVerification;
//   - a snapshot over MaxSnapshotSize, unparseable, of another cluster,
//     or with any entry that fails is absent: the listing walks the
//     cluster's indexes (ListAll), and with a Writer writes a snapshot
//     from that walk; a bad event is reported like a damaged index;
//   - a pointer that is damaged, or names a missing or damaged index,
//     is absent: Find walks as before the catalog. A pointer is only a
//     way to the index, which restore reads and checks anyway;
//   - retention, garbage collection and restore act on indexes, never on
//     the catalog: a forged catalog object can at worst show a backup in
//     a listing that describe then does not find, or hide one from a
//     listing until the next Compact (a walk) of its cluster.
//
// With signatures (see Trust), the catalog is believed no more than the
// signatures either:
//
//   - Find judges the index its pointer names, and that index's .sig,
//     exactly as the walk does; only a signed (or, without trusted keys,
//     unchecked) index is returned through a pointer, anything else walks,
//     so a forged pointer makes no backup unfindable or ambiguous;
//   - a snapshot records, per entry, the facts of the index's and the
//     verification's signatures (missing, valid by key F, invalid: why),
//     not a judgement; a Catalog with a Signer checks every signature it
//     records and signs the snapshot (snapshot-….json.sig, SSHSIG,
//     namespace CatalogNamespace, written before the snapshot);
//   - a reader whose Trust checks signatures believes a snapshot only when
//     a key it trusts signed it and every entry carries its facts, judges
//     each entry from them by its own keys (so it lists the walk's states),
//     and reads, for each event since, the signature beside the object
//     the event copies, checked against the event's bytes. A snapshot that
//     is unsigned, signed by another key, or lacks facts is absent: the
//     listing walks (ListAll), correct, only slower;
//   - a Catalog without a Signer never writes over a signed snapshot, so
//     an API or CLI without the signing key does not push readers that
//     check signatures back to the walk.
//
// Buckets written before the catalog keep working: with no snapshot and
// no migrated mark, a listing walks (as before) and, when it may write,
// writes the snapshots, the missing pointers and the mark, once. A
// backup deleted by hand leaves no deletion event: Catalog.Compact
// rebuilds a cluster's snapshot from its indexes.
//
// # Failures
//
// A backup that failed, was canceled or rejected has no index: its result
// (results/<id>.json) is its only trace. FailureReader lists them from
// the newest results by the bucket's clock (a window, DefaultResultWindow
// by default, since results are not kept per cluster), reading each
// result once through the control-object limit and believing only one
// whose id is its key's, whose request was a backup, and whose cluster
// and source are valid names; a result dated ahead of its write is listed
// at its write. The error is its first line, clipped (MaxFailureError).
package index
