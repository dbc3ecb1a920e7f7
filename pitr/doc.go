// Package pitr is PostgreSQL point-in-time recovery: a source's WAL
// streamed into the bucket by whichever worker holds the source's stream
// lease, and restores to any moment the bucket covers.
//
// The stream (Stream) connects to the server over the physical
// replication protocol through a slot capsule creates and names
// (capsule_<source>), so the server keeps WAL until the bucket has it.
// What it receives it writes as write-once objects, at least every
// second and at every segment's end:
//
//	wal/<cluster>/<source>/<timeline>/<startLSN>-<endLSN>-<attempt>.zst
//
// each a header line (timeline, LSN range, sha256 of the WAL, the
// server's clock) and the WAL, zstd-compressed. Writes are create-only
// and the name carries the lease's attempt, so a zombie holder never
// overwrites its successor's objects; the slot's position advances only
// after the bucket acknowledged the write. Objects of two holders may
// overlap: WAL at one LSN of one timeline is the same bytes whoever
// wrote it.
//
// Jobs runs a worker's streams and slot guards (Job: a source, its
// cluster and the bucket its WAL goes to), one start and stop path for
// every caller: the configured pitr sources of "capsule worker", and the
// plans with PITR of the CnvrgApp scanner (scanner.Scanner.PITRJobs),
// followed as they change.
//
// Base backups are the postgres engine's (pitr: true makes them
// BASE_BACKUP archives) and go through the executor's pipeline like
// every other artifact. Restore picks the newest base backup before the
// target, replays WAL from the bucket in a temporary server of the
// backup's major version, and either loads the result into the live
// server with the engine's side-database swap or leaves a data
// directory for a new server.
//
// Not yet: WAL objects are compressed and checksummed but not encrypted
// or signed (Header.Encryption is where a scheme will be named, encode
// where it will seal; base backups get whatever the executor's artifact
// pipeline does); a promotion of the source (a new timeline) restarts the
// stream on the new timeline without its history file, so restores cross
// no timeline switch; base backups with tablespaces other than the
// default are taken but not restored; a restore to a time stages all the
// WAL after the base backup, not just up to the target.
package pitr
