// Package fs is a bucket.Bucket kept in a local directory: capsule's embedded
// default, with the semantics of S3 and safe when several processes (and
// goroutines) share the directory.
//
// # Layout
//
// An object's key is its path below the directory: key "backups/c/s/x.json"
// is the file <dir>/backups/c/s/x.json, holding exactly the object's bytes, so
// the tree mirrors a bucket copied with `aws s3 sync` and back. Keys must be
// relative slash-separated paths without empty, "." or ".." segments and must
// not start with ".capsule-fs", the directory that holds the bucket's own
// state (temporary files and lock files) and that List never shows. Keys that
// a filesystem cannot hold side by side ("a" and "a/b") fail to write with
// the filesystem's error. Directories left empty by Delete are removed.
//
// # Writes
//
// Every write streams into a temporary file under .capsule-fs/tmp (the same
// filesystem), stamps it with a new ETag, fsyncs it, and only then publishes
// it under its key while holding an exclusive flock(2) on the key's lock file
// (one of 256 under .capsule-fs/locks, chosen by a hash of the key):
//
//   - create-only (IfNoneMatch): link(2) to the final path; EEXIST means the
//     key exists and the write fails with bucket.ErrPreconditionFailed;
//   - If-Match: compare the current file's ETag, then rename(2) over it;
//   - unconditional: rename(2).
//
// Each temporary file carries the key it is written for in the extended
// attribute user.capsule.key, so ListUploads (bucket.UploadLister) can name
// the writes in progress or left by a crashed writer, and AbortUpload can
// remove one; New also removes those untouched for a day.
//
// Delete takes the same lock, so every change of a key is serialised across
// processes: a create-only write cannot slip between another writer's check
// and its rename, nor be overwritten by a writer that checked before a
// Delete. Readers take no lock: rename and link replace a file atomically, so
// a reader sees either the old or the new object. A body opened by Get is
// its open file, so it reads the version it opened to the end even when the
// key is replaced or deleted meanwhile: there is no network to cut it, and
// nothing to resume (bucket.ResumableBody is for backends with one).
//
// # ETags
//
// A write's ETag is 128 random bits (32 hex digits), stored in the extended
// attribute user.capsule.etag of the file before it is published. The
// attribute belongs to the inode, so it moves with the file through link and
// rename and can never describe other bytes than its own file's. Every write
// gets a new ETag, even of equal bytes (stronger than S3, where equal bytes
// give an equal MD5). Head and List open the file and read the attribute and
// size from the open descriptor, never the body; Get returns that same open
// file, so its body and ETag belong to the same version.
//
// A file that was put in the directory by another tool has no attribute; its
// ETag is derived from its inode number, modification time and size
// ("<ino>-<mtime ns>-<size>" in hex) until capsule rewrites it.
//
// New refuses a directory whose filesystem cannot store user extended
// attributes (ext4, xfs, btrfs, zfs and tmpfs since Linux 6.6 can).
//
// # Limits
//
// The filesystem's clock is the server's: ServerTime is time.Now() of the
// process. Retention (PutOptions.RetainUntil) cannot be honoured and fails
// with ErrRetentionUnsupported. ContentType is accepted and not stored.
package fs
