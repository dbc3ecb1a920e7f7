// Package bucket defines capsule's object-store interface: whole-object
// reads and writes, listings in key order, conditional writes (create-only
// and If-Match) that decide every race, and streaming uploads for artifacts
// of unknown size.
//
// Errors: a missing object is ErrNotFound and a lost condition is
// ErrPreconditionFailed; backends translate their own errors into these at
// the edge, so callers use errors.Is.
//
// Reads are whole or fail: a body cut by the network is resumed from the
// byte it reached with a ranged GET of the same version (ResumableBody,
// checked against the ETag), and one whose object was replaced meanwhile
// fails with ErrChanged, never spliced. Errors that may pass when the call
// is repeated are marked ErrTransient once the backend's own retries gave
// up; RetryPolicy (DefaultRetry) is the one backoff that the backends, the
// workers and the client use.
//
// Deletes of many keys go through DeleteKeys: one call per 1000 keys
// where the bucket is a BatchDeleter (S3 DeleteObjects; Prefixed views
// and decorators pass it through), one DELETE per key in order elsewhere
// (GCS, Azure, the directory bucket). A batch promises no order: a key
// it failed alone is deleted once more by itself, and a call that failed
// as a whole falls back to one DELETE per key in order.
//
// Objects that another party may have written are read whole only through
// GetBytesLimit: one larger than its limit is refused as a *TooLargeError
// (ErrTooLarge) from the size the store reports, without reading its body.
//
// Implementations live in subpackages: bucket/s3 (any S3 API through
// aws-sdk-go-v2), bucket/azblob (Azure Blob Storage through the official
// SDK), bucket/gcs (Google Cloud Storage through its official client) and
// bucket/fs (a local directory with the same semantics, safe across
// processes; the embedded default). bucket/buckettest is the conformance
// suite they all pass, and bucket/bucketurl opens each from a URL.
// bucket/bucketcheck is the provider self-test: whether a store keeps the
// promises above (exclusive create-only writes, atomic If-Match, conditional
// upload commits) that no interface can enforce.
// Prefixed scopes a bucket to a key prefix.
package bucket
