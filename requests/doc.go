// Package requests holds capsule's wire types and the bucket's key
// layout: the Request a client writes under requests/, the Lease a worker
// holds under leases/, the Result under results/, a Cancel under cancel/,
// and the keys of backups. Every object carries "apiVersion": "capsule/v1"
// and a kind; JSON Schemas for them live in the repository's schemas/
// folder, and the tests check written objects against them.
//
// Validation refuses unknown fields and names the bad field in its error:
// a request names a configured source and never carries connection
// details or secrets. Requests are written by hand too, so Parse matches
// field names exactly (encoding/json alone would take "Source" for
// "source"), refuses a field given twice, names the field of every bad
// value (a createdAt that is not RFC 3339), and skips a leading UTF-8
// byte order mark. What each kind acts on is defined once, here:
// SourceName, BackupRef and Describe (what its result records).
//
// A Restore names either a backup (backupId) or a point in time of a
// PostgreSQL source (pointInTime: its source and exactly one of time,
// lsn and latest), never both; the nested object is parsed as strictly
// as the request, its bad fields named pointInTime.<field>.
//
// Control objects are read through a size limit (DefaultMaxControlObject,
// 1 MiB, unless configured): anyone who can write to the bucket can write
// one, and no reader takes one whole without a bound.
package requests
