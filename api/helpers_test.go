package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// harness is one test's API server over its own bucket.
type harness struct {
	t         *testing.T
	b         bucket.Bucket
	srv       *httptest.Server
	token     string
	tokenFile string
	spec      *spec
}

func fsBucket(t *testing.T) bucket.Bucket {
	t.Helper()
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	return bucket.Prefixed(fb, "capsule-"+randHex(4)+"/")
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newHarness serves the API over b with a token file (unless mod clears
// TokenFile) and no listing cache (unless mod sets one).
func newHarness(t *testing.T, b bucket.Bucket, mod func(*api.Config)) *harness {
	t.Helper()
	h := &harness{t: t, b: b, token: "tok-" + randHex(16), tokenFile: filepath.Join(t.TempDir(), "token"), spec: loadSpec(t)}
	if err := os.WriteFile(h.tokenFile, []byte(h.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := api.Config{Bucket: b, TokenFile: h.tokenFile, CacheTTL: -1, Log: enginetest.TestLog(t)}
	if mod != nil {
		mod(&cfg)
	}
	handler, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(handler)
	t.Cleanup(h.srv.Close)
	return h
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// decode unmarshals the body into v, failing the test if it cannot.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) apiError(t *testing.T) api.Error {
	t.Helper()
	var e api.Error
	r.decode(t, &e)
	return e
}

// do sends a request (path is escaped and may carry a query) and checks
// the response against openapi.yaml. headers are name, value pairs.
func (h *harness) do(method, path string, body []byte, headers ...string) response {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.spec.check(method, req.URL.EscapedPath(), res.StatusCode, res.Header.Get("Content-Type"), data); err != nil {
		h.t.Error(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: data}
}

func (h *harness) get(path string) response {
	h.t.Helper()
	return h.do("GET", path, nil)
}

func (h *harness) post(path string, body []byte) response {
	h.t.Helper()
	return h.do("POST", path, body, "Authorization", "Bearer "+h.token)
}

// wantStatus fails unless r has the status (and, for errors, the code).
func wantStatus(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d: %s", what, r.status, status, r.body)
		return
	}
	if code != "" {
		var e api.Error
		if err := json.Unmarshal(r.body, &e); err != nil || e.Code != code {
			t.Errorf("%s: body %s, want code %q", what, r.body, code)
		}
	}
}

// writeBackup commits a backup's index directly, as a worker would.
func writeBackup(t *testing.T, b bucket.Bucket, cluster, source, id string, finished time.Time, size int64) *index.BackupIndex {
	t.Helper()
	x := &index.BackupIndex{
		APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: id, RequestID: id,
		Cluster: cluster, Source: source, Engine: "files", Format: "files/tar-v1", CapsuleVersion: "test",
		Status: requests.StatusSucceeded, Attempt: 1, Worker: "test",
		StartedAt: finished.Add(-time.Duration(size%7+1) * time.Second), FinishedAt: finished,
		Bytes: size, StoredBytes: size / 2,
		Artifacts: []index.Artifact{{
			Name: "tree.tar", Key: requests.ArtifactKey(cluster, source, id, 1, "tree.tar"),
			Size: size, StoredSize: size / 2, SHA256: strings.Repeat("ab", 32), Compression: "zstd",
		}},
	}
	if err := index.Write(context.Background(), b, x); err != nil {
		t.Fatal(err)
	}
	return x
}

func ids(entries []api.BackupEntry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Index.BackupID
	}
	return out
}

// pageAll follows a cluster's pages to the end.
func (h *harness) pageAll(cluster, query string, limit int) []string {
	h.t.Helper()
	var all []string
	cursor := ""
	for range 1000 {
		path := fmt.Sprintf("/v1/clusters/%s/backups?limit=%d%s", escape(cluster), limit, query)
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := h.get(path)
		if r.status != 200 {
			h.t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		var p api.BackupPage
		r.decode(h.t, &p)
		if len(p.Backups) > limit {
			h.t.Fatalf("%s: %d backups, limit %d", path, len(p.Backups), limit)
		}
		all = append(all, ids(p.Backups)...)
		if p.NextCursor == "" {
			return all
		}
		cursor = p.NextCursor
	}
	h.t.Fatal("pages never end")
	return nil
}

// escape escapes a cluster name for the path, '/' as %2F.
func escape(name string) string { return requests.Segment(name) }
