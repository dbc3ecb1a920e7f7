package api_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestClustersAndBackups(t *testing.T) {
	b := fsBucket(t)
	h := newHarness(t, b, nil)
	// Two clusters (one with a '/' in its name), three sources, a tie on
	// finishedAt broken by id.
	writeBackup(t, b, "default", "pg", "b01", base.Add(1*time.Minute), 100)
	writeBackup(t, b, "default", "pg", "b02", base.Add(2*time.Minute), 200)
	writeBackup(t, b, "default", "redis", "b03", base.Add(3*time.Minute), 300)
	writeBackup(t, b, "cnvrg/cnvrg-app", "cnvrg/pg", "c01", base.Add(1*time.Minute), 10)
	writeBackup(t, b, "cnvrg/cnvrg-app", "cnvrg/pg", "c03", base.Add(2*time.Minute), 30)
	writeBackup(t, b, "cnvrg/cnvrg-app", "cnvrg/pg", "c02", base.Add(2*time.Minute), 20)
	x := writeBackup(t, b, "cnvrg/cnvrg-app", "cnvrg/files", "c04", base.Add(time.Minute), 40)
	v := &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: "c04", RequestID: "v1",
		OK: false, Error: "checksum mismatch", VerifiedAt: base.Add(time.Hour), Checks: []index.CheckResult{{Name: "restore", OK: false}}}
	if err := index.WriteVerification(t.Context(), b, x, v); err != nil {
		t.Fatal(err)
	}

	t.Run("clusters", func(t *testing.T) {
		var list api.ClusterList
		r := h.get("/v1/clusters")
		wantStatus(t, "GET /v1/clusters", r, 200, "")
		r.decode(t, &list)
		if len(list.Clusters) != 2 || list.Clusters[0].Name != "cnvrg/cnvrg-app" || list.Clusters[1].Name != "default" {
			t.Fatalf("clusters: %s", r.body)
		}
		app, def := list.Clusters[0], list.Clusters[1]
		if app.Backups != 4 || def.Backups != 3 || len(app.Sources) != 2 || len(def.Sources) != 2 {
			t.Errorf("counts: %s", r.body)
		}
		pg := def.Sources[0]
		if pg.Name != "pg" || pg.Backups != 2 || pg.NewestSuccessful == nil || pg.NewestSuccessful.BackupID != "b02" || pg.NewestSuccessful.Bytes != 200 {
			t.Errorf("default/pg: %+v", pg)
		}
		if s := app.Sources[1]; s.Name != "cnvrg/pg" || s.NewestSuccessful.BackupID != "c03" {
			t.Errorf("cnvrg/pg newest: %+v (want c03: same time as c02, larger id)", s)
		}
		if list.AsOf.IsZero() {
			t.Error("no asOf")
		}
	})

	t.Run("escaped slash in the cluster", func(t *testing.T) {
		var p api.BackupPage
		r := h.get("/v1/clusters/cnvrg%2Fcnvrg-app/backups")
		wantStatus(t, "escaped", r, 200, "")
		r.decode(t, &p)
		if got := ids(p.Backups); !slices.Equal(got, []string{"c03", "c02", "c04", "c01"}) || p.Cluster != "cnvrg/cnvrg-app" {
			t.Errorf("cnvrg/cnvrg-app backups %v (cluster %q), want c03 c02 c04 c01", got, p.Cluster)
		}
		if p.Backups[2].Verification == nil || p.Backups[2].Verification.OK || p.Backups[2].Verification.Error != "checksum mismatch" {
			t.Errorf("c04's verification: %+v", p.Backups[2].Verification)
		}
		// Lower-case escapes work too; an unescaped '/' is another path.
		wantStatus(t, "lower-case escape", h.get("/v1/clusters/cnvrg%2fcnvrg-app/backups?limit=1"), 200, "")
		r = h.get("/v1/clusters/cnvrg/cnvrg-app/backups")
		wantStatus(t, "unescaped", r, 404, api.CodeNotFound)
		if !strings.Contains(r.apiError(t).Message, "%2F") {
			t.Errorf("404 does not say how to escape: %s", r.body)
		}
	})

	t.Run("filters", func(t *testing.T) {
		var p api.BackupPage
		h.get("/v1/clusters/default/backups?source=pg&status=succeeded").decode(t, &p)
		if got := ids(p.Backups); !slices.Equal(got, []string{"b02", "b01"}) {
			t.Errorf("source=pg: %v", got)
		}
		h.get("/v1/clusters/cnvrg%2Fcnvrg-app/backups?source=cnvrg%2Fpg").decode(t, &p)
		if got := ids(p.Backups); !slices.Equal(got, []string{"c03", "c02", "c01"}) {
			t.Errorf("source=cnvrg/pg: %v", got)
		}
		h.get("/v1/clusters/default/backups?status=failed").decode(t, &p)
		if len(p.Backups) != 0 {
			t.Errorf("status=failed: %v", ids(p.Backups))
		}
		h.get("/v1/clusters/nobody/backups").decode(t, &p)
		if len(p.Backups) != 0 || p.NextCursor != "" {
			t.Errorf("a cluster without backups: %+v", p)
		}
	})

	t.Run("one backup", func(t *testing.T) {
		var e api.BackupEntry
		r := h.get("/v1/clusters/cnvrg%2Fcnvrg-app/backups/c04")
		wantStatus(t, "c04", r, 200, "")
		r.decode(t, &e)
		if e.Index.BackupID != "c04" || e.Index.Source != "cnvrg/files" || len(e.Index.Artifacts) != 1 || e.Verification == nil {
			t.Errorf("c04: %s", r.body)
		}
		wantStatus(t, "unknown id", h.get("/v1/clusters/default/backups/zzz"), 404, api.CodeNotFound)
		wantStatus(t, "other cluster's id", h.get("/v1/clusters/default/backups/c04"), 404, api.CodeNotFound)
	})

	t.Run("pagination", func(t *testing.T) {
		want := []string{"c03", "c02", "c04", "c01"}
		for _, limit := range []int{1, 2, 3, 4, 10} {
			if got := h.pageAll("cnvrg/cnvrg-app", "", limit); !slices.Equal(got, want) {
				t.Errorf("limit %d: %v, want %v", limit, got, want)
			}
		}
		if got := h.pageAll("cnvrg/cnvrg-app", "&source=cnvrg%2Fpg", 1); !slices.Equal(got, []string{"c03", "c02", "c01"}) {
			t.Errorf("source filter across pages: %v", got)
		}
	})
}

func TestPaginationIsStableWhileBackupsAreAdded(t *testing.T) {
	b := fsBucket(t)
	h := newHarness(t, b, nil)
	for i := range 10 {
		writeBackup(t, b, "default", "pg", fmt.Sprintf("old%02d", i), base.Add(time.Duration(i)*time.Minute), int64(1000+i))
	}
	var want []string
	for i := 9; i >= 0; i-- {
		want = append(want, fmt.Sprintf("old%02d", i))
	}
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		path := "/v1/clusters/default/backups?limit=3"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var p api.BackupPage
		h.get(path).decode(t, &p)
		got = append(got, ids(p.Backups)...)
		// Between pages, backups finish: newer ones, and one at the very
		// same time as the cursor's backup with a larger id.
		writeBackup(t, b, "default", "pg", fmt.Sprintf("new%02d", page), base.Add(time.Hour+time.Duration(page)*time.Minute), 5)
		if len(p.Backups) > 0 {
			last := p.Backups[len(p.Backups)-1].Index
			writeBackup(t, b, "default", "redis", "z"+last.BackupID, last.FinishedAt, 6)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages while backups were added: %v, want %v", got, want)
	}
	// A fresh listing shows everything, newest first.
	all := h.pageAll("default", "", 4)
	if len(all) != 10+4+4 || all[0] != "new03" {
		t.Errorf("fresh listing: %v", all)
	}
}

func TestListingCacheFreshness(t *testing.T) {
	b := fsBucket(t)
	writeBackup(t, b, "default", "pg", "a1", base, 1)

	t.Run("within the TTL the cached listing is served", func(t *testing.T) {
		h := newHarness(t, b, func(c *api.Config) { c.CacheTTL = time.Hour })
		var p1, p2 api.BackupPage
		h.get("/v1/clusters/default/backups").decode(t, &p1)
		writeBackup(t, b, "default", "pg", "a2", base.Add(time.Minute), 1)
		h.get("/v1/clusters/default/backups").decode(t, &p2)
		if !slices.Equal(ids(p2.Backups), []string{"a1"}) || !p2.AsOf.Equal(p1.AsOf) {
			t.Errorf("with a 1h TTL: %v as of %s (first read %s)", ids(p2.Backups), p2.AsOf, p1.AsOf)
		}
	})
	t.Run("after the TTL the bucket is read again", func(t *testing.T) {
		h := newHarness(t, b, func(c *api.Config) { c.CacheTTL = 50 * time.Millisecond })
		var p api.BackupPage
		h.get("/v1/clusters/default/backups").decode(t, &p)
		first := p.AsOf
		writeBackup(t, b, "default", "pg", "a3", base.Add(2*time.Minute), 1)
		deadline := time.Now().Add(5 * time.Second)
		for !slices.Contains(ids(p.Backups), "a3") {
			if time.Now().After(deadline) {
				t.Fatalf("a3 not listed 5s after it was committed (TTL 50ms)")
			}
			time.Sleep(10 * time.Millisecond) // polling the API, as a client would
			h.get("/v1/clusters/default/backups").decode(t, &p)
		}
		if !p.AsOf.After(first) {
			t.Errorf("asOf did not move: %s then %s", first, p.AsOf)
		}
	})
}

func TestBadInputGets4xxNever500(t *testing.T) {
	b := fsBucket(t)
	h := newHarness(t, b, nil)
	writeBackup(t, b, "default", "pg", "b1", base, 1)
	long := strings.Repeat("a", 300)
	cases := []struct {
		method, path string
		body         string
		status       int
		code, field  string
	}{
		{"GET", "/v1/clusters/default/backups?limit=0", "", 400, api.CodeInvalidParameter, "limit"},
		{"GET", "/v1/clusters/default/backups?limit=abc", "", 400, api.CodeInvalidParameter, "limit"},
		{"GET", "/v1/clusters/default/backups?limit=1001", "", 400, api.CodeInvalidParameter, "limit"},
		{"GET", "/v1/clusters/default/backups?limit=1&limit=2", "", 400, api.CodeInvalidParameter, "limit"},
		{"GET", "/v1/clusters/default/backups?cursor=%%%", "", 400, api.CodeInvalidParameter, ""},
		{"GET", "/v1/clusters/default/backups?cursor=bm90LWEtY3Vyc29y", "", 400, api.CodeInvalidParameter, "cursor"},
		{"GET", "/v1/clusters/default/backups?cursor=!!", "", 400, api.CodeInvalidParameter, "cursor"},
		{"GET", "/v1/clusters/default/backups?status=done", "", 400, api.CodeInvalidParameter, "status"},
		{"GET", "/v1/clusters/default/backups?source=..", "", 400, api.CodeInvalidParameter, "source"},
		{"GET", "/v1/clusters/default/backups?colour=red", "", 400, api.CodeInvalidParameter, "colour"},
		{"GET", "/v1/clusters?x=1", "", 400, api.CodeInvalidParameter, "x"},
		{"GET", "/v1/clusters/%2E%2E/backups", "", 400, api.CodeInvalidParameter, "cluster"},
		{"GET", "/v1/clusters/a%2F%2Fb/backups", "", 400, api.CodeInvalidParameter, "cluster"},
		{"GET", "/v1/clusters/" + long + "/backups", "", 400, api.CodeInvalidParameter, "cluster"},
		{"GET", "/v1/clusters/%00/backups", "", 400, api.CodeInvalidParameter, "cluster"},
		{"GET", "/v1/clusters/default/backups/UPPER", "", 400, api.CodeInvalidParameter, "backupId"},
		{"GET", "/v1/clusters/default/backups/" + long, "", 400, api.CodeInvalidParameter, "backupId"},
		{"GET", "/v1/clusters/default/backups/.hidden", "", 400, api.CodeInvalidParameter, "backupId"},
		{"GET", "/v1/requests/Bad%20Id", "", 400, api.CodeInvalidParameter, "id"},
		{"GET", "/v1/requests/" + long, "", 400, api.CodeInvalidParameter, "id"},
		{"GET", "/v1/requests/nosuch", "", 404, api.CodeNotFound, ""},
		{"GET", "/v1/nothing", "", 404, api.CodeNotFound, ""},
		{"GET", "/v1/clusters/default/backups/b1/extra", "", 404, api.CodeNotFound, ""},
		{"GET", "/v1/clusters/default/../backups", "", 404, api.CodeNotFound, ""},
		{"GET", "//v1/clusters", "", 404, api.CodeNotFound, ""},
		{"GET", "/v1/clusters/", "", 404, api.CodeNotFound, ""},
		{"GET", "/ui/nothing.js", "", 404, api.CodeNotFound, ""},
		{"GET", "/schemas/nothing.schema.json", "", 404, api.CodeNotFound, ""},
		{"DELETE", "/v1/clusters", "", 405, api.CodeMethodNotAllowed, ""},
		{"PUT", "/v1/requests/abc", "", 405, api.CodeMethodNotAllowed, ""},
		{"GET", "/v1/requests", "", 405, api.CodeMethodNotAllowed, ""},
		{"GET", "/v1/requests/abc/cancel", "", 405, api.CodeMethodNotAllowed, ""},
		{"POST", "/v1/requests", "", 400, api.CodeInvalidRequest, ""},
		{"POST", "/v1/requests", "{", 400, api.CodeInvalidRequest, ""},
		{"POST", "/v1/requests", "[]", 400, api.CodeInvalidRequest, ""},
		{"POST", "/v1/requests", "null", 400, api.CodeInvalidRequest, ""},
		{"POST", "/v1/requests", `"Backup"`, 400, api.CodeInvalidRequest, ""},
		{"POST", "/v1/requests", `{}`, 400, api.CodeInvalidRequest, "kind"},
		{"POST", "/v1/requests", `{"kind":"Backup"}`, 400, api.CodeInvalidRequest, "source"},
		{"POST", "/v1/requests", `{"kind":"Nap","source":"pg"}`, 400, api.CodeInvalidRequest, "kind"},
		{"POST", "/v1/requests", `{"kind":"Backup","source":"pg","password":"hunter2"}`, 400, api.CodeInvalidRequest, "password"},
		{"POST", "/v1/requests", `{"kind":"Backup","source":7}`, 400, api.CodeInvalidRequest, "source"},
		{"POST", "/v1/requests", `{"kind":"Backup","source":"pg"} {}`, 400, api.CodeInvalidRequest, ""},
		{"POST", "/v1/requests", `{"kind":"Backup","source":"pg","id":"UPPER"}`, 400, api.CodeInvalidRequest, "id"},
		{"POST", "/v1/requests", `{"kind":"Backup","source":"pg","id":null}`, 400, api.CodeInvalidRequest, "id"},
		{"POST", "/v1/requests", `{"kind":"Backup","source":"pg","apiVersion":"capsule/v2"}`, 400, api.CodeInvalidRequest, "apiVersion"},
		{"POST", "/v1/requests", `{"kind":"Restore","backupId":"b1","source":"pg"}`, 400, api.CodeInvalidRequest, "source"},
		{"POST", "/v1/requests", `{"kind":"Backup","source":"../etc"}`, 400, api.CodeInvalidRequest, "source"},
		{"POST", "/v1/requests", `{"kind":"Backup","source":"pg","cluster":"a//b"}`, 400, api.CodeInvalidRequest, "cluster"},
		{"POST", "/v1/requests", `{"kind":"Backup","source":"pg","labels":{"":"x"}}`, 400, api.CodeInvalidRequest, "labels"},
		{"POST", "/v1/requests", `{"kind":"Backup","source":"pg"}` + strings.Repeat(" ", 1<<20), 413, api.CodeTooLarge, ""},
		{"POST", "/v1/requests?x=1", `{"kind":"Backup","source":"pg"}`, 400, api.CodeInvalidParameter, "x"},
		{"POST", "/v1/requests/Bad/cancel", "", 400, api.CodeInvalidParameter, "id"},
		{"POST", "/v1/requests/nosuch/cancel", "", 404, api.CodeNotFound, ""},
		{"POST", "/v1/requests/nosuch/cancel", `{"why":"x"}`, 400, api.CodeInvalidRequest, ""},
		{"POST", "/v1/requests/nosuch/cancel", `{"reason":"x"}{}`, 400, api.CodeInvalidRequest, ""},
		{"POST", "/v1/requests/nosuch/cancel", `{"reason":"` + strings.Repeat("x", 2000) + `"}`, 400, api.CodeInvalidRequest, "reason"},
	}
	for _, c := range cases {
		name := c.method + " " + c.path
		if len(name) > 80 {
			name = name[:80]
		}
		var body []byte
		if c.body != "" || c.method == "POST" {
			body = []byte(c.body)
		}
		r := h.do(c.method, c.path, body, "Authorization", "Bearer "+h.token)
		if r.status >= 500 {
			t.Errorf("%s: %d %s", name, r.status, r.body)
			continue
		}
		wantStatus(t, name, r, c.status, c.code)
		if c.field != "" {
			if e := r.apiError(t); e.Field != c.field {
				t.Errorf("%s: field %q, want %q (%s)", name, e.Field, c.field, e.Message)
			}
		}
		if c.status == 405 && r.header.Get("Allow") == "" {
			t.Errorf("%s: 405 without Allow", name)
		}
	}
	// Nothing was submitted by any of it.
	page, err := b.List(t.Context(), requests.RequestsPrefix, bucket.ListOptions{})
	if err != nil || len(page.Objects) != 0 {
		t.Errorf("requests/ after bad input: %v %v", page.Objects, err)
	}
}

func TestWritesNeedTheToken(t *testing.T) {
	b := fsBucket(t)
	h := newHarness(t, b, nil)
	body := []byte(`{"kind":"Backup","source":"pg","cluster":"cnvrg/cnvrg-app","labels":{"why":"test"}}`)

	for _, auth := range []string{"", "Bearer", "Bearer wrong", "Basic " + h.token, "Bearer " + h.token + "x", h.token} {
		r := h.do("POST", "/v1/requests", body, "Authorization", auth)
		wantStatus(t, fmt.Sprintf("Authorization %q", auth), r, 401, api.CodeUnauthorized)
		if r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without WWW-Authenticate")
		}
	}
	wantStatus(t, "cancel without token", h.do("POST", "/v1/requests/abc/cancel", nil), 401, api.CodeUnauthorized)

	r := h.post("/v1/requests", body)
	wantStatus(t, "POST with the token", r, 201, "")
	var st client.Status
	r.decode(t, &st)
	if st.Status != requests.StatusPending || requests.ValidateID(st.ID) != nil || r.header.Get("Location") != "/v1/requests/"+st.ID {
		t.Fatalf("201: %s (Location %q)", r.body, r.header.Get("Location"))
	}
	// It is in the bucket exactly as a request object.
	data, _, err := bucket.GetBytes(t.Context(), b, requests.RequestKey(st.ID))
	if err != nil {
		t.Fatal(err)
	}
	req, err := requests.Parse(data)
	if err != nil || req.Cluster != "cnvrg/cnvrg-app" || req.Source != "pg" || req.Labels["why"] != "test" {
		t.Fatalf("stored request %s: %v", data, err)
	}
	r = h.get("/v1/requests/" + st.ID)
	wantStatus(t, "status", r, 200, "")
	r.decode(t, &st)
	if st.Status != requests.StatusPending || st.Request == nil {
		t.Errorf("status: %s", r.body)
	}

	// A chosen id; the same id again is a conflict.
	r = h.post("/v1/requests", []byte(`{"apiVersion":"capsule/v1","id":"my-backup-1","kind":"Backup","source":"pg"}`))
	wantStatus(t, "chosen id", r, 201, "")
	wantStatus(t, "same id again", h.post("/v1/requests", []byte(`{"id":"my-backup-1","kind":"Backup","source":"pg"}`)), 409, api.CodeConflict)

	// Cancel: recorded, visible in the status; an ended request refuses.
	r = h.post("/v1/requests/my-backup-1/cancel", []byte(`{"reason":"changed my mind"}`))
	wantStatus(t, "cancel", r, 202, "")
	r.decode(t, &st)
	if !st.CancelRequested || st.Status != requests.StatusPending {
		t.Errorf("after cancel: %s", r.body)
	}
	wantStatus(t, "cancel with no body", h.post("/v1/requests/"+st.ID+"/cancel", nil), 202, "")
	res := requests.Result{APIVersion: requests.APIVersion, Kind: "Result", ID: "ended-1", Status: requests.StatusSucceeded, Attempts: 1, FinishedAt: base}
	data, _ = json.Marshal(res)
	if _, err := bucket.PutBytes(t.Context(), b, requests.ResultKey("ended-1"), data, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "cancel an ended request", h.post("/v1/requests/ended-1/cancel", nil), 409, api.CodeConflict)
	wantStatus(t, "reuse an ended request's id", h.post("/v1/requests", []byte(`{"id":"ended-1","kind":"Backup","source":"pg"}`)), 409, api.CodeConflict)
	r = h.get("/v1/requests/ended-1")
	r.decode(t, &st)
	if st.Status != requests.StatusSucceeded || st.Result == nil {
		t.Errorf("ended status: %s", r.body)
	}

	// A malformed request in the bucket is pending, without a body to show.
	if _, err := bucket.PutBytes(t.Context(), b, requests.RequestKey("garbage-1"), []byte("{garbage"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r = h.get("/v1/requests/garbage-1")
	wantStatus(t, "malformed request", r, 200, "")
	st = client.Status{}
	r.decode(t, &st)
	if st.Status != requests.StatusPending || st.Request != nil {
		t.Errorf("malformed request: %s", r.body)
	}

	// Rotation: a new token works at once, the old one no longer.
	newToken := "rotated-" + randHex(8)
	if err := os.WriteFile(h.tokenFile, []byte(newToken), 0o600); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "old token after rotation", h.post("/v1/requests", body), 401, api.CodeUnauthorized)
	wantStatus(t, "new token", h.do("POST", "/v1/requests", body, "Authorization", "Bearer "+newToken), 201, "")
	// A token file that disappeared refuses writes without a 500.
	if err := os.Remove(h.tokenFile); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, "token file gone", h.do("POST", "/v1/requests", body, "Authorization", "Bearer "+newToken), 503, api.CodeUnavailable)
}

func TestReadOnlyWithoutATokenFile(t *testing.T) {
	h := newHarness(t, fsBucket(t), func(c *api.Config) { c.TokenFile = "" })
	wantStatus(t, "POST", h.post("/v1/requests", []byte(`{"kind":"Backup","source":"pg"}`)), 403, api.CodeReadOnly)
	wantStatus(t, "cancel", h.post("/v1/requests/abc/cancel", nil), 403, api.CodeReadOnly)
	wantStatus(t, "GET still works", h.get("/v1/clusters"), 200, "")
}

func TestConfig(t *testing.T) {
	b := fsBucket(t)
	if _, err := api.New(api.Config{}); err == nil {
		t.Error("no bucket: no error")
	}
	if _, err := api.New(api.Config{Bucket: b, TokenFile: "/nonexistent/token"}); err == nil || !strings.Contains(err.Error(), "token file") {
		t.Errorf("missing token file: %v", err)
	}
	empty := t.TempDir() + "/empty"
	os.WriteFile(empty, []byte("\n  \n"), 0o600)
	if _, err := api.New(api.Config{Bucket: b, TokenFile: empty}); err == nil || !strings.Contains(err.Error(), "no token") {
		t.Errorf("empty token file: %v", err)
	}
}

func TestHealthPageAndDocuments(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("capsule_up 1\n")) })
	h := newHarness(t, fsBucket(t), func(c *api.Config) { c.Metrics = metrics })
	wantStatus(t, "healthz", h.get("/healthz"), 200, "")
	wantStatus(t, "readyz", h.get("/readyz"), 200, "")
	if r := h.get("/metrics"); r.status != 200 || string(r.body) != "capsule_up 1\n" {
		t.Errorf("metrics: %d %s", r.status, r.body)
	}

	page := h.get("/")
	if page.status != 200 || !strings.HasPrefix(page.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(page.header.Get("Content-Security-Policy"), "connect-src 'self'") || !strings.Contains(string(page.body), "ui/app.js") {
		t.Errorf("page: %d %v", page.status, page.header)
	}
	for _, f := range []string{"/ui/app.js", "/ui/style.css", "/v1/openapi.yaml", "/schemas/backupIndex.schema.json"} {
		if r := h.get(f); r.status != 200 || len(r.body) == 0 {
			t.Errorf("%s: %d", f, r.status)
		}
	}
	if strings.Contains(string(h.get("/ui/app.js").body), "http://") && strings.Contains(string(h.get("/ui/app.js").body), "fetch(\"http") {
		t.Error("the page fetches from an absolute URL")
	}
}

func TestUnreachableBucketIs503(t *testing.T) {
	// A real S3 client pointed at a port where nothing listens.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dead, err := s3.New(t.Context(), s3.Options{Bucket: "gone", Endpoint: "http://" + addr, Region: "us-east-1", AccessKey: "k", SecretKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, dead, nil)
	// In parallel: the S3 client retries each call for a few seconds.
	var wg sync.WaitGroup
	for _, p := range []string{"/readyz", "/v1/clusters", "/v1/clusters/default/backups", "/v1/clusters/default/backups/abc", "/v1/requests/abc", "POST /v1/requests"} {
		wg.Go(func() {
			if p, ok := strings.CutPrefix(p, "POST "); ok {
				wantStatus(t, "POST "+p, h.post(p, []byte(`{"kind":"Backup","source":"pg"}`)), 503, api.CodeBucketUnavailable)
				return
			}
			wantStatus(t, p, h.get(p), 503, api.CodeBucketUnavailable)
		})
	}
	wg.Wait()
	wantStatus(t, "healthz", h.get("/healthz"), 200, "")
	// A damaged index is no error at all: see TestDamagedIndexesAreListed.
}

func TestEveryDocumentedOperationIsExercised(t *testing.T) {
	// Runs last in this file's order only by name; it checks coverage of the
	// operations (not every status) after a small tour.
	h := newHarness(t, fsBucket(t), nil)
	h.get("/v1/clusters")
	h.get("/v1/clusters/default/backups")
	h.get("/v1/clusters/default/backups/x")
	wantStatus(t, "pitr without WAL", h.get("/v1/clusters/default/pitr?source=pg"), 404, api.CodeNotFound)
	wantStatus(t, "pitr without source", h.get("/v1/clusters/default/pitr"), 400, api.CodeInvalidParameter)
	h.get("/v1/requests/x")
	h.post("/v1/requests", []byte(`{"kind":"Backup","source":"pg","id":"tour"}`))
	h.post("/v1/requests/tour/cancel", nil)
	h.get("/healthz")
	h.get("/readyz")
	h.get("/metrics")
	h.get("/")
	h.get("/ui/app.js")
	h.get("/v1/openapi.yaml")
	h.get("/schemas/request.schema.json")
	paths := h.spec.doc["paths"].(map[string]any)
	for tmpl, item := range paths {
		for method := range item.(map[string]any) {
			found := false
			h.spec.mu.Lock()
			for k := range h.spec.seen {
				if strings.HasPrefix(k, strings.ToUpper(method)+" "+tmpl+" ") {
					found = true
				}
			}
			h.spec.mu.Unlock()
			if !found {
				t.Errorf("%s %s: no test response checked against it", method, tmpl)
			}
		}
	}
}
