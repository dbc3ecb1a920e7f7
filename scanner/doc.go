// Package scanner is the CnvrgApp scanner: it follows the cnvrg operator's
// CnvrgApp resources (mlops.cnvrg.io/v1, cnvrgapps) and the backup
// annotations the operator writes on PostgreSQL PVCs, in all namespaces or
// an allow-list, turns each enabled backup block into a Plan, and drops the
// plans' scheduled requests into their buckets. Any number of replicas run
// it, with no leader, and with whatever role they have (see Permissions).
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
//     database) and POSTGRES_PASSWORD (else the PostgreSQL image's
//     POSTGRESQL_USER, POSTGRESQL_DATABASE, POSTGRESQL_PASSWORD, which the
//     operator's pg-creds holds too), and POSTGRESQL_ADMIN_PASSWORD for
//     restores only (see Drop-in); CNVRG_REDIS_PASSWORD (else the
//     password of REDIS_URL); CNVRG_ES_USER and CNVRG_ES_PASS. The
//     operator's Elasticsearch is reached over plain http, every index.
//     POSTGRES_HOST is not used for a CnvrgApp's plan: the host is the
//     Service's;
//   - the destination: the bucketRef Secret (default cp-object-storage),
//     by CNVRG_STORAGE_TYPE:
//     minio or aws: CNVRG_STORAGE_ENDPOINT, _REGION, _BUCKET, _ACCESS_KEY
//     and _SECRET_KEY (aws with both keys empty uses the pod's IAM role),
//     an S3 bucket (s3://BUCKET/PREFIX?endpoint=…&region=…). For aws, an
//     endpoint whose host's first label starts with "minio" is the
//     operator's in-cluster MinIO URL, which it writes into every Secret
//     that configures none: it is ignored, with a log line, and the bucket
//     is on AWS, as the old capsule service did (it ignored every aws
//     endpoint); any other aws endpoint was set on purpose (a VPC or FIPS
//     endpoint) and is used, with a log line.
//     azure: an Azure Blob Storage container
//     (azblob://CONTAINER/PREFIX?account=NAME) of the account
//     CNVRG_STORAGE_AZURE_ACCOUNT_NAME, named by
//     CNVRG_STORAGE_AZURE_CONTAINER (else CNVRG_STORAGE_BUCKET), with the
//     account key CNVRG_STORAGE_AZURE_ACCESS_KEY, or without one the
//     default Azure credential (workload identity).
//     gcp: a Google Cloud Storage bucket (gs://BUCKET/PREFIX),
//     CNVRG_STORAGE_BUCKET, with the service account key in key.json of
//     the Secret CNVRG_STORAGE_GCP_SECRET_REF names (default
//     gcp-storage-secret, same namespace, read by name; it must exist);
//     when that Secret has no key.json, the key file capsule's own pod
//     has at CNVRG_STORAGE_KEYFILE (only the platform's
//     /opt/app-root/conf/gcp-keyfile/key.json is accepted: a path a
//     tenant chose could name another file of capsule's pod), else
//     Application Default Credentials (workload identity). Only a key of
//     type service_account with Google's token_uri is taken
//     (gcs.CheckCredentialsJSON). CNVRG_STORAGE_PROJECT is not needed.
//     The operator writes its MinIO URL (or NodePort URL) into
//     CNVRG_STORAGE_ENDPOINT of azure and gcp Secrets too, so there an
//     endpoint is used only when its host is an IP address (an emulator:
//     Azurite, served path-style with the account as the first path
//     segment; fake-gcs-server, which gets no credentials) or, for azure,
//     when it is the account's own blob endpoint
//     (https://ACCOUNT.blob.<sovereign cloud suffix>); any other is
//     ignored with a log line.
//     Every endpoint must be http(s)://HOST[:PORT] and nothing more, and
//     bucket, container, account and region names follow their cloud's
//     rules; errors name the Secret's key and never quote a key. capsule's
//     objects go under Config.Prefix (capsule/) in that bucket;
//   - the schedule: backup.period, "<number><unit>" with unit s, m or h
//     (default 24h; the number may be decimal, "1.5h", as the old service
//     read it), a Go duration ("1h30m"), or a cron expression (five fields
//     or @daily..., github.com/robfig/cron/v3, evaluated in UTC); a period
//     is a whole number of seconds;
//   - the rotation: backup.rotation, how many successful backups to keep
//     (default 5, at least 1);
//   - the verification schedule, if any: backup.verify {every: N} or
//     {period: 24h}, or, since the shipped CRD prunes fields it does not
//     declare, the annotation capsule.cnvrg.io/verify-<svc>: "every=N" or
//     "period=24h" on the CnvrgApp (the block wins when both are there);
//   - point-in-time recovery (PostgreSQL only): backup.pitr (true or
//     false) or, where the CRD prunes it, the annotation
//     capsule.cnvrg.io/pitr-<svc>: "true" or "false" on the CnvrgApp (the
//     block wins); for a PVC plan, capsule.mlops.cnvrg.io/pitr on the PVC.
//     The plan's source gets pitr: true, so its backups are base backups,
//     and Scanner.PITRJobs gives its WAL stream (see Point-in-time
//     recovery).
//
// Every value the scanner puts into a URL or a host name is checked first,
// and the URLs are built with net/url: a svcName such as
// "169.254.169.254/latest/meta-data" or "user@host" is a problem, not a
// plan.
//
// Secrets are read one by one, by name (get), when the plans are rebuilt:
// on every change of a CnvrgApp or PVC, and every Config.SecretRefresh (1m) so
// that a changed Secret is seen within that time. The scanner never lists
// or watches Secrets. What it read stays in memory: requests name the
// plan's source, never a password, and a plan prints (Plan.MarshalJSON)
// without its secrets.
//
// An invalid block (a bad period, a missing Secret or key, an unknown
// storage type, a value that does not belong in a URL) is left out and
// reported: a log line naming the field and, when the role may create
// Events, a Warning Event with reason InvalidBackupPlan on the CnvrgApp (or
// the annotated PVC). The Event's name derives from the problem and the
// object's generation, so N replicas write one Event. A bad verification
// setting is reported the same way but only drops the verifications, not
// the backups; so is a bad pitr setting (a value other than "true" or
// "false", or pitr on redis or es): the plan's backups go on without
// point-in-time recovery.
//
// # Point-in-time recovery
//
// PITRJobs returns a pitr.Job for each plan with PITR on, named
// "plan/<plan>": the plan's bucket client (the one Buckets holds under
// the plan's key, and no other: a tenant's WAL goes only into its own
// bucket), its cluster and its source, whose password is the plan's
// latest, asked at each connection. PlansChanged is closed when the plans
// change. "capsule worker --scan" and "capsule start" follow them with
// pitr.Jobs: every replica's worker competes for each stream's lease in
// the plan's bucket (locks/wal/…), so one holds it, and every replica
// guards the slot; a stream starts when its plan appears or turns PITR on
// and stops, handing its lease back, when the plan goes or turns it off.
// The role of the plan's credsRef Secret needs REPLICATION.
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
// that configured it ("role", or "keys-" and an HMAC of the keys (S3
// keys, an Azure account key, a service account key's JSON) under a key
// drawn at random by each process, never the keys). Changed is closed
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
// The scanner needs get on the Secrets its plans name, the gcp key
// Secret that a gcp bucketRef names included (never list or watch: it
// reads them by name) and list on cnvrgapps.mlops.cnvrg.io or on
// persistentvolumeclaims, in the namespaces it serves. At start it asks
// the API server what its role allows (SelfSubjectAccessReview; where
// those are forbidden it tries and handles a Forbidden) and logs once what
// it cannot do:
//
//   - cnvrgapps: with watch, an informer follows them; with list only,
//     they are listed every Config.Poll (30s); without list, "no access to
//     cnvrgapps (list): plans come from the PVC annotations only";
//   - persistentvolumeclaims: the same, and without list, plans come from
//     CnvrgApps only;
//   - events (create): without it, "cannot create events: invalid plans
//     are logged only".
//
// A role that can read neither CnvrgApps nor PVCs is an error: nothing to
// back up. A resource the API server does not serve (no CnvrgApp CRD) is
// logged once and read as empty. The full role: get, list and watch on
// cnvrgapps and persistentvolumeclaims, get on secrets, create on events.
//
// # Drop-in for the operator's capsule
//
// The cnvrg operator (3.5 to 4.3) deploys its own backup service as a
// Deployment that runs "/opt/app-root/capsule start" with no args, env
// GIN_MODE=release, a 100Gi PVC at /tmp/capsule-data, and the ServiceAccount
// cnvrg-capsule bound to a ClusterRole of get and list on
// persistentvolumeclaims and secrets: no cnvrgapps, no watch, no events.
// capsule's image runs there unchanged ("capsule start", cmd/capsule): the
// scanner with that role, a worker per bucket, and the API with the
// probes and metrics.
//
// Plans from PVCs. The operator copies each CnvrgApp's spec.dbs.pg.backup
// onto the PostgreSQL PVC (spec.dbs.pg.pvcName, default pg-storage) as
// annotations, as the old service read them: capsule.mlops.cnvrg.io/backup
// ("true" enables), serviceType (postgresql, the only one), bucketRef
// (default cp-object-storage), credsRef (default pg-creds), rotation
// (default 5) and period (default 24h, old syntax included), and
// capsule's own pitr ("true" or "false", see Plans). A PVC plan
// connects to port 5432 of the Service its credentials Secret names in
// POSTGRES_HOST (default postgres), in the PVC's namespace, as the old
// service did.
//
// One service, one plan. A plan's identity is its name,
// <namespace>/<cnvrgapp>/<service>. The operator creates the PVC with a
// controller reference to its CnvrgApp, so a PVC plan takes the name the
// CnvrgApp's block gives (a PVC no CnvrgApp owns: <namespace>/<pvc>/pg),
// and its cluster likewise: a replica that may read CnvrgApps and one
// that may not make the same requests for the same slots, which the
// create-only writes turn into one. Where the CnvrgApps of the PVC's
// namespace were read, a CnvrgApp that owns the PVC (or, for a PVC
// without an owner, whose pvcName is the PVC's name) decides alone: its
// block is the plan (it says more: svcName, port, verification), and the
// annotations, a copy that may lag, are not read; a CnvrgApp whose
// backup is disabled disables the PVC's plan too. Two PVCs that give one
// plan name: the first is the plan, the second a problem.
//
// Restores as the admin. A restore swaps a side database in: it needs
// CREATEDB and ownership of the database, which the platform's
// application role (pg-creds' POSTGRES_USER) often lacks; pg-creds also
// holds POSTGRESQL_ADMIN_PASSWORD, the postgres superuser's. Backups
// always run as the application role. For a Restore or Verify of a
// PostgreSQL plan (Scanner.RestoreAs, the executor's RestoreAs hook), the
// worker connects as the application role and reads its attributes: when
// it has CREATEDB, owns the database (or the database does not exist)
// and is not a superuser, the restore runs as it; else, when the Secret
// has POSTGRESQL_ADMIN_PASSWORD, as postgres, with allowSuperuser set on
// the source for this restore only (the engine refuses a superuser
// without it: a forged backup's SQL runs as the restoring role); else as
// the application role, which fails with the engine's error. The result's
// details say which and why, in restoredAs: "postgres
// (POSTGRESQL_ADMIN_PASSWORD: the application role lacks CREATEDB)".
//
// Staging. PostgreSQL plans carry Config.StagingDir as their sources'
// stagingDir: capsule start sets the PVC's /tmp/capsule-data when it is a
// writable directory (the old --dumpdir), else restores stage in
// $TMPDIR, and it says which.
//
// Not the scanner's: the old service's backups under <dst-dir>/ in each
// bucket (legacy.dstDir, --dst-dir, CNVRG_CAPSULE_DST_DIR), which the
// legacy commands read; the old service's own HTTP routes.
package scanner
