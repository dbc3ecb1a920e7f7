// Package legacy reads the backups that the platform's old backup
// service (cnvrg-capsule 1.0.0 to 1.0.3) left in a bucket, so that
// capsule lists, restores, verifies and imports them.
//
// # The old layout
//
// The old service wrote at the bucket's root, under its --dst-dir
// (CNVRG_CAPSULE_DST_DIR; DefaultDir, cnvrg-smart-backups, when unset),
// beside capsule's prefix rather than under it:
//
//	<dir>/ping                                a random id it wrote and read back
//	<dir>/<backupId>/statefile.json           1.0.3 (1.0.0 to 1.0.2: indexfile.json)
//	<dir>/<backupId>/<shortuuid>-pgdump.tar   pg_dump --format=t, uncompressed, no checksum
//
// A backup id is postgresql-<shortuuid>, mixed case
// (requests.ValidateLegacyID); capsule keeps it as stored, and a request
// names it legacy:<id> (requests.LegacyPrefix). A Store is opened on the
// whole bucket (bucket.Unprefixed of capsule's view) and the folder.
//
// # Secrets
//
// A state file holds the bucket's access keys and the database's
// password in plain text, and the shell commands the old service ran.
// capsule never runs those commands, and never holds those values: a
// state file is read through a size limit (MaxStateFile) into a struct
// with only the fields capsule needs (backupId, date, status,
// serviceType, service.name, service.dumpfile, rotation, requestType,
// statefileVersion); the decoder skips the rest. Nothing a reason or an
// error says quotes the file (a JSON decoder's own messages can quote a
// character or a value: they are never used). SecretsWarning tells the
// operator, and Import with DeleteStateFiles removes the files.
//
// # What is believed
//
// A state file is data, not authority (the same rules as capsule's own
// indexes). It is believed only when its backupId is its folder's name,
// its serviceType is postgresql, its status one the old service wrote,
// its service.name a <namespace>/<name>, its date a time, and its
// dumpfile a plain file name: the dump is looked for in the backup's own
// folder only, among the objects the listing found there, and read
// through the size the listing gave (a dump replaced since fails the
// read). Anything else is a Damaged entry with its key and reason, never
// a backup.
//
// # Listing
//
// The old backups belong to no capsule cluster: `capsule ls` lists them
// after capsule's own whatever --cluster says, and the API's /v1/clusters
// in its legacy array, each marked legacy: true, with checksum and
// verification "none". A backup whose status is not finished is listed
// but cannot be restored.
//
// # Restore and verify
//
// The executor finds the backup (Store.Find) and gives the postgres
// engine the dump as a postgres.FormatTar backup: restored into a side
// database and swapped in like capsule's own backups, streaming with
// one pg_restore. There is no checksum: the result says so. A
// verification's outcome is in its result only: capsule writes nothing
// into the old folder.
//
// # Import
//
// Import converts each finished backup into a capsule backup of the
// configured cluster and the old source's name: the dump re-stored
// through the backup pipeline (zstd, sha256) as artifact Artifact of
// backup ImportedID(id), labelled with the old id, date and state-file
// shape. Replicas may run it at once: each writes under an attempt
// folder of its own and the create-only index decides; losers remove what
// they wrote, and a later run skips what has an import. DeleteStateFiles
// then deletes the state files of the imported backups and the failed
// ones (they have nothing to import); the dumps stay (remove the folder
// by hand once the imports are verified), and a folder without a state
// file is no longer listed. Backups still in progress keep theirs. Imported backups have no plan, so a
// plan's retention leaves them alone unless it includes manual backups.
package legacy
