package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// writeResult writes results/<id>.json as a worker does when a backup
// ends without an index.
func writeResult(t *testing.T, b bucket.Bucket, id, cluster, source string, status requests.Status, msg string, finished time.Time) {
	t.Helper()
	r := requests.Result{APIVersion: requests.APIVersion, Kind: "Result", ID: id, RequestKind: requests.KindBackup, Status: status,
		Cluster: cluster, Source: source, Error: msg, Attempts: 1, Worker: "w", StartedAt: finished.Add(-time.Minute), FinishedAt: finished}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(context.Background(), b, requests.ResultKey(id), data, bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
}

// TestFailedBackupsAreListed: failed, canceled and rejected backups
// leave only a result. The backups listing returns them with
// ?status=failed|canceled|rejected, and with ?status=all beside the
// committed backups in one order and one set of pages; the clusters
// overview gives each source its newest failure, and lists sources and
// clusters that only ever failed. Every response matches openapi.yaml.
func TestFailedBackupsAreListed(t *testing.T) {
	b := fsBucket(t)
	h := newHarness(t, b, func(c *api.Config) { c.FailureTTL = -1 })
	t0 := time.Now().UTC().Add(-10 * time.Hour).Truncate(time.Second)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	writeBackup(t, b, "cnvrg/app", "cnvrg/pg", "pg-1", at(1), 100)
	writeBackup(t, b, "cnvrg/app", "cnvrg/pg", "pg-3", at(3), 100)
	writeResult(t, b, "pg-2", "cnvrg/app", "cnvrg/pg", requests.StatusFailed, "backup cnvrg/pg: pg_dump: error: connection refused\n\tat line 2", at(2))
	writeResult(t, b, "pg-4", "cnvrg/app", "cnvrg/pg", requests.StatusFailed, "backup cnvrg/pg: pg_dump: server closed the connection\nmore", at(4))
	writeResult(t, b, "pg-5", "cnvrg/app", "cnvrg/pg", requests.StatusCanceled, "canceled by request", at(5))
	writeResult(t, b, "es-1", "cnvrg/app", "cnvrg/es", requests.StatusRejected, `source: unknown source "cnvrg/es"`, at(6))
	writeResult(t, b, "x-1", "lost", "cnvrg/redis", requests.StatusFailed, "dial tcp: connection refused", at(7))

	path := "/v1/clusters/" + escape("cnvrg/app") + "/backups"
	var p api.BackupPage
	r := h.get(path + "?status=failed")
	wantStatus(t, "status=failed", r, 200, "")
	r.decode(t, &p)
	if len(p.Backups) != 0 || len(p.Failures) != 2 || p.Failures[0].ID != "pg-4" || p.Failures[1].ID != "pg-2" {
		t.Fatalf("status=failed: backups %v, failures %+v; want failures pg-4, pg-2", ids(p.Backups), p.Failures)
	}
	if f := p.Failures[0]; f.Error != "backup cnvrg/pg: pg_dump: server closed the connection" || f.Source != "cnvrg/pg" || !f.FinishedAt.Equal(at(4)) {
		t.Errorf("pg-4 listed as %+v: want its error's first line and when it ended", f)
	}
	r = h.get(path + "?status=canceled&source=" + url.QueryEscape("cnvrg/pg"))
	p = api.BackupPage{}
	r.decode(t, &p)
	if len(p.Failures) != 1 || p.Failures[0].ID != "pg-5" || p.Failures[0].Status != requests.StatusCanceled {
		t.Errorf("status=canceled: %+v, want pg-5", p.Failures)
	}
	r = h.get(path)
	if strings.Contains(string(r.body), `"failures"`) {
		t.Errorf("the default listing carries failures: %s", r.body)
	}

	// status=all, two per page: one order across both kinds.
	var order []string
	cursor := ""
	for range 10 {
		q := path + "?status=all&limit=2"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		p = api.BackupPage{}
		h.get(q).decode(t, &p)
		if len(p.Backups)+len(p.Failures) > 2 {
			t.Fatalf("%s: %d items, limit 2", q, len(p.Backups)+len(p.Failures))
		}
		page := append(ids(p.Backups), func() (s []string) {
			for _, f := range p.Failures {
				s = append(s, f.ID)
			}
			return
		}()...)
		order = append(order, page...)
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	// Within a page the two arrays are each in order; across the pages
	// the whole listing is.
	got := map[string]bool{}
	for _, id := range order {
		got[id] = true
	}
	for _, want := range []string{"es-1", "pg-5", "pg-4", "pg-3", "pg-2", "pg-1"} {
		if !got[want] {
			t.Errorf("status=all is missing %s: %v", want, order)
		}
	}
	if len(order) != 6 || got["x-1"] {
		t.Errorf("status=all listed %v, want the 6 of cluster cnvrg/app", order)
	}

	var cl api.ClusterList
	h.get("/v1/clusters").decode(t, &cl)
	sources := map[string]api.SourceSummary{}
	clusters := map[string]api.ClusterSummary{}
	for _, c := range cl.Clusters {
		clusters[c.Name] = c
		for _, s := range c.Sources {
			sources[c.Name+" "+s.Name] = s
		}
	}
	pg := sources["cnvrg/app cnvrg/pg"]
	if pg.LastFailure == nil || pg.LastFailure.ID != "pg-5" || pg.FailuresSinceSuccess != 2 || pg.NewestSuccessful == nil || pg.NewestSuccessful.BackupID != "pg-3" {
		t.Errorf("cnvrg/pg: %+v; want last failure pg-5, 2 failures since pg-3", pg)
	}
	es, ok := sources["cnvrg/app cnvrg/es"]
	if !ok || es.Backups != 0 || es.LastFailure == nil || es.LastFailure.ID != "es-1" || es.FailuresSinceSuccess != 1 || es.NewestSuccessful != nil {
		t.Errorf("a source that only failed: %+v (listed: %v); want it, with es-1", es, ok)
	}
	if c, ok := clusters["lost"]; !ok || c.Backups != 0 || len(c.Sources) != 1 || c.Sources[0].LastFailure.ID != "x-1" {
		t.Errorf("a cluster that only failed: %+v (listed: %v)", c, ok)
	}
	if c := clusters["cnvrg/app"]; c.Backups != 2 {
		t.Errorf("cnvrg/app counts %d backups, want the 2 committed", c.Backups)
	}
}

// TestFailuresAreBounded: the API searches the newest ResultWindow
// results only (index's tests show that a result is read once).
func TestFailuresAreBounded(t *testing.T) {
	b := fsBucket(t)
	h := newHarness(t, b, func(c *api.Config) { c.FailureTTL = -1; c.ResultWindow = 2 })
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	for i := range 4 {
		writeResult(t, b, fmt.Sprintf("f-%d", i), "c", "s", requests.StatusFailed, "boom", t0.Add(time.Duration(i)*time.Minute))
	}
	var p api.BackupPage
	h.get("/v1/clusters/c/backups?status=failed").decode(t, &p)
	if len(p.Failures) != 2 || p.Failures[0].ID != "f-3" || p.Failures[1].ID != "f-2" {
		t.Errorf("window of 2: %+v, want f-3, f-2", p.Failures)
	}
}
