// Package postgres is capsule's PostgreSQL engine: it backs up a
// database (or every database of a server plus its roles) with pg_dump,
// restores with pg_restore into a side database that it swaps in by
// renaming, and verifies a backup by restoring it into a scratch
// database and counting rows.
//
// # Source
//
//	engine: postgres
//	url: postgres://USER@HOST:PORT/DB   # never with a password in it
//	passwordEnv: VAR                    # or passwordFile: PATH (resolved by the worker)
//	sslmode: verify-full                # libpq's sslmode (also ?sslmode= in url); default
//	                                    # prefer, or verify-full when tls is set
//	tls: {caFile: /ca.pem}              # checked TLS: caFile, serverName (url host must then
//	                                    # be an IP), certFile+keyFile, insecureSkipVerify
//	databases: all                      # optional: every database plus roles; DB is then only
//	                                    # where to connect (default postgres)
//	restoreJobs: 2                      # pg_restore jobs (server connections); 1 streams with
//	                                    # no local copy (see Restore)
//	stagingDir: /var/lib/capsule        # where a parallel restore copies the archive
//	                                    # (default $TMPDIR or /tmp)
//	allowSuperuser: true                # let restores and verifications run as a role
//	                                    # that reaches beyond its databases (see Privilege)
//
// # Secrets
//
// The password comes only from Source.Password. The control connection
// (pgx) gets it in its configuration; pg_dump, pg_dumpall and pg_restore
// get it in PGPASSWORD in their environment, which on Linux only their
// own user and root can read, and which dies with them (a password file
// would outlive a killed worker). It is never in a child's argv (the
// tools get the database as -d "dbname='…'" and the rest of the
// connection from PGHOST, PGPORT, PGUSER, PGSSLMODE), a log line, an
// error, the BackupInfo or an artifact. The tools get nothing else of
// the worker's environment (internal/childproc: PATH, a private HOME and
// TMPDIR, LANG/LC_ALL=C, TZ=UTC), so the source alone decides where they
// connect and they never see the worker's other secrets. TLS reaches
// them as PGSSLMODE, PGSSLROOTCERT, PGSSLCERT and PGSSLKEY, and a
// tls.serverName as PGHOST (the name checked) with PGHOSTADDR (the url's
// IP address, where they connect). The tests watch every process's argv
// during a backup and a restore and read the tools' environment to prove
// this.
//
// # Backup
//
// One artifact per database, db-<name>.dump: pg_dump --format=custom
// --compress=0 streamed from pg_dump's stdout to the artifact (no temp
// file; capsule's pipeline compresses, faster than pg_dump's zlib). The
// custom format is what pg_restore can restore selectively and in
// parallel; the directory format cannot stream. The engine first opens a
// REPEATABLE READ transaction, exports its snapshot and starts pg_dump
// --snapshot=<it>, so the archive is one consistent snapshot even under
// concurrent writes. Every table's exact row count is read from the
// archive itself as it streams past (archive.go reads the custom format:
// a table's COPY data is one line per row), so the counts are exactly
// what the archive holds and no table is scanned twice (counting with
// count(*) besides the dump cost about 12% more server CPU). A table the
// archive reader cannot account for (an archive version it does not
// know) is counted with count(*) in the same transaction, still open;
// Details say which way ("rowsFrom": archive, count or archive+count).
//
// BackupInfo records the server version, the pg_dump version, Format
// (pg_dump-custom.v1), the host, port, user and database names, and in
// Details per database: its encoding, collation, owner, size, archive
// size, and per table the exact row count and the planner's estimate
// (pg_class.reltuples). pg_dump older than the server's major version is
// refused with an error saying which version to install.
//
// With databases: all the first artifact is globals.sql (pg_dumpall
// --globals-only: roles, memberships, tablespaces), then one archive per
// database that accepts connections, templates excluded, and capsule's
// own side, previous and scratch databases (*_capsule_restore_*,
// *_capsule_prev_*, *_capsule_verify_*) excluded. Role password hashes
// (never the source's password itself) are in globals.sql when the
// backing-up role is a superuser, since reading them needs one; other
// roles back up the roles without passwords.
//
// # Restore: side database, then swap
//
// For every database to restore, the engine creates <db>_capsule_restore_<id>_a<attempt>
// (from template0, with the backed-up encoding, collation and owner) and
// loads the archive into it with pg_restore --exit-on-error, in one of
// two ways:
//
//   - Parallel (restoreJobs above 1, the default 2), streaming from the
//     bucket (parallel.go): the archive's header and table of contents
//     (kilobytes) are read from the stream and written to a private
//     directory under stagingDir (default $TMPDIR or /tmp); pg_restore
//     --section=pre-data restores the schema from that file; the engine
//     reads the data blocks as they stream past and loads every table's
//     rows with COPY over restoreJobs connections (the rows cut at line
//     boundaries into batches that any free connection takes, so one big
//     table loads over all of them; large objects with lo_put); then
//     pg_restore --jobs=N --section=data --section=post-data, with a list
//     that leaves the data entries out, sets the sequences and builds the
//     indexes and constraints from the same file over N connections.
//     Nothing the size of the data touches local disk. Each COPY
//     statement must be exactly what pg_dump writes (COPY <table>
//     (<columns>) FROM stdin): any other fails the restore, since an
//     archive is data anyone who can write the bucket can forge. The
//     artifact is read to its end, so a damaged one fails with the
//     *engines.ChecksumError naming it, and the side database is dropped.
//     An archive the engine's reader does not know (a newer archive
//     version) is instead copied to local disk whole, read to its end
//     and checked before the side database is even created, and restored
//     by pg_restore --jobs=N from the copy, which is removed when the
//     restore ends (a copy left by a worker that died is removed by the
//     next restore: each staging directory holds a lock its worker
//     keeps). When stagingDir's filesystem lacks room for that copy, the
//     restore says so in the log and streams into one pg_restore.
//   - Streaming (restoreJobs 1): the artifact streams from the bucket
//     into one pg_restore reading stdin, with no local copy. The engine
//     always reads the artifact to its end, even when pg_restore stops
//     early, so a damaged artifact fails with the *engines.ChecksumError
//     naming it whatever pg_restore made of the bytes.
//
// The side database is then ANALYZEd so that it serves with statistics
// from its first query.
//
// A FormatTar backup (pg_dump-tar.v1: one pg_dump --format=tar archive,
// what the old cnvrg-capsule service made; see TarBackupInfo) always
// streams, with pg_restore --format=tar and one job. It records nothing
// but its artifact: the database's name and pg_dump's version come from
// the archive's header (read first), the side database takes the
// encoding and collation of the database it replaces, and every table's
// row count is read from the archive as it streams past, which is what
// Verify checks the restored tables against.
//
// Only when every side database is complete does the swap begin. For each
// database: ALTER DATABASE … WITH ALLOW_CONNECTIONS false (so reconnecting
// clients cannot race the rename), pg_terminate_backend of its sessions,
// and in one transaction ALTER DATABASE <db> RENAME TO
// <db>_capsule_prev_<id>_a<attempt> and ALTER DATABASE <side> RENAME TO <db> (both or
// neither; retried when a session slipped in). The time from closing the
// database to the commit is RestoreInfo.Downtime (summed over databases;
// Details has each one's) — tens of milliseconds here. The previous
// database is reopened and kept, named in RestoreInfo.Previous, until the
// operator drops it, or dropped at once with RestoreOptions.DropPrevious.
// A database that did not exist is simply renamed into place. If a swap
// fails, the swaps already made in the same restore are undone.
//
// Restore safety: nothing touches a live database before every side
// database is complete and every artifact has been read to its end and
// checked. A failed, corrupt or canceled restore (pg_restore is killed
// with the context) drops its side databases and any role it created,
// and leaves the live databases as they were. Names beside a database are
// cut to PostgreSQL's 63 bytes (a long request id is shortened with a
// hash; the database's name is cut, never the _a<attempt> suffix).
//
// Fencing: names carry the attempt, so a worker paused past its lease
// never loads into, or swaps, its successor's side database. The swap
// begins only after RestoreJob.CheckFence confirms the lease (renewed with
// If-Match); a failed fence drops the attempt's side databases. Each side
// and scratch database carries a comment naming its request and attempt in
// full ("capsule staging: kind=restore request=<id> attempt=<n>"). A
// restore or verification drops the side and scratch databases of its
// request's earlier attempts, and those of other requests whose comment
// matches their name and that RestoreJob.StaleStaging reports over (a
// result in the bucket, or a later attempt holding the lease). Previous
// databases are never dropped but by the attempt that made them
// (DropPrevious): one an earlier attempt kept (it swapped and died before
// its result) is reported in RestoreInfo.Previous beside this attempt's.
//
// # Privilege
//
// An archive is data, never authority: anyone who can write the bucket
// can forge one with a matching sha256 (the index is in the bucket too),
// and pg_restore runs whatever SQL its entries hold, as the restoring
// role; so does building an index or refreshing a materialized view,
// which call the archive's functions. A restore therefore runs with the
// least privilege that works: a role with CREATEDB that owns the
// databases it restores (to create the side database and rename it into
// place). As such a role, what a forged archive tries beyond its side
// database (COPY … PROGRAM, reading server files, ALTER SYSTEM, other
// roles' databases) is refused by the server and fails the restore with
// the live databases untouched. Restore and Verify refuse to run as a
// role that reaches further, unless the source sets allowSuperuser: true,
// with an error naming the role and why: a superuser; a role with
// CREATEROLE before PostgreSQL 16 (it may grant itself
// pg_execute_server_program); a role with the privileges of
// pg_execute_server_program, pg_read_server_files or
// pg_write_server_files. Backups may run as a superuser (reading role
// password hashes needs one).
//
// What the restoring role can still do, a forged archive can: drop or
// rename the databases it owns (the live target among them, before the
// swap), change its own password and settings, create databases. Give it
// nothing else to own.
//
// Ownership: when the restoring role is a superuser (allowed), objects
// keep their owners and privileges; otherwise pg_restore runs with
// --no-owner (a non-superuser cannot give objects away) and everything
// belongs to the restoring role. Restore option noOwner=true forces
// --no-owner. Ending other roles' sessions at the swap needs a superuser
// or pg_signal_backend.
//
// Roles (databases: all): restore reads globals.sql fully (so checks it)
// before anything else. It never runs the file's text: a lexer that
// knows dollar quotes, E'…' strings, quoted names and nested comments
// splits it, only the statements pg_dumpall writes about roles are
// accepted (CREATE ROLE, ALTER ROLE … WITH / SET, COMMENT ON ROLE, GRANT
// role TO role), and the SQL that runs is rendered from the parsed names
// and values. Any other statement refuses the whole file before a role
// is made. A restore as a superuser (allowed) or a CREATEROLE role
// creates only the roles the server lacks, with their attributes,
// password hashes, settings, comments and memberships; existing roles,
// the restoring one among them, are never altered (a restore must not
// reset a live role's password). Without allowSuperuser a created role
// gets no SUPERUSER, REPLICATION, BYPASSRLS or CREATEROLE and no setting
// only a superuser may set (the restore fails, saying so), and no
// membership in a role the restore did not create (left out, with a
// warning). Tablespaces and privileges on parameters are not restored.
// Restore option roles=skip skips roles; a role without CREATEROLE skips
// them anyway.
//
// Restore options (RestoreOptions.Extra): database=<name> restores only
// that backed-up database; roles=create-missing|skip; noOwner=true.
// Backups of all databases restore onto a databases: all source under
// their own names, or onto a one-database source: the backed-up database
// of that name, or the one named by database=.
//
// Not carried: database-level settings and grants (ALTER DATABASE … SET,
// GRANT CONNECT), which pg_restore applies only with --create, which
// would restore under the original name instead of the side one.
//
// # Verify
//
// Verify restores each backed-up database (or database=) into
// <db>_capsule_verify_<id>_a<attempt> on the target's server with --no-owner
// --no-privileges (a verification must not depend on, or create, roles),
// checks that every recorded table is present with exactly the recorded
// row count, and drops the scratch database, whatever the outcome. It
// never touches the target database. A backup that cannot be restored
// (corrupt artifact, pg_restore failure) returns the report so far, not
// OK, together with the error.
package postgres
