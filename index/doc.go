// Package index owns backupIndex.json and the catalog built from it.
//
// A backup lives under backups/<cluster>/<source>/<backupId>/. Its
// artifacts are written first, each attempt under its own <attempt>/
// folder; backupIndex.json is written last, create-only, and is the
// commit mark: a backup without one does not exist as far as listing and
// restore are concerned, and a second attempt that finds one knows the
// work is done. Nothing there is ever rewritten: a verification is a new
// verify-<time>.json object beside the index, and readers merge the newest
// one into the Entry they show. This keeps every backup object
// write-once, so a bucket with S3 Object Lock can hold them.
//
// The index is self-describing (apiVersion capsule/v1, engine and format,
// server and tool versions, every artifact's key, sizes and sha256 of the
// stored bytes): a fresh capsule binary restores from the bucket alone.
// The JSON Schema is schemas/backupIndex.schema.json.
package index
