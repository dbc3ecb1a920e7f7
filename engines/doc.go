// Package engines defines the Engine interface that every data service's
// plugin implements, the Source an engine works on, and an explicit
// Registry. Engines see only plain streams: the executor compresses,
// checksums and uploads what an engine writes, and verifies what it hands
// back on restore.
//
// One subpackage per engine (files, postgres, redis, mysql, elasticsearch,
// mongodb). engines/enginetest is the round-trip suite (backup, damage,
// restore, compare; a corrupt artifact never touches the target) that every
// engine passes against a real service, or a named stand-in where none can
// run.
//
// Restores are fenced by attempt, as backups are: a worker paused past its
// lease may wake after another worker took its request over. Everything a
// restore or verification stages (side databases and schemas, side
// collections, renamed indices, staging directories) is named after the
// request id and RestoreJob.Attempt, so two attempts never share a name;
// every engine calls RestoreJob.CheckFence (the lease holder renews its
// lease with If-Match) immediately before its swap, and on an error removes
// its own staging and does not swap. A successor removes its request's
// earlier attempts' staging, never reuses it, and never removes what an
// earlier attempt kept as previous (user data: it reports it). Staging of
// other requests that RestoreJob.StaleStaging reports over is removed by
// the engines that can name its request (files, postgres); garbage
// collection sees only the bucket.
package engines
