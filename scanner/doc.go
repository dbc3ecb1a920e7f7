// Package scanner is the CnvrgApp scanner: it watches the cnvrg operator's
// CnvrgApp resources (mlops.cnvrg.io/v1, cnvrgapps) with client-go
// informers, in all namespaces or an allow-list, turns each enabled backup
// block into a Plan, and drops the plans' scheduled requests into their
// buckets. Any number of replicas run it, with no leader.
//
// # Plans
//
// Each spec.dbs.<svc>.backup block (pg, redis, es) with enabled: true is a
// plan named <namespace>/<cnvrgapp>/<svc>; that is also the name of its
// source, which the executor of the plan's bucket resolves through
// Scanner.Sources (see Tenants below). A plan holds:
//
//   - the cluster: <namespace>/<cnvrgapp>, or Config.Cluster;
//   - the source: the engine of the block (postgres, redis, elasticsearch),
//     host <svcName>.<namespace> (Config.HostFor changes that; svcName must
//     be a Service's name, an RFC 1123 label), port (1-65535), and
//     credentials from the credsRef Secret (backup.credsRef, else the
//     service's credsRef): POSTGRES_USER, POSTGRES_DB (unset: every
//     database) and POSTGRES_PASSWORD; CNVRG_REDIS_PASSWORD (else the
//     password of REDIS_URL); CNVRG_ES_USER and CNVRG_ES_PASS. The
//     operator's Elasticsearch is reached over plain http, every index.
//     POSTGRES_HOST is not used: the host is the Service's;
//   - the destination: the bucketRef Secret (default cp-object-storage):
//     CNVRG_STORAGE_TYPE minio or aws, CNVRG_STORAGE_ENDPOINT, _REGION,
//     _BUCKET, _ACCESS_KEY and _SECRET_KEY (aws with both keys empty uses
//     the pod's IAM role); the endpoint must be http(s)://HOST[:PORT] and
//     nothing more, the bucket and region plain names; capsule's objects
//     go under Config.Prefix (capsule/) in that bucket;
//   - the schedule: backup.period, "<number><unit>" with unit s, m or h
//     (default 24h), or a cron expression (five fields or @daily...,
//     github.com/robfig/cron/v3, evaluated in UTC);
//   - the rotation: backup.rotation, how many successful backups to keep
//     (default 5, at least 1);
//   - the verification schedule, if any: backup.verify {every: N} or
//     {period: 24h}, or, since the shipped CRD prunes fields it does not
//     declare, the annotation capsule.cnvrg.io/verify-<svc>: "every=N" or
//     "period=24h" on the CnvrgApp (the block wins when both are there).
//
// Every value the scanner puts into a URL or a host name is checked first,
// and the URLs are built with net/url: a svcName such as
// "169.254.169.254/latest/meta-data" or "user@host" is a problem, not a
// plan.
//
// Secrets are read one by one, by name (get), when the plans are rebuilt:
// on every change of a CnvrgApp, and every Config.SecretRefresh (1m) so
// that a changed Secret is seen within that time. The scanner never lists
// or watches Secrets. What it read stays in memory: requests name the
// plan's source, never a password, and a plan prints (Plan.MarshalJSON)
// without its secrets.
//
// An invalid block (a bad period, a missing Secret or key, an unsupported
// storage type, a value that does not belong in a URL) is left out and
// reported: a log line naming the field and
// a Warning Event with reason InvalidBackupPlan on the CnvrgApp. The
// Event's name derives from the problem and the CnvrgApp's generation, so
// N replicas write one Event. A bad verification setting is reported the
// same way but only drops the verifications, not the backups.
//
// # Schedules without a leader
//
// Every replica computes each plan's current slot: the time rounded down to
// a multiple of the period since the Unix epoch (UTC), or the latest fire
// time of the cron expression. The slot's request id is
// requests.SlotID(plan, slot), and it is written create-only
// (client.Submit), after a look for the slot's committed index: with N
// replicas exactly one request exists per slot, and the others see
// bucket.ErrPreconditionFailed. Only the current slot is ever submitted, so
// a slot missed while no replica ran is caught up once, when one starts,
// not once per missed slot. A pass runs at each slot's start, every
// Config.Tick, and after each change.
//
// # After a backup
//
// A replica that saw a slot's request watches for its result. After a
// success it first decides on a verification (every N backups: when none
// of the plan's newest N successful backups is verified or being verified,
// it submits a Verify request for the newest, with id
// SlotID(<plan>/verify, slot of that backup)), then applies retention
// (retention.Runner.Apply with Keep = rotation, under the retention
// package's per-plan lease, so replicas running it together never race).
// Deciding on verification before retention keeps "every N" exact as long
// as N is at most rotation+1. A periodic verification (period) submits, at
// each of its slots, a Verify request of the newest successful backup,
// with id SlotID(<plan>/verify, slot). The worker records the outcome
// beside the backup (verify-<time>.json), which capsule describe shows.
//
// A plan that disappears (its CnvrgApp deleted, its backup disabled) gets
// no more requests from its next slot on; its source still resolves for
// RetiredSources so that a request submitted before finishes instead of
// failing as an unknown source.
//
// # Buckets
//
// Buckets returns a client for every bucket the plans name, keyed by
// BucketSpec.Key: the bucket's URL and the identity of the credentials
// that configured it ("role", or "keys-" and an HMAC of the keys under a
// key drawn at random by each process, never the keys). Changed is closed
// when that set changes (a CnvrgApp added or removed, a bucketRef Secret
// changed). The fleet package runs one watcher per client from it, so a
// worker follows the set without a restart.
//
// # Tenants
//
// Namespaces are tenants that do not trust each other, and one worker
// fleet serves them all. The rule: a request found in a bucket may use
// only the sources of the plans that name that bucket with the same
// credentials, and a plan's source is always in its CnvrgApp's own
// namespace. Scanner.Sources(key) are exactly those sources; any other
// name (another tenant's plan, a source of the worker's configuration)
// ends the request rejected: `source "…" is not served by this bucket`,
// the same message whether or not the name exists elsewhere. A Restore or
// Verify is checked on its target and on the backup's recorded source. The
// sources of the worker's configuration serve only its own --bucket.
//
// Two Secrets that name one bucket URL with different keys get separate
// clients, so wrong keys in one tenant's Secret never stop another's
// backups and nobody rides on another's keys. Each client serves only its
// own plans' sources; so when two tenants really share a bucket with
// different valid keys, a request of one may be claimed by the other's
// watcher and rejected (the scanner logs a warning): give each tenant its
// own bucket. Secrets with the same URL and the same keys share one client,
// and so do all that use the pod's IAM role: that access is the worker's
// own, and any namespace may name a bucket it reaches, so give tenants
// keys rather than the role.
//
// # Permissions
//
// get, list and watch on cnvrgapps.mlops.cnvrg.io, get on secrets (only
// those the CnvrgApps name, in their namespaces), and create on events.
package scanner
