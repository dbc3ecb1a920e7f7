// Package mongodb is the engine for MongoDB, in pure Go with the official
// driver (go.mongodb.org/mongo-driver v1): no mongodump, no child process.
//
// Source settings: url (mongodb://USER@HOST:27017/?authSource=admin, never
// with a password in it), passwordEnv|passwordFile (resolved by the worker
// into the source's secret, which the engine adds to the driver's
// credential, never to a string), databases (a list of names, or "all":
// every database but admin, local and config), batchSize (documents per
// insert on restore, default 1000), tls (caFile, serverName, certFile,
// keyFile, insecureSkipVerify: turns TLS on with each server's certificate
// checked; the url's own tls options, which the driver also honours,
// must then be absent).
//
// Privileges: a backup needs read on its databases (listDatabases too for
// "all"), as the built-in backup role gives; a restore needs readWrite on
// each restored database and bypassDocumentValidation, as the built-in
// restore role gives.
//
// # Artifacts
//
// One artifact per database, db-<name>.bson (characters outside
// [a-z0-9._-] replaced by '_', with a -2, -3... suffix on a clash), in
// format "mongodb-bson/v1": a framed stream of records, each one kind
// byte followed by one BSON document (whose own int32 length ends it):
//
//	'H' {format: "mongodb-bson/v1", database, server}     once, first
//	'C' {name, type, options, indexes: [...]}             per collection or view
//	'D' <the document, byte for byte as the server sent it>
//	'E' {count}                                           ends the collection
//	'Z' {collections, documents}                          once, last
//
// type is "collection", "timeseries" or "view"; options are
// listCollections' (capped, size, max, validator, validationLevel,
// collation, timeseries, viewOn, pipeline, ...); indexes are listIndexes'
// without the legacy ns field. Collections come first, then views; system
// collections are left out. Documents keep every BSON type (Decimal128,
// binary subtypes, dates, ...) and their field order, since they are
// copied as raw BSON. Each collection is read with one find: a backup is
// not a point-in-time snapshot across collections.
//
// # Restore safety
//
// Restore first verifies every artifact (job.Artifacts.Verify): a corrupt
// backup is refused before anything is created on the server. It then
// loads each collection into a side collection of its database,
// capsule_tmp_<restore id>_a<attempt>_<n>, created with the backed-up options, and
// builds its indexes there (documents inserted with
// bypassDocumentValidation, as they were valid when written). Only when
// every artifact was read again to its end and checked are the side
// collections renamed into place with renameCollection: with dropTarget
// when DropPrevious is set (on servers without dropTarget, such as
// FerretDB, the target is dropped just before the rename), otherwise the
// replaced collection is first renamed to
// <name>_capsule_prev_<restore id>_a<attempt> and reported as
// RestoreInfo.Previous. (<restore id> is the id's last 32 letters and
// digits.) The renames begin only after RestoreJob.CheckFence confirms the
// lease; a failed fence drops the attempt's side collections. A restore
// drops the side collections its request's earlier attempts left in each
// database it stages, never their previous collections. Views are then recreated from
// their pipeline. Time-series collections cannot be renamed: they are
// replaced in place (dropped, recreated, loaded) after the swap, from a
// second read of their artifact. On error or cancellation before the swap, every side
// collection is dropped and the target is as it was. Collections of the
// target that the backup does not hold are left alone.
//
// # Tests
//
// No MongoDB server can run where capsule is developed: the tests run the
// shared suite against FerretDB v1.24.0 run as a child process (its SQLite
// handler on a free loopback port; internal/tools/ferretdb, built into
// .tools/bin by scripts/install-tools.sh), a stand-in named as such.
// FerretDB v1 lacks views, validators, collations and dropTarget, and
// crashes on Decimal128, so its fixtures avoid them; the same suite, with them, runs
// against a real MongoDB when CAPSULE_TEST_MONGO_URL (and
// CAPSULE_TEST_MONGO_PASSWORD) is set.
package mongodb
