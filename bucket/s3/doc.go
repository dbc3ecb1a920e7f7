// Package s3 is a bucket.Bucket on any S3 API (AWS, versitygw, MinIO, ...)
// through aws-sdk-go-v2.
//
// # Errors
//
// The SDK's errors are translated where they enter: 404 (NoSuchKey,
// NotFound) wraps bucket.ErrNotFound; 412 PreconditionFailed and 409
// ConditionalRequestConflict (what AWS answers a conditional write that raced
// another write or a delete) wrap bucket.ErrPreconditionFailed. Treating the
// 409 as a lost race is safe: the caller re-reads and decides again, which is
// what it does after a 412. An If-Match write on a missing key is
// ErrPreconditionFailed whatever the server answers (AWS says 404). A Delete
// that Object Lock refuses wraps bucket.ErrRetained: ObjectLocked, or 403
// AccessDenied (or InvalidRequest) whose message names the lock or retention,
// or an AccessDenied on an object whose headers show a retain-until date
// after the server's time or a legal hold; a plain AccessDenied stays an
// error. On AWS, Object Lock needs a versioned bucket, where a Delete without
// a version id succeeds (it adds a delete marker and the locked version stays
// until a lifecycle rule expires it); versitygw locks unversioned objects and
// refuses their Delete. The SDK's error stays in the chain for errors.As.
//
// # Retries
//
// The SDK's retryer (without its client-side retry quota) handles throttling
// and 5xx answers (but 501 Not Implemented, a refusal for good: Backblaze B2
// answers it to a conditional write). On top of it, Get, Head, List, Delete, part uploads and
// unconditional Puts of a seekable body are retried with a bounded,
// context-aware exponential backoff (bucket.DefaultRetry) for transient
// failures: repeating them does no harm. An answer whose body ended before
// its Content-Length (a cut listing, a cut error document) counts as
// transient. An error that outlasts the retries is marked
// bucket.ErrTransient.
//
// A Get's body resumes when the network cuts it (a connection reset, an
// unexpected EOF before Content-Length): through bucket.ResumableBody it
// asks again with Range: bytes=<offset>- and If-Match: <the first answer's
// ETag>, and reads on, so the caller sees one stream and a checksum over it
// covers every byte once. The answer must carry the same ETag and a
// Content-Range that starts at the offset, or it is not used. A 412 (or
// 404) means the object was replaced (or deleted): the read fails with
// bucket.ErrChanged naming the key, and never splices two versions.
// Resumes that bring no byte are paced and bounded by the same policy;
// each resume is logged ("resumed a cut read") with the key and offset.
//
// A conditional Put (and a Complete of a multipart upload) is different: when
// its answer is lost after the server applied it, a repeat sees its own write
// and fails with 412. Such writes go without the SDK's retries, through one
// loop that remembers whether an earlier attempt failed ambiguously (a network
// error or a 5xx, not a 4xx). Only then, when a repeat gets a 412 (or, for a
// Complete, NoSuchUpload), it reads the object's ETag and takes the write as
// its own when the ETag is the one its bytes give: the MD5 of the body for a
// PutObject, the MD5 of the parts' MD5s with "-<parts>" for a multipart
// upload. That is exact when bodies are unique (capsule's control objects
// carry a random token); two writers of identical bytes may then both be told
// they won, which cannot matter as they wrote the same thing. Where ETags are
// not MD5s (SSE-KMS on AWS, versitygw --data-integrity-etag) the comparison
// fails and the write is reported lost: safe, as a lost claim only waits for
// its lease to expire.
//
// # Batch deletes
//
// DeleteBatch (bucket.BatchDeleter, used through bucket.DeleteKeys) is one
// quiet DeleteObjects call, retried like a Delete while it fails
// transiently; the keys its answer names failed alone (DeleteKeys deletes
// each once more with Delete, which tells Object Lock apart). A server
// that refuses the call as a whole for good (no DeleteObjects, as on GCS's
// S3 interface, or a checksum it will not take) is not asked again by
// that Bucket: DeleteKeys then deletes one key at a time.
//
// # Uploads
//
// Upload buffers the first part (in a buffer that starts at 64 KiB and
// becomes a whole part's when that is full); an object smaller than one
// part becomes a single PutObject. Larger objects become a multipart upload with up to
// Options.Concurrency parts in flight, so memory stays below
// (Concurrency+1) × the part size. Parts are Options.PartSize (5 MiB, S3's
// smallest, by default, with 1 in flight: at most 10 MiB per upload) for
// the first 1,500, then double every 1,500 parts, since an object may have
// at most 10,000 parts: at the default that is 831 GB, and memory grows
// only for objects beyond 7.8 GB.
// Any failure, and Abort, aborts the multipart upload; an upload a crashed
// writer left open is found with ListUploads (bucket.UploadLister) and
// discarded with AbortUpload. Commit completes it,
// create-only when asked (If-None-Match on CompleteMultipartUpload).
//
// MinIO lists open uploads only for a whole key: asked for a folder it
// answers an empty list. ListUploads then lists every upload and keeps those
// under the prefix, and keeps doing so once that found what the prefixed
// listing missed (see ListUploads).
//
// # Checksums
//
// Since 2025 aws-sdk-go-v2 sends a CRC32 checksum with every write that
// supports one (a header, or a trailer in an aws-chunked body), and several
// S3-compatible servers refuse those. On AWS (no endpoint, or one under
// amazonaws.com) the SDK's defaults stay, and multipart parts carry CRC32
// checksums; on any other endpoint the client sends and validates checksums
// only where an operation requires one, and parts carry none. The
// environment variables AWS_REQUEST_CHECKSUM_CALCULATION and
// AWS_RESPONSE_CHECKSUM_VALIDATION, when set, win. Either way an artifact's
// sha256 in its backup's index covers its bytes end to end. ProbeChecksums
// reports what a server does with a checksum ("capsule bucket check").
//
// # Time
//
// ServerTime is the Date header of the response, so lease expiry follows the
// store's clock. PutObject and CompleteMultipartUpload do not return the
// object's Last-Modified; their ObjectInfo.LastModified is that Date.
package s3
