// Package metrics exposes what an operator alerts on, in the Prometheus
// exposition format, from a registry of its own (never the global one).
//
// A Registry is fed by hooks: Observe is the watcher's Events hook
// (claims, takeovers, renewals, losses, hand-backs, abandoned requests,
// and each finished request's kind, engine, status, run time and bytes);
// ObserveSQS is the notify.Listener's Observe hook (messages by outcome,
// failed SQS calls); InstrumentBucket wraps the bucket to count and time
// every call by operation and outcome. Handler serves it all at /metrics.
//
// The newest-success gauges (capsule_last_backup_success_timestamp_seconds
// and capsule_last_verification_success_timestamp_seconds, per cluster and
// source) answer "when did this source last have a good backup?". Each
// worker knows the backups it made itself, so LoadCatalog seeds the gauges
// from the bucket's catalog at start-up: a restarted worker reports the
// right age at once. Alert on the max over all workers:
//
//	time() - max by (cluster, source) (capsule_last_backup_success_timestamp_seconds) > 26*3600
//
// A source that never had a good backup has no series, so this alert does
// not fire for it (use absent() per source where that matters); a source
// whose backups were all deleted disappears at the next start-up. The
// verification gauge comes from each backup's newest verification record.
// Only what the index package believes seeds them: an index whose content
// does not match its key, or that finished in the future by the bucket's
// clock, moves no gauge (a forged index dated 2099 cannot silence the
// alert), nor does a verification record dated in the future.
//
// capsule_damaged_indexes_total counts the damaged indexes this process
// met (each key once, and logged once, through Registry.Damaged, which the
// worker shares with its API): alert when it grows.
//
// ObserveMaintenance counts what the worker's maintenance pass did:
// capsule_maintenance_deleted_objects_total (by job, retention or gc),
// capsule_maintenance_retained_objects_total (objects S3 Object Lock
// refused to delete) and capsule_maintenance_aborted_uploads_total. Dry
// runs count nothing.
//
// Example alert rules are in deploy/prometheus/alerts.yaml; a test checks
// that they use only names this package exposes.
package metrics
