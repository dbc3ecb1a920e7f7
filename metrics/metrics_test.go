package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/reqcount"
	"github.com/cnvrg/capsule/metrics"
	"github.com/cnvrg/capsule/notify"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads a registry the way Prometheus does: over HTTP, in the text
// exposition format.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// scrapes are the scrapes of several workers.
type scrapes []map[string]*dto.MetricFamily

// sum adds the values of every series of name whose labels include want,
// over every scrape: a counter's or gauge's value, a histogram's count.
func (s scrapes) sum(name string, want map[string]string) float64 {
	total := 0.0
	s.each(name, want, func(m *dto.Metric) {
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	})
	return total
}

// histSum adds histograms' sums.
func (s scrapes) histSum(name string, want map[string]string) float64 {
	total := 0.0
	s.each(name, want, func(m *dto.Metric) { total += m.Histogram.GetSampleSum() })
	return total
}

// max is the largest gauge value over every scrape.
func (s scrapes) max(name string, want map[string]string) float64 {
	top := math.Inf(-1)
	s.each(name, want, func(m *dto.Metric) { top = math.Max(top, m.Gauge.GetValue()) })
	return top
}

func (s scrapes) each(name string, want map[string]string, fn func(*dto.Metric)) {
	for _, fams := range s {
		f, ok := fams[name]
		if !ok {
			continue
		}
	metric:
		for _, m := range f.Metric {
			got := map[string]string{}
			for _, l := range m.Label {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metric
				}
			}
			fn(m)
		}
	}
}

type L = map[string]string

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func TestObserveCountsEvents(t *testing.T) {
	r := metrics.New(metrics.Options{NoRuntime: true, EngineOf: func(s string) string {
		if s == "pg" {
			return "postgres"
		}
		return ""
	}})
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, e := range []watcher.Event{
		{Type: watcher.EventClaimed, Kind: requests.KindBackup, Source: "pg"},
		{Type: watcher.EventClaimed, Kind: requests.KindRestore},
		{Type: watcher.EventTakeover, Kind: requests.KindBackup, Source: "pg", Attempt: 2},
		{Type: watcher.EventRenewed}, {Type: watcher.EventRenewed},
		{Type: watcher.EventLost},
		{Type: watcher.EventReleased},
		{Type: watcher.EventAbandoned},
		{Type: watcher.EventFinished, Kind: requests.KindBackup, Status: requests.StatusSucceeded, Engine: "postgres",
			Cluster: "c1", Source: "pg", Bytes: 5000, StoredBytes: 1000, Duration: 3 * time.Second, Finished: t0},
		// An older success does not move the gauge back.
		{Type: watcher.EventFinished, Kind: requests.KindBackup, Status: requests.StatusSucceeded, Engine: "postgres",
			Cluster: "c1", Source: "pg", Bytes: 7000, StoredBytes: 2000, Duration: time.Second, Finished: t0.Add(-time.Hour)},
		{Type: watcher.EventFinished, Kind: requests.KindBackup, Status: requests.StatusFailed, Engine: "postgres", Cluster: "c1", Source: "pg", Finished: t0.Add(time.Hour)},
		{Type: watcher.EventFinished, Kind: requests.KindVerify, Status: requests.StatusSucceeded, Engine: "postgres", Cluster: "c1", Source: "pg", Duration: time.Second, Finished: t0.Add(2 * time.Hour)},
		{Type: watcher.EventFinished, Status: requests.StatusRejected},
	} {
		r.Observe(e)
	}
	for _, o := range []notify.Observation{notify.MessageClaimed, notify.MessageClaimed, notify.MessageIgnored, notify.ReceiveFailed, notify.DeleteFailed} {
		r.ObserveSQS(o)
	}
	s := scrapes{scrape(t, r.Handler())}
	checks := []struct {
		name   string
		labels L
		want   float64
	}{
		{metrics.RequestsClaimed, L{"kind": "Backup", "engine": "postgres"}, 2},
		{metrics.RequestsClaimed, L{"kind": "Restore", "engine": "unknown"}, 1},
		{metrics.LeaseTakeovers, L{"kind": "Backup"}, 1},
		{metrics.LeaseRenewals, nil, 2},
		{metrics.LeaseLosses, nil, 1},
		{metrics.LeaseReleases, nil, 1},
		{metrics.RequestsAbandoned, nil, 1},
		{metrics.RequestsFinished, L{"kind": "Backup", "engine": "postgres", "status": "succeeded"}, 2},
		{metrics.RequestsFinished, L{"kind": "Backup", "engine": "postgres", "status": "failed"}, 1},
		{metrics.RequestsFinished, L{"kind": "unknown", "engine": "unknown", "status": "rejected"}, 1},
		{metrics.RequestDuration, L{"kind": "Backup", "engine": "postgres"}, 2},
		{metrics.RequestBytes, L{"kind": "Backup"}, 2},
		{metrics.SQSMessages, L{"outcome": "claimed"}, 2},
		{metrics.SQSMessages, L{"outcome": "ignored"}, 1},
		{metrics.SQSErrors, L{"operation": "receive"}, 1},
		{metrics.SQSErrors, L{"operation": "delete"}, 1},
	}
	for _, c := range checks {
		if got := s.sum(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := s.histSum(metrics.RequestBytes, L{"kind": "Backup"}); got != 12000 {
		t.Errorf("bytes sum %v, want 12000", got)
	}
	if got := s.max(metrics.LastBackupSuccess, L{"cluster": "c1", "source": "pg"}); got != unix(t0) {
		t.Errorf("last backup %v, want %v (a failure or an older success must not move it)", got, unix(t0))
	}
	if got := s.max(metrics.LastVerificationSuccess, L{"cluster": "c1", "source": "pg"}); got != unix(t0.Add(2*time.Hour)) {
		t.Errorf("last verification %v, want %v", got, unix(t0.Add(2*time.Hour)))
	}
	problems, err := testutil.GatherAndLint(r.Gatherer())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	// Every exposed capsule series is one Names lists.
	names := map[string]bool{}
	for _, n := range r.Names() {
		names[n] = true
	}
	for name, f := range s[0] {
		if f.GetType() == dto.MetricType_HISTOGRAM {
			name += "_count"
		}
		if strings.HasPrefix(name, "capsule_") && !names[name] {
			t.Errorf("%s is exposed but not in Names()", name)
		}
	}
}

func TestInstrumentBucketCountsOutcomes(t *testing.T) {
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	r := metrics.New(metrics.Options{NoRuntime: true})
	b := metrics.InstrumentBucket(bucket.Prefixed(fb, "capsule/"), r)
	ctx := context.Background()
	if _, err := bucket.PutBytes(ctx, b, "a.json", []byte("{}"), bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(ctx, b, "a.json", []byte("{}"), bucket.PutOptions{IfNoneMatch: true}); !errors.Is(err, bucket.ErrPreconditionFailed) {
		t.Fatalf("second create-only put: %v", err)
	}
	if _, _, err := bucket.GetBytes(ctx, b, "missing.json"); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := b.Head(ctx, "a.json"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.List(ctx, "", bucket.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "a.json"); err != nil {
		t.Fatal(err)
	}
	u, err := b.Upload(ctx, "big.bin", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("data"))
	if _, err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	u.Abort() // after a commit: not counted again
	u, err = b.Upload(ctx, "gone.bin", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.Abort()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	b.Head(canceled, "a.json")

	s := scrapes{scrape(t, r.Handler())}
	for _, c := range []struct {
		op, outcome string
		want        float64
	}{
		{"put", "ok", 1}, {"put", "precondition_failed", 1}, {"get", "not_found", 1}, {"head", "ok", 1},
		{"list", "ok", 1}, {"delete", "ok", 1}, {"upload", "ok", 1}, {"upload", "canceled", 1},
	} {
		if got := s.sum(metrics.BucketOperations, L{"operation": c.op, "outcome": c.outcome}); got != c.want {
			t.Errorf("%s %s = %v, want %v", c.op, c.outcome, got, c.want)
		}
	}
	if got := s.sum(metrics.BucketOperations, L{"operation": "head"}); got != 2 {
		t.Errorf("head calls %v, want 2 (one canceled or failed)", got)
	}
	if got := s.sum(metrics.BucketOperationDuration, L{"operation": "put"}); got != 2 {
		t.Errorf("put latency samples %v, want 2", got)
	}
}

func TestLoadCatalogSeedsTheGauges(t *testing.T) {
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	ctx := context.Background()
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	write := func(cluster, source, id string, finished time.Time) *index.BackupIndex {
		x := &index.BackupIndex{
			APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: id, RequestID: id,
			Cluster: cluster, Source: source, Engine: "files", Format: "tar", CapsuleVersion: "test",
			Status: requests.StatusSucceeded, Attempt: 1, StartedAt: finished.Add(-time.Minute), FinishedAt: finished,
			Artifacts: []index.Artifact{},
		}
		if err := index.Write(ctx, b, x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	verify := func(x *index.BackupIndex, at time.Time, ok bool) {
		v := &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: x.BackupID,
			RequestID: "v-" + x.BackupID, OK: ok, VerifiedAt: at, Checks: []index.CheckResult{}}
		if err := index.WriteVerification(ctx, b, x, v); err != nil {
			t.Fatal(err)
		}
	}
	old := write("default", "cnvrg/pg", "b1", t0)
	newer := write("default", "cnvrg/pg", "b2", t0.Add(24*time.Hour))
	write("prod", "redis", "b3", t0.Add(time.Hour))
	verify(old, t0.Add(time.Hour), true)
	verify(newer, t0.Add(25*time.Hour), false) // failed: not a success

	r := metrics.New(metrics.Options{NoRuntime: true})
	n, err := r.LoadCatalog(ctx, b)
	if err != nil || n != 3 {
		t.Fatalf("LoadCatalog = %d, %v; want 3 backups", n, err)
	}
	s := scrapes{scrape(t, r.Handler())}
	for _, c := range []struct {
		name            string
		cluster, source string
		want            time.Time
	}{
		{metrics.LastBackupSuccess, "default", "cnvrg/pg", t0.Add(24 * time.Hour)},
		{metrics.LastBackupSuccess, "prod", "redis", t0.Add(time.Hour)},
		{metrics.LastVerificationSuccess, "default", "cnvrg/pg", t0.Add(time.Hour)},
	} {
		if got := s.max(c.name, L{"cluster": c.cluster, "source": c.source}); got != unix(c.want) {
			t.Errorf("%s{%s,%s} = %v, want %v", c.name, c.cluster, c.source, got, unix(c.want))
		}
	}
	if got := s.sum(metrics.LastVerificationSuccess, L{"source": "redis"}); got != 0 {
		t.Errorf("redis was never verified, yet the gauge says %v", got)
	}
}

// TestLoadCatalogBelievesOnlyRealBackups plants what someone with write
// access to backups/ could, to silence the "no good backup in 26h" alert
// or invent a source: an index dated 2099, an index whose content names
// another cluster and source than its key, and a verification record
// dated 2099. None moves a gauge; the two indexes are counted once each
// as damaged, however often the catalog is read.
func TestLoadCatalogBelievesOnlyRealBackups(t *testing.T) {
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-30 * time.Hour).Truncate(time.Second)
	mk := func(cluster, source, id string, finished time.Time) *index.BackupIndex {
		return &index.BackupIndex{
			APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: id, RequestID: id,
			Cluster: cluster, Source: source, Engine: "files", Format: "tar", CapsuleVersion: "test",
			Status: requests.StatusSucceeded, Attempt: 1, StartedAt: finished.Add(-time.Minute), FinishedAt: finished,
			Artifacts: []index.Artifact{},
		}
	}
	plant := func(key string, v any) {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bucket.PutBytes(ctx, b, key, data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	real := mk("default", "cnvrg/pg", "b1", t0)
	if err := index.Write(ctx, b, real); err != nil {
		t.Fatal(err)
	}
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	plant(requests.IndexKey("default", "cnvrg/pg", "forged-future"), mk("default", "cnvrg/pg", "forged-future", future))
	plant(requests.IndexKey("default", "cnvrg/pg", "forged-elsewhere"), mk("prod", "redis", "forged-elsewhere", t0.Add(time.Hour)))
	plant(requests.VerifyKey("default", "cnvrg/pg", "b1", future), &index.Verification{APIVersion: requests.APIVersion,
		Kind: index.KindVerification, BackupID: "b1", RequestID: "v-forged", OK: true, VerifiedAt: future, Checks: []index.CheckResult{}})

	r := metrics.New(metrics.Options{NoRuntime: true})
	for range 2 {
		if _, err := r.LoadCatalog(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	s := scrapes{scrape(t, r.Handler())}
	if got := s.max(metrics.LastBackupSuccess, L{"cluster": "default", "source": "cnvrg/pg"}); got != unix(t0) {
		t.Errorf("last backup success of default/cnvrg/pg = %v, want %v (the real backup, 30h ago)", got, unix(t0))
	}
	if got := s.sum(metrics.LastBackupSuccess, L{"cluster": "prod"}); got != 0 {
		t.Errorf("a forged index invented prod's backups: gauge %v", got)
	}
	if got := s.sum(metrics.LastVerificationSuccess, nil); got != 0 {
		t.Errorf("a forged verification record set the verification gauge to %v", got)
	}
	if got := s.sum("capsule_damaged_indexes_total", nil); got != 2 {
		t.Errorf("capsule_damaged_indexes_total = %v, want 2 (each damaged index once)", got)
	}
}

// A worker that starts on a prefix with many backups seeds the gauges from
// the catalog, reading no index.
func TestLoadCatalogReadsTheCatalogNotEveryIndex(t *testing.T) {
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	raw := bucket.Prefixed(fb, "capsule/")
	ctx := context.Background()
	// The first worker on the (empty) prefix: the catalog starts here.
	if _, err := metrics.New(metrics.Options{NoRuntime: true}).LoadCatalog(ctx, raw); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-1000 * time.Hour).UTC()
	const n = 500
	for i := range n {
		finished := t0.Add(time.Duration(i) * time.Hour)
		x := &index.BackupIndex{
			APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: fmt.Sprintf("b%04d", i), RequestID: fmt.Sprintf("b%04d", i),
			Cluster: "prod", Source: "cnvrg/pg", Engine: "files", Format: "tar", CapsuleVersion: "test",
			Status: requests.StatusSucceeded, Attempt: 1, StartedAt: finished.Add(-time.Minute), FinishedAt: finished,
			Artifacts: []index.Artifact{},
		}
		if err := index.Write(ctx, raw, x); err != nil {
			t.Fatal(err)
		}
	}
	b := &reqcount.Bucket{B: raw}
	r := metrics.New(metrics.Options{NoRuntime: true})
	got, err := r.LoadCatalog(ctx, b)
	if err != nil || got != n {
		t.Fatalf("LoadCatalog = %d, %v; want %d", got, err, n)
	}
	if c := b.Counts(); c.Get > index.CompactAfter+2 || c.Total() > index.CompactAfter+8 {
		t.Fatalf("seeding from %d backups made %+v requests: it read the indexes", n, c)
	}
	if v := (scrapes{scrape(t, r.Handler())}).max(metrics.LastBackupSuccess, L{"cluster": "prod", "source": "cnvrg/pg"}); v != unix(t0.Add((n-1)*time.Hour)) {
		t.Fatalf("gauge %v, want the newest backup's time", v)
	}
}

// TestForgetPITR: a stream stopped on purpose leaves no gauge behind
// that would look like a stream falling behind.
func TestForgetPITR(t *testing.T) {
	r := metrics.New(metrics.Options{})
	r.ObservePITR("prod", "cnvrg/pg", time.Now())
	r.ObserveSlot("prod", "cnvrg/pg", 10, 100)
	r.ObservePITR("prod", "other", time.Now())
	r.ForgetPITR("prod", "cnvrg/pg")
	s := scrapes{scrape(t, r.Handler())}
	for _, name := range []string{metrics.PITRRecoverable, metrics.PITRSlotLag, metrics.PITRSlotAlert} {
		n := 0
		s.each(name, L{"source": "cnvrg/pg"}, func(*dto.Metric) { n++ })
		if n != 0 {
			t.Errorf("%s still has %d series of the stopped source", name, n)
		}
	}
	n := 0
	s.each(metrics.PITRRecoverable, L{"source": "other"}, func(*dto.Metric) { n++ })
	if n != 1 {
		t.Errorf("the other source's series: %d, want 1", n)
	}
}
