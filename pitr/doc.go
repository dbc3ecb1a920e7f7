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
// each a header line (timeline, LSN range, checksums, the server's
// clock; nothing of the data), with signing on an SSH signature of that
// line (namespace capsule-wal; the header holds the payload's sha256, so
// the signature covers the whole object with no second request), and the
// WAL, zstd-compressed and, when the source (else the worker) has
// recipients, encrypted with age to them. Writes are create-only
// and the name carries the lease's attempt, so a zombie holder never
// overwrites its successor's objects; the slot's position advances only
// after the bucket acknowledged the write. Objects of two holders may
// overlap: WAL at one LSN of one timeline is the same bytes whoever
// wrote it. Readers judge the signature by the same Trust as backups'
// indexes (unsigned WAL only with --allow-unsigned) and open encrypted
// WAL with the worker's and the source's identities; objects written
// before encryption and signing stay readable. With worker.retainFor
// each object gets the same Object Lock retain-until date as backups;
// retention skips the objects the bucket still keeps.
//
// Jobs runs a worker's streams and slot guards (Job: a source, its
// cluster and the bucket its WAL goes to), one start and stop path for
// every caller: the configured pitr sources of "capsule worker", and the
// plans with PITR of the CnvrgApp scanner (scanner.Scanner.PITRJobs),
// followed as they change.
//
// Base backups are the postgres engine's (pitr: true makes them
// BASE_BACKUP archives, with the databases and tables of the server
// recorded) and go through the executor's pipeline like every other
// artifact. Restore picks the newest trusted base backup before the
// target, replays WAL from the bucket in a temporary server of the
// backup's major version, and either loads the result into the live
// server with the engine's side-database swap or leaves a data
// directory for a new server. Tablespaces other than the default (their
// <oid>.tar archives) are unpacked beside the temporary server's data
// directory, or into the new data directory's TablespaceDir, and
// linked from pg_tblspc/<oid>; nothing goes where the source host kept
// them. On a worker, Restorer runs it for a
// Restore request that names a point in time (executor.PointInTimeRestorer),
// on the worker's scratch space, fenced by the request's attempt, from
// base backups its trust accepts. VerifyBase (the executor's verifier of
// base backups) replays one to consistency the same way and checks the
// databases and tables it recorded.
//
// After a promotion of the source (a new timeline), the stream stores
// the new timeline's history file (TIMELINE_HISTORY) once, create-only,
// beside the WAL as wal/<cluster>/<source>/<timeline>.history.zst (the
// same form as WAL objects, checksummed and signed, never encrypted: it
// holds positions and reasons, no data); when the bucket lacks the
// parent timeline's WAL up to the switch, the stream fetches that first,
// then the new timeline from the segment the switch is in. A restore
// follows the newest timeline whose history descends from the base
// backup's timeline after the backup's end and whose WAL has no gap: it
// stages each timeline's WAL up to the switch in that timeline's segment
// files (the switch segment's bytes before the switch also in the next
// timeline's file, as the server has them), the history file, and
// recovers with recovery_target_timeline set to it; the recoverable
// window follows the same route.
//
// Not yet: a restore to a time stages all the
// WAL after the base backup, not just up to the target; base
// backups record no row counts (a physical copy is consistent only at
// its stop LSN), so a verification reads every table but compares no
// count; the recoverable window (RecoverableWindow: capsule ls,
// describe, the API and the page) judges the signatures of the base
// backups, the history files and the WAL objects at its end, not of
// every object in between (a restore judges each one it replays);
// retention never deletes a timeline's history file (a few bytes each).
package pitr
