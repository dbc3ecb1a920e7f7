package metrics

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/maintenance"
	"github.com/cnvrg/capsule/notify"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
)

// Unknown is the label value of an engine or kind that is not known: a
// claim whose engine the worker cannot tell before the run (a Restore or
// Verify names a backup, not a source), or a request that never reached
// an engine (rejected before it ran).
const Unknown = "unknown"

// Options configure a Registry.
type Options struct {
	// EngineOf names the engine of a configured source, so that claims
	// are counted per engine before the run starts (the worker's source
	// configuration). Claims count under "unknown" without it.
	EngineOf func(source string) string
	// NoRuntime leaves out the Go runtime and process collectors (for
	// tests that compare whole scrapes).
	NoRuntime bool
	// Log receives one warning per damaged index (see Damaged); nothing
	// when nil.
	Log logrus.FieldLogger
}

// Registry holds capsule's collectors on a registry of its own (never the
// global default one).
type Registry struct {
	reg      *prometheus.Registry
	engineOf func(string) string
	names    []string

	claimed       *prometheus.CounterVec
	finished      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	bytes         *prometheus.HistogramVec
	storedBytes   *prometheus.HistogramVec
	renewals      prometheus.Counter
	losses        prometheus.Counter
	releases      prometheus.Counter
	takeovers     *prometheus.CounterVec
	abandoned     prometheus.Counter
	bucketOps     *prometheus.CounterVec
	bucketTime    *prometheus.HistogramVec
	sqsMessages   *prometheus.CounterVec
	sqsErrors     *prometheus.CounterVec
	lastBackup    *prometheus.GaugeVec
	lastVerified  *prometheus.GaugeVec
	damagedIdx    prometheus.Counter
	damaged       *index.Reporter
	maintDeleted  *prometheus.CounterVec
	maintRetained *prometheus.CounterVec
	maintAborted  prometheus.Counter
	pitrLatest    *prometheus.GaugeVec
	slotLag       *prometheus.GaugeVec
	slotAlert     *prometheus.GaugeVec
	slotDrops     *prometheus.CounterVec

	mu     sync.Mutex
	newest map[newestKey]time.Time
}

type newestKey struct {
	gauge           *prometheus.GaugeVec
	cluster, source string
}

// The metric names, for the alert rules and dashboards.
const (
	RequestsClaimed         = "capsule_requests_claimed_total"
	RequestsFinished        = "capsule_requests_finished_total"
	RequestDuration         = "capsule_request_duration_seconds"
	RequestBytes            = "capsule_request_bytes"
	RequestStoredBytes      = "capsule_request_stored_bytes"
	LeaseRenewals           = "capsule_lease_renewals_total"
	LeaseLosses             = "capsule_lease_losses_total"
	LeaseReleases           = "capsule_lease_releases_total"
	LeaseTakeovers          = "capsule_lease_takeovers_total"
	RequestsAbandoned       = "capsule_requests_abandoned_total"
	BucketOperations        = "capsule_bucket_operations_total"
	BucketOperationDuration = "capsule_bucket_operation_duration_seconds"
	SQSMessages             = "capsule_sqs_messages_total"
	SQSErrors               = "capsule_sqs_errors_total"
	LastBackupSuccess       = "capsule_last_backup_success_timestamp_seconds"
	LastVerificationSuccess = "capsule_last_verification_success_timestamp_seconds"
	DamagedIndexes          = "capsule_damaged_indexes_total"
	MaintenanceDeleted      = "capsule_maintenance_deleted_objects_total"
	MaintenanceRetained     = "capsule_maintenance_retained_objects_total"
	MaintenanceAborted      = "capsule_maintenance_aborted_uploads_total"
	PITRRecoverable         = "capsule_pitr_recoverable_timestamp_seconds"
	PITRSlotLag             = "capsule_pitr_slot_lag_bytes"
	PITRSlotAlert           = "capsule_pitr_slot_alert_bytes"
	PITRSlotDrops           = "capsule_pitr_slot_drops_total"
)

// New returns a Registry with every collector registered.
func New(opts Options) *Registry {
	r := &Registry{reg: prometheus.NewRegistry(), engineOf: opts.EngineOf, newest: map[newestKey]time.Time{}}
	if !opts.NoRuntime {
		r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	r.claimed = counterVec(r, RequestsClaimed, "Requests this worker claimed and started, first attempts and takeovers alike, by kind and engine (unknown until a Restore or Verify reads its backup).", "kind", "engine")
	r.finished = counterVec(r, RequestsFinished, "Requests this worker finished, by kind, engine and status (succeeded, failed, rejected, canceled).", "kind", "engine", "status")
	r.duration = histogramVec(r, RequestDuration, "Run time of succeeded requests, by kind and engine (0.1s to 10h).",
		prometheus.ExponentialBuckets(0.1, 2.5, 15), "kind", "engine")
	r.bytes = histogramVec(r, RequestBytes, "Raw bytes of succeeded requests (what the engine wrote or read), by kind and engine (1 KiB to 1 TiB).",
		prometheus.ExponentialBuckets(1024, 4, 16), "kind", "engine")
	r.storedBytes = histogramVec(r, RequestStoredBytes, "Stored (compressed) bytes of succeeded requests, by kind and engine (1 KiB to 1 TiB).",
		prometheus.ExponentialBuckets(1024, 4, 16), "kind", "engine")
	r.renewals = counter(r, LeaseRenewals, "Lease renewals that succeeded.")
	r.losses = counter(r, LeaseLosses, "Leases lost: another worker took the request over, or renewals failed until the lease could have expired. The run stopped and wrote nothing more.")
	r.releases = counter(r, LeaseReleases, "Leases handed back at shutdown (or after a failed commit) for another worker to take over at once.")
	r.takeovers = counterVec(r, LeaseTakeovers, "Claims that took over an expired or handed-back lease (attempt 2 or later), by kind.", "kind")
	r.abandoned = counter(r, RequestsAbandoned, "Requests ended failed after their last allowed attempt.")
	r.bucketOps = counterVec(r, BucketOperations, "Calls to the bucket by operation (get, head, list, put, delete, delete_batch: one call deleting many keys, upload) and outcome (ok, not_found, precondition_failed, canceled, error).", "operation", "outcome")
	r.bucketTime = histogramVec(r, BucketOperationDuration, "Latency of bucket calls by operation (an upload from its start to its commit).",
		prometheus.ExponentialBuckets(0.001, 2, 16), "operation")
	r.sqsMessages = counterVec(r, SQSMessages, "SQS notifications handled, by outcome (claimed, unclaimed, ignored, invalid). Every one was deleted.", "outcome")
	r.sqsErrors = counterVec(r, SQSErrors, "SQS calls that failed, by operation (receive, delete).", "operation")
	r.lastBackup = gaugeVec(r, LastBackupSuccess, "Unix time of the newest successful backup per cluster and source, from the catalog at start-up and from this worker's backups since. Take the max over workers.", "cluster", "source")
	r.lastVerified = gaugeVec(r, LastVerificationSuccess, "Unix time of the newest successful verification per cluster and source (of a backup of that source), from the catalog at start-up and from this worker's verifications since. Take the max over workers.", "cluster", "source")
	r.damagedIdx = counter(r, DamagedIndexes, "Damaged backupIndex.json objects this process found, each counted once: unparsable, content that does not match the key (cluster, source, backup id, artifact keys), or finished in the future by the bucket's clock. They are skipped by listings, restores and retention.")
	r.damaged = index.NewReporter(opts.Log, func(index.Damaged) { r.damagedIdx.Inc() })
	r.maintDeleted = counterVec(r, MaintenanceDeleted, "Objects this replica's maintenance deleted, by job (retention, gc). Dry runs count nothing.", "job")
	r.maintRetained = counterVec(r, MaintenanceRetained, "Objects maintenance could not delete because S3 Object Lock retains them, by job (retention, gc); each counted once per retain period.", "job")
	r.maintAborted = counter(r, MaintenanceAborted, "Multipart uploads left open by crashed workers that garbage collection aborted.")
	r.pitrLatest = gaugeVec(r, PITRRecoverable, "Unix time (the database server's clock) of the latest moment a point-in-time restore recovers to: the newest WAL the stream's holder wrote to the bucket. Only the holder sets it; take the max over workers.", "cluster", "source")
	r.slotLag = gaugeVec(r, PITRSlotLag, "Bytes of WAL the stream's replication slot holds back on the database server (its current position minus the slot's restart_lsn).", "cluster", "source")
	r.slotAlert = gaugeVec(r, PITRSlotAlert, "The source's slotAlertBytes: the slot lag that calls for attention; at slotMaxBytes capsule drops the slot.", "cluster", "source")
	r.slotDrops = counterVec(r, PITRSlotDrops, "Replication slots capsule dropped because they held more WAL than slotMaxBytes: the WAL in the bucket has a gap that the next base backup closes.", "cluster", "source")
	return r
}

// ObservePITR records the latest recoverable moment of a source's WAL
// stream.
func (r *Registry) ObservePITR(cluster, source string, latest time.Time) {
	r.pitrLatest.WithLabelValues(label(cluster), label(source)).Set(float64(latest.UnixNano()) / 1e9)
}

// ObserveSlot records how much WAL a source's slot holds back, and the
// limit that raises the alert.
func (r *Registry) ObserveSlot(cluster, source string, lagBytes, alertBytes int64) {
	r.slotLag.WithLabelValues(label(cluster), label(source)).Set(float64(lagBytes))
	r.slotAlert.WithLabelValues(label(cluster), label(source)).Set(float64(alertBytes))
}

// ForgetPITR removes a source's stream and slot gauges when this worker
// stops its stream (point-in-time recovery turned off, the plan gone): a
// last value left behind would look like a stream falling behind
// (CapsulePITRBehind) forever.
func (r *Registry) ForgetPITR(cluster, source string) {
	for _, g := range []*prometheus.GaugeVec{r.pitrLatest, r.slotLag, r.slotAlert} {
		g.DeleteLabelValues(label(cluster), label(source))
	}
}

// SlotDropped counts a slot the guard dropped.
func (r *Registry) SlotDropped(cluster, source string) {
	r.slotDrops.WithLabelValues(label(cluster), label(source)).Inc()
}

// ObserveMaintenance counts what a maintenance pass deleted, aborted and
// could not delete (Object Lock). Dry runs count nothing.
func (r *Registry) ObserveMaintenance(rep *maintenance.Report) {
	if rep == nil || rep.DryRun {
		return
	}
	for _, p := range rep.Retention {
		if p.Report != nil {
			r.maintDeleted.WithLabelValues("retention").Add(float64(p.Report.Objects))
			r.maintRetained.WithLabelValues("retention").Add(float64(len(p.Report.Retained)))
		}
	}
	if g := rep.GC; g != nil {
		r.maintDeleted.WithLabelValues("gc").Add(float64(g.Objects))
		r.maintRetained.WithLabelValues("gc").Add(float64(len(g.Retained)))
		r.maintAborted.Add(float64(len(g.Aborted)))
	}
}

// Damaged is the process's reporter of damaged indexes: it logs each once
// and counts it in capsule_damaged_indexes_total. Give it to every part
// that lists backups (the API, retention) so each key is counted once.
func (r *Registry) Damaged() *index.Reporter { return r.damaged }

func counter(r *Registry, name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	r.reg.MustRegister(c)
	r.names = append(r.names, name)
	return c
}

func counterVec(r *Registry, name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	r.reg.MustRegister(c)
	r.names = append(r.names, name)
	return c
}

func gaugeVec(r *Registry, name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	r.reg.MustRegister(g)
	r.names = append(r.names, name)
	return g
}

func histogramVec(r *Registry, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	r.reg.MustRegister(h)
	r.names = append(r.names, name+"_bucket", name+"_sum", name+"_count")
	return h
}

// Names returns the names of capsule's series, histograms' _bucket, _sum
// and _count included, sorted.
func (r *Registry) Names() []string {
	names := append([]string(nil), r.names...)
	sort.Strings(names)
	return names
}

// Handler serves the registry in the Prometheus exposition format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// Gatherer is the underlying registry, for tests and for adding
// collectors.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Observe counts one watcher event; it is a watcher.Config.Events hook.
func (r *Registry) Observe(e watcher.Event) {
	kind := label(string(e.Kind))
	switch e.Type {
	case watcher.EventClaimed, watcher.EventTakeover:
		engine := Unknown
		if r.engineOf != nil && e.Source != "" {
			engine = label(r.engineOf(e.Source))
		}
		r.claimed.WithLabelValues(kind, engine).Inc()
		if e.Type == watcher.EventTakeover {
			r.takeovers.WithLabelValues(kind).Inc()
		}
	case watcher.EventRenewed:
		r.renewals.Inc()
	case watcher.EventLost:
		r.losses.Inc()
	case watcher.EventReleased:
		r.releases.Inc()
	case watcher.EventAbandoned:
		r.abandoned.Inc()
	case watcher.EventFinished:
		engine := label(e.Engine)
		r.finished.WithLabelValues(kind, engine, label(string(e.Status))).Inc()
		if e.Status != requests.StatusSucceeded {
			return
		}
		if e.Duration > 0 {
			r.duration.WithLabelValues(kind, engine).Observe(e.Duration.Seconds())
		}
		if e.Bytes > 0 {
			r.bytes.WithLabelValues(kind, engine).Observe(float64(e.Bytes))
		}
		if e.StoredBytes > 0 {
			r.storedBytes.WithLabelValues(kind, engine).Observe(float64(e.StoredBytes))
		}
		switch e.Kind {
		case requests.KindBackup:
			r.setNewest(r.lastBackup, e.Cluster, e.Source, e.Finished)
		case requests.KindVerify:
			r.setNewest(r.lastVerified, e.Cluster, e.Source, e.Finished)
		}
	}
}

// ObserveSQS counts one notify.Listener observation; it is a
// notify.Config.Observe hook.
func (r *Registry) ObserveSQS(o notify.Observation) {
	switch o {
	case notify.ReceiveFailed:
		r.sqsErrors.WithLabelValues("receive").Inc()
	case notify.DeleteFailed:
		r.sqsErrors.WithLabelValues("delete").Inc()
	default:
		r.sqsMessages.WithLabelValues(string(o)).Inc()
	}
}

// LoadCatalog sets the newest-success gauges from the catalog in b (every
// committed backup, and each backup's newest verification), so that a
// worker that just started reports the right age at once. It reads the
// catalog's snapshots (index.Catalog), not every index: only the first
// worker on a bucket written before the catalog existed walks the
// indexes, once, and writes the snapshots for every later one. Later events
// only move the gauges forward. Only what the index package believes
// counts: a damaged index (a forged one dated in the future, say) moves no
// gauge and is reported through Damaged instead. It returns how many
// backups it read.
func (r *Registry) LoadCatalog(ctx context.Context, b bucket.Bucket) (int, error) {
	return r.LoadTrustedCatalog(ctx, b, nil)
}

// LoadTrustedCatalog is LoadCatalog whose entries trust judges: a backup
// no trusted key signed moves no gauge either (a forged recent backup
// does not silence the "no good backup" alert).
func (r *Registry) LoadTrustedCatalog(ctx context.Context, b bucket.Bucket, trust *index.Trust) (int, error) {
	l, err := index.Catalog{Bucket: b, Writer: b}.List(ctx, index.Filter{Trust: trust})
	if err != nil {
		return 0, err
	}
	r.damaged.Report(l.Damaged)
	entries := l.Entries
	for _, e := range entries {
		if !e.Trusted() {
			continue
		}
		if e.Status == requests.StatusSucceeded {
			r.setNewest(r.lastBackup, e.Cluster, e.Source, e.FinishedAt)
		}
		if v := e.Verification; v != nil && v.OK {
			r.setNewest(r.lastVerified, e.Cluster, e.Source, v.VerifiedAt)
		}
	}
	return len(entries), nil
}

// setNewest moves a newest-success gauge forward, never back.
func (r *Registry) setNewest(g *prometheus.GaugeVec, cluster, source string, t time.Time) {
	if source == "" || t.IsZero() {
		return
	}
	if cluster == "" {
		cluster = requests.DefaultCluster
	}
	k := newestKey{g, cluster, source}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !t.After(r.newest[k]) {
		return
	}
	r.newest[k] = t
	g.WithLabelValues(cluster, source).Set(float64(t.UnixNano()) / 1e9)
}

func label(v string) string {
	if v == "" {
		return Unknown
	}
	return v
}
