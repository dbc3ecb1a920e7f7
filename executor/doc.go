// Package executor runs one claimed request.
//
// Backup: the engine's stream goes through zstd (multi-threaded) and
// sha256 into a multipart upload under the attempt's own folder,
// backups/<cluster>/<source>/<id>/<attempt>/<artifact>, with no temporary
// file and memory bounded by the upload's parts in flight. The Outcome
// carries the backupIndex.json to commit; the watcher commits it (Commit)
// only after a last lease renewal, then writes the result. A takeover
// (attempt > 1) first reads the index an earlier attempt may have
// committed; a first attempt reads nothing, and writes its artifacts
// create-only instead: a key that is taken (a finished id submitted again,
// another request's backup of the id) stops the run, and only then is the
// index read. Keys taken by no committed backup are written over.
//
// Restore and verify: each artifact streams from the bucket through a
// sha256 check of the stored bytes and zstd decompression to the engine;
// the Read that reaches the end returns *engines.ChecksumError if the bytes
// differ from what the index recorded, so an engine that stages before it
// swaps never swaps in a corrupt backup. A verification's outcome becomes
// a verify-<time>.json record beside the index. Decompression stops with
// an *ArtifactSizeError once an artifact yields more than its recorded
// size plus DecodeMargin, and the zstd decoder refuses windows over
// MaxDecoderWindow: a forged index whose checksum matches a bomb still
// cannot fill the target's disk or the worker's memory. The engine's job carries
// the attempt (staging is named after it), the lease holder's fence from
// the run's Tracker (called right before the swap), and StaleStaging,
// answered from the bucket: staging of a request that has a result, or
// whose lease a later attempt holds, is abandoned.
//
// A Restore or Verify of legacy:<id> (Config.Legacy, package legacy) gives
// the postgres engine the old cnvrg-capsule service's dump, a pg_dump
// tar archive, streamed as stored: no checksum exists, so only its size
// and pg_restore reading it whole are checked, and the result says so;
// a verification's outcome is in its result only. Store is the backup
// pipeline for a backup made elsewhere (capsule legacy import): the
// artifacts go through compression and sha256 into the index's attempt
// folder, create-only, and the index is written create-only.
//
// A Restore that names a point in time (requests.PointInTime) goes to
// Config.PointInTime (pitr.Restorer) once its source and target are
// resolved here, as every restore's are: a source or target the bucket
// does not serve, or not a postgres one, ends rejected; so does a point
// the restorer says can never be reached (ErrPointInTimeRefused). The
// job carries the attempt, the fence and StaleStaging like an engine's;
// the result names the base backup it started from.
//
// Guards: a run has a timeout; a panicking engine becomes a failed result;
// an unknown source, engine or backup id is the request's fault and ends
// "rejected"; a context canceled with ErrCanceled ends "canceled".
package executor
