// Package elasticsearch is the engine for Elasticsearch 7.x/8.x and
// OpenSearch 1.x/2.x, spoken to over its REST API with net/http (basic
// authentication with the source's secret, tls for TLS). The server's
// kind and version come from GET / and decide which APIs are used.
//
// Source settings: url (https://HOST:9200, no credentials in it), user,
// passwordEnv|passwordFile (resolved by the worker), indices (names,
// aliases, data streams or patterns), tls (caFile, serverName, certFile,
// keyFile, insecureSkipVerify; an https url's certificate is checked
// against the system's CAs by default; caFile alone is the older
// spelling of tls.caFile), mode (logical, the default,
// or snapshot), repository (snapshot mode), templates and pipelines (extra
// name patterns to back up, and that a restore may replace), batchSize
// (default 1000), keepAlive (default 5m).
//
// # Logical mode
//
// Backup resolves the patterns (GET /_resolve/index; _cat/indices before
// 7.9) to open indices and data streams, and writes these artifacts, one
// at a time:
//
//   - meta.json, first: format "es-logical/v1"; per index its restorable
//     settings (flat; index.uuid, creation_date, version.*, provided_name
//     and the like left out), mappings and aliases, and the artifact that
//     holds its documents; the data streams; the composable index templates
//     that match a backed-up name (or a templates pattern), the component
//     templates they use, and the ingest pipelines the indices and
//     templates name as default or final pipeline (and those these call,
//     and those matching a pipelines pattern). Templates and pipelines the
//     cluster manages itself (_meta.managed) are left to it.
//   - index-<name>.ndjson and datastream-<name>.ndjson: one NDJSON line
//     {"capsule":"es-docs/v1","index":NAME}, one line per document
//     {"_id":..,"_routing":..,"_source":{..}}, and a trailer
//     {"_end":{"count":N}}. Names that are not [a-z0-9._-] are replaced by
//     '_' (with a -2, -3... suffix on a clash); meta.json maps them.
//
// Documents are read through a point in time sorted on _shard_doc and
// paged with search_after (Elasticsearch 7.12 and later), or a scroll
// sorted on _doc elsewhere (OpenSearch, older Elasticsearch). If the point
// in time or scroll expires midway the backup fails with ErrContextExpired
// naming the index: resuming in a new one would mix two views of the data.
//
// Restore creates each index with its settings and mappings but with no
// replicas, no refresh and no default or final pipeline (documents were
// ingested already; running them through a pipeline again would change
// them), loads the documents with _bulk in bounded batches (batchSize
// documents or 8 MiB), then applies the remaining settings, refreshes and
// checks the count. Documents refused with 429 are sent again after a
// doubling pause; any other refused document fails the restore with a
// *BulkItemError naming it. Data streams are loaded with op_type create
// into the stream, which its restored template recreates.
//
// # Restore safety
//
// Restore first reads meta.json and verifies every other artifact
// (job.Artifacts.Verify): a corrupt backup is refused before anything is
// created or changed on the cluster. Without options it then replaces each
// index in place (delete, create, load): a restore that fails or is
// canceled while loading leaves the indices it had replaced partly loaded.
//
// With the restore option renameSuffix (RestoreOptions.Extra), every index
// I is loaded into I<suffix>-a<attempt> beside the live one (the attempt,
// so that a worker paused past its lease never loads into its successor's
// copy), which stays untouched
// and searchable; only once every artifact was read (again) to its end and
// checked are templates and pipelines written and, in one atomic POST /_aliases,
// the backed-up aliases moved to the copies and the name I pointed at its
// copy (where I is free or already an alias; a live index I keeps its
// name, and is reported as Previous, unless DropPrevious removes it in the
// same atomic call). On error or cancellation the copies are deleted. A
// copy's name that exists already is refused before anything is created.
// Data streams cannot be loaded under another name: they are replaced in
// place after the swap.
//
// Every restore calls RestoreJob.CheckFence (the lease holder renews its
// lease) immediately before its first write to live names: before the
// templates and the _aliases call with renameSuffix, before the first
// delete in place and in snapshot mode. A failed fence deletes the
// attempt's copies and changes nothing live. Copies a crashed attempt left
// are not removed by later attempts (their names do not say which request
// made them): delete I<suffix>-a<n> indices that hold no alias by hand.
//
// # Forged backups
//
// A backup is data, not authority: whoever can write the bucket's backups/
// can forge a meta.json or snapshot.json whose checksum the index
// records. Before the first request built from it, a restore refuses
// (ErrTooLarge, ErrBadName, ErrOutsideTarget, naming the artifact and the
// name) a backup that:
//
//   - has a meta.json or snapshot.json larger than 64 MiB (they are read
//     whole);
//   - names an index, alias, data stream, template, pipeline, snapshot or
//     repository that is not one real name: Elasticsearch's index name
//     rules, tightened (lowercase except pipeline ids; none of
//     \ / * ? " < > | , # : % or white space; not starting with - _ or +;
//     not . or ..; at most 255 bytes). So never *, _all, a pattern, a
//     comma list or anything that changes a request's path; names are
//     also escaped in every path;
//   - names an index or data stream outside the target source's indices:
//     one its patterns match, or one they resolve to on the cluster (the
//     indices of a selected alias);
//   - would create or move an alias that an index outside indices holds;
//   - has an index template that does not match templates and applies to
//     index patterns outside indices (or would replace one that does);
//   - has a component template (pipeline) that matches neither templates
//     (pipelines) nor indices and would replace a different one of that
//     name on the cluster;
//   - (snapshot mode) names a repository other than the target's
//     repository setting.
//
// These checks make read-only requests (GET /_alias, the template and
// pipeline listings, _resolve/index) and nothing else. While documents
// load, a line longer than 100 MiB fails the restore with ErrTooLarge
// (one document is held whole; Elasticsearch refuses larger requests by
// default), and what follows a documents artifact's trailer is read
// without being held.
//
// # Snapshot mode
//
// With mode snapshot the engine drives the cluster's own snapshot API into
// a repository the cluster already has (normally of type s3): it takes a
// snapshot of the resolved indices and data streams
// (include_global_state false), polls it to SUCCESS, and writes one
// artifact, snapshot.json (format "es-snapshot/v1"), recording the
// repository, snapshot name and uuid and each index's aliases; SourceInfo
// names the repository and snapshot too. Restore reads snapshot.json to
// its end, checks that the snapshot exists with the recorded uuid, and
// restores through POST /_snapshot/REPO/SNAP/_restore: in place (delete,
// then restore), or with renameSuffix into renamed indices whose aliases
// are then swapped as above. The snapshot's data lives in the cluster's
// repository, not in capsule's bucket: deleting the capsule backup does
// not delete the snapshot.
//
// # Tests
//
// No Elasticsearch can run where capsule is developed: the tests run
// against a stand-in, an HTTP test server in standin_test.go that
// implements exactly the API subset the engine calls (and refuses, failing
// the test, any request the real API would refuse), with injectable
// per-item and whole-request 429s, per-item errors and point in time
// expiry. The same suites run against a real cluster when
// CAPSULE_TEST_ES_URL is set (with CAPSULE_TEST_ES_USER,
// CAPSULE_TEST_ES_PASSWORD, CAPSULE_TEST_ES_CAFILE, and
// CAPSULE_TEST_ES_REPOSITORY for snapshot mode).
package elasticsearch
