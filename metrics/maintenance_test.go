package metrics_test

import (
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/maintenance"
	"github.com/cnvrg/capsule/metrics"
	"github.com/cnvrg/capsule/retention"
)

// A maintenance pass's deletions, Object Lock refusals and aborted uploads
// are counted by job; a dry run counts nothing.
func TestObserveMaintenance(t *testing.T) {
	r := metrics.New(metrics.Options{NoRuntime: true})
	rep := &maintenance.Report{
		Retention: []maintenance.PolicyReport{{Report: &retention.Report{Objects: 5, Retained: []retention.RetainedObject{{Key: "a"}}}}},
		GC:        &retention.GCReport{Objects: 3, Aborted: []bucket.PendingUpload{{Key: "u"}}, Retained: []retention.RetainedObject{{Key: "b"}, {Key: "c"}}},
	}
	r.ObserveMaintenance(rep)
	dry := *rep
	dry.DryRun = true
	r.ObserveMaintenance(&dry)
	s := scrapes{scrape(t, r.Handler())}
	for _, c := range []struct {
		name string
		l    L
		want float64
	}{
		{metrics.MaintenanceDeleted, L{"job": "retention"}, 5}, {metrics.MaintenanceDeleted, L{"job": "gc"}, 3},
		{metrics.MaintenanceRetained, L{"job": "retention"}, 1}, {metrics.MaintenanceRetained, L{"job": "gc"}, 2},
		{metrics.MaintenanceAborted, nil, 1},
	} {
		if got := s.sum(c.name, c.l); got != c.want {
			t.Errorf("%s %v = %v, want %v", c.name, c.l, got, c.want)
		}
	}
}
