// Package mysql is capsule's engine for MySQL and MariaDB.
//
// A source is {engine: mysql, url: mysql://USER@HOST:PORT/DB, databases:
// [a, b] | all}; without databases the URL's database is backed up. The
// password arrives through passwordEnv/passwordFile (Source.Password) and
// reaches the tools only in a private option file (mode 0600, in the
// run's private directory from internal/childproc, removed afterwards,
// passed as --defaults-file): never in argv, the environment, a log line
// or the index. The tools get none of the worker's environment.
//
// TLS: with tls (caFile, certFile, keyFile, insecureSkipVerify) the
// driver and the tools encrypt and check the server's certificate for the
// url's host (ssl-verify-server-cert for MariaDB's tools, ssl-mode=
// VERIFY_IDENTITY for MySQL's); tls.serverName can only repeat the url's
// host, because the tools cannot be told another name. Without tls the
// connection is not encrypted.
//
// Backup: one mariadb-dump (or mysqldump) run over every selected database
// with --single-transaction (one consistent snapshot across all of them,
// without locking InnoDB tables), --routines --triggers --events
// --hex-blob, streamed into the artifact dump.sql. It is dumped with
// --databases --no-create-db, so the dump creates no database and
// switches between them only with "USE `db`;" lines; object definitions
// name no schema. The index records, per database, its character set and
// every table, view, trigger, routine and event.
//
// Restore containment: a dump is data, never authority (whoever can
// write the bucket can forge one with a matching sha256). No client
// program reads it: dump.go splits it into statements as the mysql
// client would (delimiters, DELIMITER lines, quoting under the session's
// sql_mode, /*!NNNNN */ comments against the server's version) and
// load.go sends them over the driver, so no client command (\!, system,
// source, connect, …) exists to run on the worker. The statements run as
// a temporary account (random name and password, the restoring account's
// host) that holds ALL PRIVILEGES on the side schemas and nothing else,
// dropped when the load ends: the server refuses the dump every other
// database, accounts, files and global settings. Before it is sent, each
// statement is checked against what mysqldump and mariadb-dump write; a
// client command, a USE of a database the index does not list, a name of
// another database, GRANT, CREATE USER, SET GLOBAL, INTO OUTFILE, LOAD
// DATA, a plugin, a FEDERATED or CONNECT table, dynamic SQL (PREPARE,
// EXECUTE) or a DEFINER other than the restoring account (or one the
// source's definers setting lists) fails the restore with an error that
// names the line, the statement and the reason. Triggers, views,
// routines and events are created by the loading account and recreated
// at the swap with the definer the dump named.
//
// Restore safety: staging and an atomic swap. The dump is loaded into
// side schemas <db>_capsule_restore_<id>_a<attempt> (its USE lines are pointed at
// them), read to its end (its sha256 checked) and compared with what the
// index recorded; any failure drops the side schemas and leaves the
// target untouched. Then, per database:
// the triggers of the staged and of the target tables are dropped
// (MariaDB and MySQL refuse to move a table with triggers to another
// schema: "Trigger in wrong schema"), one RENAME TABLE statement moves
// every table of every target to <db>_capsule_prev_<id>_a<attempt> and every staged
// table into the target (atomic), and the triggers, views (their
// definitions name the side schema, which is rewritten), procedures,
// functions and events are recreated in the target with the sql_mode and
// collation they were made under. The replaced tables are kept, with
// their triggers, in <db>_capsule_prev_<id>_a<attempt> unless DropPrevious; the
// replaced views, routines and events are not kept. The downtime
// (RestoreInfo.Downtime) runs from the first trigger dropped to the last
// object recreated: tables are never missing, but for that moment
// triggers, views and routines may be.
//
// An id that is not a schema name as it is (characters other than
// [a-z0-9_], or too long) is cut and given a hash of itself; the attempt is
// never cut. Fencing: the swap begins only after RestoreJob.CheckFence
// confirms the lease (a failed fence drops the attempt's side schemas),
// and a restore drops its request's earlier attempts' side schemas before
// it loads; schemas an earlier attempt kept as previous are reported in
// RestoreInfo.Previous, never dropped.
//
// Verify loads the backup into side schemas next to the target's
// (<db>_capsule_verify_<id>_a<attempt>), checks them against the index and
// counts their rows, and drops them.
package mysql
