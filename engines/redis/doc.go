// Package redis is capsule's engine for Redis (7.0 and later; older
// servers back up in logical mode with a PTTL-derived expiry).
//
// A source is {engine: redis, url: redis://[user@]HOST:PORT or rediss://
// for TLS (tls: {caFile, serverName, certFile, keyFile}; the server's
// certificate is always checked, against the system's CAs by default),
// databases: [0, 3] | all, mode: logical | rdb, logicalRead: auto | sync
// | scan}; the password
// arrives through passwordEnv/passwordFile (Source.Password) and is sent
// only in AUTH, never logged or recorded.
//
// Logical mode (the default) writes keys.bin: a framed format described
// in format.go (header, the FUNCTION DUMP payload, a section per
// database, per key its bytes, absolute expiry in ms and DUMP payload, a
// trailer with a count and a CRC-32C). The setting logicalRead says how
// it reads the keys. "auto" (the default) and "sync" take the server's
// snapshot over the replication protocol (rdb.go's replStream, as RDB
// mode does) and walk it (stream.go): each entry becomes a key record
// whose DUMP payload is the entry's type byte and value encoding as the
// stream holds them, the stream's RDB version and the CRC-64, which is
// byte for byte what DUMP returns, with no command per key; expiries come
// from the stream's expire records, keys already expired in the snapshot
// are skipped, idle and frequency records dropped, and the functions are
// the stream's function records. A cut or damaged stream fails the
// backup (the RDB's CRC-64) before the artifact is closed, and so does an
// entry the walker does not know, naming logicalRead: scan. "auto" falls
// back to the SCAN read, logging the reason once, when the server refuses
// replication before the snapshot's first byte (an ACL without +sync
// +replconf, SYNC renamed, a replica without its master) or reports
// loaded modules; "sync" fails instead. "scan" (and the fallback) SCANs
// every selected database and pipelines PEXPIRETIME and DUMP for a whole
// SCAN batch (2,000 keys by default) per round trip, the next SCAN and
// batch sent before the last batch's replies are read (backup.go's
// fetcher, on a bare RESP connection, resp.go); the server never forks.
// It needs only +@read +scan +dump for database 0; other databases need
// +select too, and the functions need FUNCTION DUMP (they are skipped
// with a warning, and the index says so, when it is denied).
//
// RDB mode fetches the server's snapshot over the replication protocol as
// redis-cli --rdb does (REPLCONF rdb-only, capa eof, SYNC; both the
// length-prefixed and the diskless EOF-marked transfer), a point-in-time
// copy of every database, stored unchanged as dump.rdb; the user needs
// +sync +replconf. The snapshot is walked as it streams (rdbWalker: it
// finds where each value ends without decoding it, up to the stream type
// of Redis 7.2), so a snapshot capsule could not restore fails the
// backup. A restore replays it: each key's raw encoding is cut out of the
// file, a string's value sent as it is and any other type framed as a
// DUMP payload for RESTORE, so the server gets exactly the bytes it
// wrote. Limits: module types, module aux data, the hash types with field
// expiry of Redis 7.4 and Redis 8 key metadata are refused with an error
// naming them.
//
// The index records the mode (format redis-keys/1 or redis-rdb/1, and
// sourceInfo.mode), the server version and the RDB format version.
//
// Restore safety: two passes. The first reads the whole artifact and
// checks it (the sha256 the index recorded, the framing, every DUMP
// payload's CRC-64, the RDB file's CRC-64) without touching the target;
// then the target's RDB version is checked (a backup in a newer RDB
// format than the target reads is refused with a clear error), and
// RestoreJob.CheckFence confirms that this attempt still holds the
// request's lease (a worker paused past its lease must not flush what its
// successor restored). Only then is the target changed, by one of two
// loads (source setting restoreLoad: auto, the default; replicate;
// replay).
//
// Full sync (replicate.go, master.go, rdbbuild.go): the target becomes a
// replica of the worker for one full sync and loads the backup as a
// server loads an RDB (tables sized once, no per-key lookup). The worker
// listens on its own address towards the target (port 0), sets the
// target's masterauth to a random one-time token (masteruser cleared;
// both CONFIG GET first and put back), CheckFence, REPLICAOF; the only
// connection it serves is one that AUTHs with the token first (every
// read bounded, one connection, 5 s to connect); it answers PSYNC with
// +FULLRESYNC and a diskless EOF-marked transfer (length-prefixed for a
// replica without capa eof) of the stored dump.rdb (rdb mode) or of an
// RDB built from keys.bin as it streams (SELECTDB, RESIZEDB from the
// first pass's counts, EXPIRETIME_MS, type byte, key, value encoding;
// FUNCTION2 records; CRC-64). The end mark is written only after the
// artifact was read to its end and checked, so a cut transfer is one the
// replica discards: the target keeps its data (repl-diskless-load
// disabled writes the transfer to a file and flushes only when it is
// whole; swapdb keeps the old data until the load succeeded; on-empty-db
// loads from the socket only into an empty server). A key listed twice
// (a loading server panics) or a value encoding the walker does not know
// cuts the transfer. After the replica's first REPLCONF ACK and INFO
// saying it loaded, REPLICAOF NO ONE (Downtime is REPLICAOF to NO ONE);
// after any failure past REPLICAOF the worker still sends REPLICAOF NO
// ONE and puts masterauth back, and the error says what state the target
// is in. A full sync replaces every database and the functions, so auto
// takes it only when that is what the restore means (every target
// database with keys is restored, the functions option flush or the
// target without libraries, the target a master, the rights to CONFIG
// and REPLICAOF, no tls-replication, not a SCAN-read backup, at most
// maxFullSyncKeys keys for the duplicate check's 64 MB) and replays
// otherwise, logging why, as it does when the target does not connect
// or the transfer is cut for content it must not send; replicate fails
// instead. Verification always replays.
//
// Replay: the databases the backup holds are flushed (FLUSHDB each, never
// FLUSHALL; databases the target's own databases setting excludes are
// left alone) and the second pass replays the keys (replay.go), pipelined
// with the replies read by a goroutine: strings in one MSET per batch (SET
// ... PXAT <abs-ms> with an expiry, from Redis 6.2), other types with
// RESTORE key <abs-ms> payload REPLACE ABSTTL. A key whose expiry has passed
// is skipped, not resurrected. Function libraries are restored with
// FUNCTION RESTORE REPLACE (restore option functions: replace, flush or
// skip). The target is incomplete from the flush to the end of the
// replay (RestoreInfo.Downtime); a failure in that window (the server
// going away, say) leaves the flushed databases partly restored, and the
// error says so.
//
// Verification (engines.Verifier, verify.go) restores into a scratch
// redis-server the engine starts itself (scratch.go: setting redisServer,
// a private directory, a unix socket, no TCP port, no persistence) and
// checks key counts, types and a sample of values against what the
// backup recorded (typesPerDatabase and sample in the index's details;
// sample.go), then kills the server and removes its directory.
package redis
