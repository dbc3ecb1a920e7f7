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
