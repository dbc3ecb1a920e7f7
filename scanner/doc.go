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
// source, which the executor resolves through Scanner.Sources. A plan holds:
//
//   - the cluster: <namespace>/<cnvrgapp>, or Config.Cluster;
//   - the source: the engine of the block (postgres, redis, elasticsearch),
//     host <svcName>.<namespace> (Config.HostFor changes that), port, and
//     credentials from the credsRef Secret (backup.credsRef, else the
//     service's credsRef): POSTGRES_USER, POSTGRES_DB (unset: every
//     database) and POSTGRES_PASSWORD; CNVRG_REDIS_PASSWORD (else the
//     password of REDIS_URL); CNVRG_ES_USER and CNVRG_ES_PASS. The
//     operator's Elasticsearch is reached over plain http, every index.
//     POSTGRES_HOST is not used: the host is the Service's;
//   - the destination: the bucketRef Secret (default cp-object-storage):
//     CNVRG_STORAGE_TYPE minio or aws, CNVRG_STORAGE_ENDPOINT, _REGION,
//     _BUCKET, _ACCESS_KEY and _SECRET_KEY (aws with both keys empty uses
//     the pod's IAM role); capsule's objects go under Config.Prefix
//     (capsule/) in that bucket;
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
// Secrets are read from the informers' cache when the plans are rebuilt
// (on every change of a CnvrgApp or of a Secret one names) and stay in
// memory: requests name the plan's source, never a password, and a plan
// prints (Plan.MarshalJSON) without its secrets.
//
// An invalid block (a bad period, a missing Secret or key, an unsupported
// storage type) is left out and reported: a log line naming the field and
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
// Buckets returns every bucket the plans name, keyed by BucketSpec.URL;
// Changed is closed when that set changes (a CnvrgApp added or removed, a
// bucketRef Secret changed). The fleet package runs one watcher per bucket
// from it, so a worker follows the set without a restart.
//
// # Permissions
//
// get, list and watch on cnvrgapps.mlops.cnvrg.io and on secrets (in the
// watched namespaces), and create on events.
package scanner
