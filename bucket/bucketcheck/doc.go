// Package bucketcheck tests whether an object store keeps the promises
// capsule's correctness rests on, on any bucket.Bucket: a provider self-test.
//
// capsule decides every race with a conditional write, and providers
// differ: Google Cloud Storage's S3 interface ignores If-None-Match (the
// write succeeds and overwrites), Backblaze B2 refuses conditional writes,
// an older SeaweedFS let several concurrent create-only writes all succeed,
// MinIO lists open uploads only for a whole key. A worker on such a bucket
// would run requests twice and never know. Run writes under its own folder,
// check/<random>/ (below the bucket view's prefix), and tests:
//
//   - create-only (critical): Writers goroutines race a create-only Put of
//     one fresh key, Rounds times; exactly one must win each round and the
//     object must hold the winner's bytes. Then one more create-only Put of
//     the existing key must fail.
//   - if-match (critical): an If-Match Put with the current ETag succeeds;
//     one with a stale ETag, and one on a missing key, fail, and the object
//     keeps the bytes of the write that won.
//   - conditional-upload (critical): a create-only streaming Upload of a
//     new key commits; a second one of the same key fails at Commit and
//     leaves the first object as it was. With UploadSize beyond a part
//     (S3's multipart threshold) this is CompleteMultipartUpload's
//     If-None-Match.
//   - pending-uploads (when PendingUploads is set; a warning only): an
//     Upload that was written to and not committed is listed by
//     bucket.UploadLister.ListUploads under its folder, and no longer after
//     Abort. Garbage collection finds the uploads a crashed worker left
//     open this way; a store that does not list them leaks storage, it does
//     not lose data.
//   - clock-skew: the store's clock (ObjectInfo.ServerTime, the Date of a
//     response) against the local one. capsule judges leases by the
//     bucket's clock, so a skew does not break claims; but indexes carry
//     times from the worker's clock, and an index more than
//     index.MaxClockSkew (5 minutes) ahead of the bucket's clock is judged
//     damaged. A skew above WarnSkew (10s) is a warning, one above MaxSkew
//     (1 minute) a critical failure: such a clock is not kept by NTP and
//     will drift on to where the worker's own backups look forged.
//   - checksums (information): what the store does with flexible checksums,
//     from Options.Checksums (the S3 backend's probe); skipped without one.
//   - cleanup: everything the check wrote is deleted, its open uploads
//     aborted, also when a property failed or the context ended; folders of
//     earlier checks older than an hour (a check that crashed) are removed
//     too.
//
// The report is safe when no critical property failed; Report.Err names
// every one that did. Run returns an error (and what it found so far) when
// the check could not finish: an unreachable store, missing permissions, or
// transient failures that outlasted the retries. A conditional write the
// store refuses outright (B2's 501) is a finding, not such an error.
//
// Startup is the cheap, safety-critical part a worker runs before it
// claims anything (a few dozen small calls, well under a second on a near
// store); Full is what "capsule bucket check" runs.
package bucketcheck
