// Package gcs is a bucket.Bucket on Google Cloud Storage through Google's
// own client (cloud.google.com/go/storage, JSON API over HTTP). Google's
// S3-compatible interface is no substitute: it ignores If-None-Match, so a
// create-only write there would not decide a race.
//
// # Credentials
//
// Without an endpoint the client uses Options.CredentialsJSON, a service
// account key, when it is set, else Application Default Credentials: a
// key file named by GOOGLE_APPLICATION_CREDENTIALS, gcloud's
// application-default login, or the metadata server (GCE, and GKE with
// workload identity: the pod's Kubernetes service account bound to a
// Google service account). Credentials never come from the URL. A key in
// CredentialsJSON must be of type service_account, with Google's token_uri
// and universe (CheckCredentialsJSON): capsule takes such keys from
// Kubernetes Secrets that tenants write, and an external account
// configuration would name URLs, files or commands to fetch a token from.
// The errors about a key name its fields, never its values. With
// Options.Endpoint (or $STORAGE_EMULATOR_HOST) requests go, unauthenticated,
// to that server: an emulator such as fake-gcs-server.
//
// # ETags are generations
//
// Every write of an object gives it a new generation, a number GCS never
// reuses for the name, whatever the bytes. capsule's ETag is that number in
// decimal. A create-only Put (IfNoneMatch) is a write with ifGenerationMatch=0
// (storage.Conditions{DoesNotExist: true}), an If-Match Put one with
// ifGenerationMatch=<generation>; GCS checks both atomically and answers 412
// to the loser. An If-Match value that is not a positive number matches no
// object and fails with bucket.ErrPreconditionFailed without a request.
//
// # Errors
//
// Translated where they enter: an object's 404 (storage.ErrObjectNotExist)
// wraps bucket.ErrNotFound, a missing bucket does not (it is a
// configuration error); 412 wraps bucket.ErrPreconditionFailed, and so does
// an If-Match write on a missing key. A Delete refused with 403 because of
// an object retention date, a bucket retention policy or a hold wraps
// bucket.ErrRetained (the message names it, or the object's metadata shows
// it); a plain 403 stays a permission error.
//
// # Retries
//
// The client's own retryer repeats every call (storage.RetryAlways) on the
// errors storage.ShouldRetry names (network errors, 408, 429, 5xx), with
// bucket.DefaultRetry's backoff, number of repeats and time bound; each
// repeat is logged. An error that outlasts them is marked
// bucket.ErrTransient. Repeating is harmless for capsule's unconditional
// writes and deletes. A conditional write whose answer was lost after GCS
// applied it is different: its repeat fails with 412. So every write
// carries a random token in its custom metadata (x-goog-meta-capsule-write),
// and a write that ends in 412, in 404 (fake-gcs-server forgets a finalized
// upload session that GCS would answer with the object) or in a transient
// error reads the object: when it carries the write's token, the write was
// applied, is ours, and succeeds with the object's generation. That is
// exact whatever the bodies are; the object is written once.
//
// # Reads
//
// Get reads the current generation, its bytes as stored (no transparent
// gzip decoding). A body the network cuts is resumed, by the client and
// then by bucket.ResumableBody, with a ranged read of that same generation
// (ObjectHandle.Generation): once the object was replaced or deleted that
// generation is gone, the read answers 404 and fails with
// bucket.ErrChanged, never splicing two generations.
//
// # Uploads
//
// Writes go through storage.Writer. A Put smaller than a chunk is one
// request (the Writer holds the body and can repeat it). Upload and larger
// Puts are resumable uploads in chunks of Options.ChunkSize (8 MiB by
// default), sent one after the other; memory stays near one chunk. The
// condition is on the object handle, and GCS checks it when the last chunk
// finalizes the object: a create-only Upload that lost its race fails at
// Commit, and nothing of it is visible. Abort (or a canceled context) stops
// the upload; an unfinished resumable session cannot be listed or deleted
// through the client, so this package is no bucket.UploadLister and
// capsule's garbage collector finds nothing to abort here. That is safe:
// only a completed upload appears in the bucket, and GCS discards a session
// that was not completed within a week of its start.
//
// # Retention
//
// PutOptions.RetainUntil becomes the object's retention in Locked mode
// (objects cannot be deleted or replaced before the date, by anyone). GCS
// accepts it only in a bucket created with object retention enabled. The
// write's answer is checked: when the object does not carry the date, the
// write fails, naming the bucket, and that generation is deleted, so that
// capsule never believes an object retained that is not.
//
// # Time
//
// ServerTime is the Date header of the call's last response, recorded by
// the HTTP transport under the client, so lease expiry follows the store's
// clock. LastModified is the object's updated time.
//
// # Write rate
//
// GCS sustains about one write per second to the same object name; faster
// writes of one name get 429 (and are retried). The only names capsule
// writes repeatedly are leases (leases/, locks/), renewed every third of the
// lease's length: every 20 s with the default lease of 60 s. worker.lease
// cannot be set below 3 s, so a lease is renewed at most once a second, and
// at the default far less often; keep leases of a minute or more on GCS.
package gcs
