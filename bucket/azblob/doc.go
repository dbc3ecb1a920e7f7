// Package azblob is a bucket.Bucket on an Azure Blob Storage container,
// through the official SDK (github.com/Azure/azure-sdk-for-go/sdk/storage/azblob).
// Objects are block blobs; keys are blob names.
//
// # Credentials
//
// Options takes exactly one: a connection string, the account's shared
// key, a SAS token, or a Microsoft Entra token credential (bucket/bucketurl
// passes azidentity's DefaultAzureCredential: workload identity in a
// cluster, a managed identity, the Azure CLI). String names which one is
// in use, never its secret; transport errors lose their URL's query (a
// SAS) before they are returned or logged.
//
// # Conditions
//
// Create-only is If-None-Match: * (Azure answers a lost one with 409
// BlobAlreadyExists), If-Match is If-Match: "<etag>" (412
// ConditionNotMet); both wrap bucket.ErrPreconditionFailed, as does an
// If-Match on a missing blob. ETags are given without their quotes. A
// streaming upload stages blocks and commits the block list (Put Block
// List) with the same conditions, so a large object is created
// create-only in one step. A 404 BlobNotFound wraps bucket.ErrNotFound;
// ContainerNotFound does not (it is a configuration error). A Delete that
// an immutability policy or a legal hold refuses (409
// BlobImmutableDueToPolicy and its kin) wraps bucket.ErrRetained.
//
// PutOptions.RetainUntil asks for a locked, time-based immutability
// policy on the blob (x-ms-immutability-policy-mode: Locked, the
// equivalent of S3 Object Lock's compliance mode), which needs a container
// with version-level immutability support. The write is then checked: a
// blob whose policy does not reach RetainUntil (Azurite accepts the
// headers and keeps no policy) is deleted again and the write fails,
// rather than leave an unprotected backup in silence. On a versioned
// account a Delete of a protected current version succeeds (it becomes a
// previous version, kept until its policy ends), as on AWS S3.
//
// # Retries
//
// The SDK's own retries are off; the bucket repeats Get, Head, List,
// Delete, block staging and unconditional writes with bucket.DefaultRetry
// while they fail transiently: a connection failure, a body cut short, a
// timeout, 408, 429 or a 5xx answer. An error that outlasts the retries
// is marked bucket.ErrTransient.
//
// A Get's body resumes when the network cuts it, through
// bucket.ResumableBody: it asks again from the byte reached (x-ms-range)
// with If-Match on the first answer's ETag, and uses the answer only when
// it carries that ETag and a Content-Range from that byte, so a blob
// replaced meanwhile fails the read with bucket.ErrChanged, never spliced.
//
// A conditional write (Put Blob, or the Put Block List of an upload) whose
// answer is lost may have been applied, and its repeat then fails its own
// condition. Each conditional write therefore carries a random token in
// its metadata (capsulewrite); when a repeat after an ambiguous failure (a
// connection failure or a 5xx, not throttling) loses its condition, the
// blob's metadata is read, and the write is ours exactly when it carries
// our token. Unlike an ETag that hashes the body, the token tells two
// writers of identical bytes apart.
//
// # Listing
//
// Azure lists blob names in ascending order; for names of characters below
// U+E000 (every key capsule makes) that is byte order, and List checks it,
// failing rather than mispaging. Azure continues a listing from an opaque
// marker, so List's StartAfter is the startFrom parameter (inclusive,
// service version 2026-02-06), and names up to StartAfter are dropped.
// Each page asks for one blob more than it returns, so Truncated is
// exact.
//
// # Uploads
//
// Upload buffers the first block; an object smaller than one block is a
// single Put Blob. Larger objects are staged in blocks of
// Options.BlockSize, up to Options.Concurrency in flight (memory stays
// below (Concurrency+1) × BlockSize), each with its Content-MD5 for the
// service to check, and committed with Put Block List; a blob may have at
// most 50,000 blocks. Block IDs are "<upload id>.<number>": two uploads
// to one name do not mix their blocks.
//
// Uncommitted blocks are the equivalent of S3's open multipart uploads.
// Azure keeps them per blob name for a week and has no request that
// discards them; a successful write of the blob does. Abort (and
// AbortUpload) therefore writes an empty blob create-only in their place
// and deletes it on its ETag; a blob with committed content is never
// touched. ListUploads (bucket.UploadLister) finds the names that have
// uncommitted blocks and no committed content.
//
// # Time
//
// ServerTime is the Date header of the answer, so lease expiry follows
// the service's clock.
//
// # Azurite
//
// The tests run the package against Azurite (internal/azuritetest), which
// keeps the conditions above, atomically under races, but has no
// immutability policies (a RetainUntil write fails, as described) and
// ignores startFrom before 3.37 (List then pages from the start). The
// same tests run against a real account with CAPSULE_TEST_AZURE_URL (see
// azblob_test.go).
package azblob
