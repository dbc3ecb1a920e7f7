package elasticsearch

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// esService is the enginetest.Service for the stand-in or a real cluster
// (CAPSULE_TEST_ES_URL). Each subtest gets its own random name prefix;
// every index, template and pipeline it makes carries it.
type esService struct {
	url, user, pass, caFile string
	std                     *standIn // nil against a real cluster
	extra                   map[string]any
	big                     bool // RoundTrip seeds > 100k documents
	noDataStreams           bool // servers older than 7.9
	noTemplates             bool // snapshot mode: templates are not in a snapshot
	mu                      sync.Mutex
	prefixes                map[string]string
}

func newStandInService(t *testing.T, distribution, version string) (*esService, *standIn) {
	std := newStandIn(t, distribution, version, false)
	std.user, std.pass = "capsule", "pw-"+randHex(8)
	std.repos["s3repo"] = "s3"
	return &esService{url: std.srv.URL, user: std.user, pass: std.pass, std: std, prefixes: map[string]string{}}, std
}

func realService(t *testing.T) *esService {
	u := os.Getenv("CAPSULE_TEST_ES_URL")
	if u == "" {
		t.Skip("CAPSULE_TEST_ES_URL is not set: the suite ran against the stand-in only (set it, with CAPSULE_TEST_ES_USER, CAPSULE_TEST_ES_PASSWORD and CAPSULE_TEST_ES_CAFILE, to run it against a real Elasticsearch or OpenSearch cluster)")
	}
	return &esService{url: u, user: os.Getenv("CAPSULE_TEST_ES_USER"), pass: os.Getenv("CAPSULE_TEST_ES_PASSWORD"), caFile: os.Getenv("CAPSULE_TEST_ES_CAFILE"), prefixes: map[string]string{}}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *esService) prefix(t testing.TB) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.prefixes[t.Name()]
	if !ok {
		p = "capsule-test-" + randHex(4)
		s.prefixes[t.Name()] = p
	}
	return p
}

func (s *esService) Source(t *testing.T) engines.Source {
	cfg := map[string]any{"url": s.url, "indices": []any{s.prefix(t) + "-*"}, "batchSize": 700}
	if s.user != "" {
		cfg["user"] = s.user
	}
	if s.caFile != "" {
		cfg["caFile"] = s.caFile
	}
	for k, v := range s.extra {
		cfg[k] = v
	}
	pass := s.pass
	return engines.Source{Name: "test/es", Engine: Name, Config: cfg, Password: func(context.Context) (string, error) { return pass, nil }}
}

func (s *esService) client(t testing.TB) *client {
	t.Helper()
	cfg := &Config{URL: s.url, User: s.user, CAFile: s.caFile}
	pass := s.pass
	c, err := newClient(context.Background(), engines.Source{Password: func(context.Context) (string, error) { return pass, nil }}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type counts struct{ a, b, c, ds int }

func (s *esService) counts(t testing.TB) counts {
	if s.big && strings.Contains(t.Name(), "RoundTrip") {
		return counts{a: 60000, b: 30000, c: 10000, ds: 2000} // 102,000 documents
	}
	return counts{a: 300, b: 200, c: 100, ds: 50}
}

func docA(i int) map[string]any {
	sum := sha256.Sum256([]byte(strconv.Itoa(i)))
	return map[string]any{
		"title":  fmt.Sprintf("document %d — naïve café 東京 🚀 \"quoted\" \\ back <b>&amp;</b>", i),
		"n":      json.Number(strconv.FormatInt(int64(i)*7919%1000003, 10)),
		"big":    json.Number("9007199254740993"),
		"at":     time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute).Format(time.RFC3339Nano),
		"blob":   base64.StdEncoding.EncodeToString(sum[:16]),
		"tags":   []string{"x", "t" + strconv.Itoa(i%10)},
		"items":  []map[string]any{{"k": "a", "v": 1.5}, {"k": "b", "v": float64(i) / 3}},
		"nested": map[string]any{"deep": map[string]any{"deeper": map[string]any{"value": i, "list": []any{1, "two", 3.5, nil, true}}}},
		"empty":  []any{},
		"none":   nil,
	}
}

func (s *esService) bulk(ctx context.Context, t testing.TB, c *client, op, index string, n int, id func(int) string, routing func(int) string, doc func(int) map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	flush := func() {
		if buf.Len() == 0 {
			return
		}
		var r bulkResponse
		must(t, c.request(ctx, http.MethodPost, "/_bulk", nil, ndjson(buf.Bytes()), &r))
		if r.Errors {
			for _, it := range r.Items {
				for _, res := range it {
					if res.Error != nil {
						t.Fatalf("seed bulk into %s: %s %s: %s", index, res.ID, res.Error.Type, res.Error.Reason)
					}
				}
			}
		}
		buf.Reset()
	}
	for i := 0; i < n; i++ {
		meta := map[string]string{"_index": index, "_id": id(i)}
		if routing != nil {
			if r := routing(i); r != "" {
				meta["routing"] = r
			}
		}
		a, _ := json.Marshal(map[string]any{op: meta})
		var db bytes.Buffer
		enc := json.NewEncoder(&db)
		enc.SetEscapeHTML(false) // sources hold raw '<', '>', '&'
		must(t, enc.Encode(doc(i)))
		d := bytes.TrimSuffix(db.Bytes(), []byte("\n"))
		buf.Write(a)
		buf.WriteByte('\n')
		buf.Write(d)
		buf.WriteByte('\n')
		if (i+1)%5000 == 0 {
			flush()
		}
	}
	flush()
}

func (s *esService) Seed(ctx context.Context, t *testing.T) {
	p := s.prefix(t)
	n := s.counts(t)
	c := s.client(t)
	defer c.close()
	t.Cleanup(func() { s.cleanup(t, p) })
	req := func(method, path string, body any) {
		t.Helper()
		must(t, c.request(ctx, method, path, nil, body, nil))
	}
	stamp := func(v string) map[string]any {
		return map[string]any{"description": "stamps documents", "processors": []any{map[string]any{"set": map[string]any{"field": "stamped", "value": v}}}}
	}
	req("PUT", esPath("_ingest", "pipeline", p+"-stamp"), stamp("yes"))
	if !s.noTemplates {
		req("PUT", esPath("_component_template", p+"-ct"), map[string]any{"template": map[string]any{"mappings": map[string]any{"properties": map[string]any{"created": map[string]any{"type": "date"}}}}})
		if !s.noDataStreams {
			req("PUT", esPath("_index_template", p+"-tpl"), map[string]any{
				"index_patterns": []string{p + "-ds-*"}, "data_stream": map[string]any{}, "composed_of": []string{p + "-ct"}, "priority": 500,
				"template": map[string]any{"settings": map[string]any{"number_of_shards": 1, "number_of_replicas": 0}, "mappings": map[string]any{"properties": map[string]any{"@timestamp": map[string]any{"type": "date"}, "msg": map[string]any{"type": "keyword"}}}},
			})
		}
	}
	req("PUT", esPath(p+"-a"), map[string]any{
		"settings": map[string]any{"number_of_shards": 2, "number_of_replicas": 0},
		"mappings": map[string]any{"properties": map[string]any{
			"title": map[string]any{"type": "text"}, "n": map[string]any{"type": "long"}, "big": map[string]any{"type": "long"},
			"at": map[string]any{"type": "date"}, "blob": map[string]any{"type": "binary"}, "tags": map[string]any{"type": "keyword"},
			"items": map[string]any{"type": "nested", "properties": map[string]any{"k": map[string]any{"type": "keyword"}, "v": map[string]any{"type": "double"}}},
		}},
		"aliases": map[string]any{p + "-alias": map[string]any{"is_write_index": true}, p + "-filtered": map[string]any{"filter": map[string]any{"term": map[string]any{"tags": "x"}}}},
	})
	req("PUT", esPath(p+"-b"), map[string]any{
		"settings": map[string]any{"number_of_shards": 1, "number_of_replicas": 0, "index.default_pipeline": p + "-stamp",
			"analysis": map[string]any{"analyzer": map[string]any{"folding": map[string]any{"type": "custom", "tokenizer": "standard", "filter": []string{"lowercase", "asciifolding"}}}}},
		"mappings": map[string]any{"properties": map[string]any{"text": map[string]any{"type": "text", "analyzer": "folding"}}},
	})
	req("PUT", esPath(p+"-c"), map[string]any{"settings": map[string]any{"number_of_replicas": 0, "refresh_interval": "30s"}})
	s.bulk(ctx, t, c, "index", p+"-a", n.a, func(i int) string { return fmt.Sprintf("a-%06d", i) }, nil, docA)
	s.bulk(ctx, t, c, "index", p+"-b", n.b, func(i int) string { return fmt.Sprintf("b/ü/%d", i) },
		func(i int) string {
			if i%3 == 0 {
				return "r" + strconv.Itoa(i%7)
			}
			return ""
		},
		func(i int) map[string]any {
			return map[string]any{"text": "Crème brûlée Ñandú " + strconv.Itoa(i), "i": i}
		})
	// Documents carry the pipeline's first value; the backup holds its
	// second: a restore that ran documents through it again would show.
	req("PUT", esPath("_ingest", "pipeline", p+"-stamp"), stamp("v2"))
	s.bulk(ctx, t, c, "index", p+"-c", n.c, func(i int) string { return fmt.Sprintf("c 日本 %d", i) }, nil,
		func(i int) map[string]any {
			return map[string]any{"emoji": "🙂🙃", "rtl": "שלום", "zero": "a\u0000b", "i": i}
		})
	if !s.noDataStreams && !s.noTemplates {
		s.bulk(ctx, t, c, "create", p+"-ds-logs", n.ds, func(i int) string { return fmt.Sprintf("ds-%d", i) }, nil,
			func(i int) map[string]any {
				return map[string]any{"@timestamp": time.Date(2024, 5, 1, 0, 0, i, 0, time.UTC).Format(time.RFC3339), "msg": "event " + strconv.Itoa(i)}
			})
	}
	for _, i := range []string{"-a", "-b", "-c"} {
		req("POST", esPath(p+i, "_refresh"), nil)
	}
	if !s.noDataStreams && !s.noTemplates {
		req("POST", esPath(p+"-ds-logs", "_refresh"), nil)
	}
}

// cleanup removes what a subtest made (on a real cluster it matters).
func (s *esService) cleanup(t testing.TB, p string) {
	c := s.client(t)
	defer c.close()
	ctx := context.Background()
	var r struct {
		Indices []struct {
			Name       string `json:"name"`
			DataStream string `json:"data_stream"`
		} `json:"indices"`
		DataStreams []struct {
			Name string `json:"name"`
		} `json:"data_streams"`
	}
	if s.std != nil && !s.std.atLeast(7, 9) && !s.std.os() {
		return
	}
	if c.request(ctx, "GET", esPath("_resolve", "index", p+"*"), url.Values{"expand_wildcards": {"open"}}, nil, &r) != nil {
		return
	}
	for _, d := range r.DataStreams {
		_ = c.request(ctx, "DELETE", esPath("_data_stream", seg(d.Name)), nil, nil, nil)
	}
	for _, i := range r.Indices {
		if i.DataStream == "" {
			_ = c.request(ctx, "DELETE", esPath(seg(i.Name)), url.Values{"ignore_unavailable": {"true"}}, nil, nil)
		}
	}
	_ = c.request(ctx, "DELETE", esPath("_index_template", p+"-tpl"), nil, nil, nil)
	_ = c.request(ctx, "DELETE", esPath("_component_template", p+"-ct"), nil, nil, nil)
	_ = c.request(ctx, "DELETE", esPath("_ingest", "pipeline", p+"-stamp"), nil, nil, nil)
}

// docSnap is a document as the cluster returns it: its _source bytes, as
// indexed, must come back byte for byte.
type docSnap struct {
	Routing string
	Source  string
}

type indexSnap struct {
	Settings map[string]any
	Mappings any
	Aliases  map[string]any
	Docs     map[string]docSnap
}

type esSnapshot struct {
	Indices     map[string]indexSnap
	DataStreams map[string]map[string]docSnap
	Templates   map[string]any
	Components  map[string]any
	Pipelines   map[string]any
}

func decodeNumbers(raw []byte) any {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	_ = dec.Decode(&v)
	return v
}

// scrollAll reads every document of a name with a scroll (independent of
// the engine's reader). It reports false when the name does not exist.
func scrollAll(ctx context.Context, t testing.TB, c *client, name string) (map[string]docSnap, bool) {
	var r searchResult
	err := c.request(ctx, "POST", esPath(seg(name), "_search"), url.Values{"scroll": {"1m"}}, map[string]any{"size": 5000, "sort": []string{"_doc"}}, &r)
	if isStatus(err, 404) {
		return nil, false
	}
	must(t, err)
	out := map[string]docSnap{}
	for len(r.Hits.Hits) > 0 {
		for _, h := range r.Hits.Hits {
			out[h.ID] = docSnap{Routing: h.Routing, Source: string(h.Source)}
		}
		id := r.ScrollID
		r = searchResult{}
		must(t, c.request(ctx, "POST", "/_search/scroll", nil, map[string]string{"scroll": "1m", "scroll_id": id}, &r))
	}
	_ = c.request(ctx, "DELETE", "/_search/scroll", nil, map[string]any{"scroll_id": []string{r.ScrollID}}, nil)
	return out, true
}

func (s *esService) Snapshot(ctx context.Context, t *testing.T) any {
	p := s.prefix(t)
	c := s.client(t)
	defer c.close()
	snap := esSnapshot{Indices: map[string]indexSnap{}, DataStreams: map[string]map[string]docSnap{}, Templates: map[string]any{}, Components: map[string]any{}, Pipelines: map[string]any{}}
	for _, i := range []string{"-a", "-b", "-c"} {
		name := p + i
		var got map[string]struct {
			Aliases  map[string]json.RawMessage `json:"aliases"`
			Mappings json.RawMessage            `json:"mappings"`
			Settings map[string]any             `json:"settings"`
		}
		err := c.request(ctx, "GET", esPath(seg(name)), url.Values{"flat_settings": {"true"}}, nil, &got)
		if isStatus(err, 404) {
			continue
		}
		must(t, err)
		if len(got) != 1 {
			t.Fatalf("GET %s answered %d indices", name, len(got))
		}
		for _, ix := range got {
			is := indexSnap{Settings: restorable(ix.Settings), Mappings: decodeNumbers(ix.Mappings), Aliases: map[string]any{}}
			delete(is.Settings, "index.routing.allocation.include._tier_preference")
			for a, raw := range ix.Aliases {
				if a != name { // a renamed copy carries the name as an alias
					is.Aliases[a] = decodeNumbers(raw)
				}
			}
			is.Docs, _ = scrollAll(ctx, t, c, name)
			snap.Indices[name] = is
		}
	}
	if !s.noDataStreams && !s.noTemplates {
		if docs, ok := scrollAll(ctx, t, c, p+"-ds-logs"); ok {
			snap.DataStreams[p+"-ds-logs"] = docs
		}
	}
	if !s.noTemplates {
		var it struct {
			IndexTemplates []struct {
				Name          string          `json:"name"`
				IndexTemplate json.RawMessage `json:"index_template"`
			} `json:"index_templates"`
		}
		must(t, c.request(ctx, "GET", "/_index_template", nil, nil, &it))
		for _, x := range it.IndexTemplates {
			if strings.HasPrefix(x.Name, p) {
				snap.Templates[x.Name] = decodeNumbers(x.IndexTemplate)
			}
		}
		var ct struct {
			ComponentTemplates []struct {
				Name              string          `json:"name"`
				ComponentTemplate json.RawMessage `json:"component_template"`
			} `json:"component_templates"`
		}
		must(t, c.request(ctx, "GET", "/_component_template", nil, nil, &ct))
		for _, x := range ct.ComponentTemplates {
			if strings.HasPrefix(x.Name, p) {
				snap.Components[x.Name] = decodeNumbers(x.ComponentTemplate)
			}
		}
		var pl map[string]json.RawMessage
		must(t, c.request(ctx, "GET", "/_ingest/pipeline", nil, nil, &pl))
		for id, raw := range pl {
			if strings.HasPrefix(id, p) {
				snap.Pipelines[id] = decodeNumbers(raw)
			}
		}
	}
	return snap
}

func (s *esService) Damage(ctx context.Context, t *testing.T) {
	p := s.prefix(t)
	c := s.client(t)
	defer c.close()
	must(t, c.request(ctx, "DELETE", esPath(p+"-c"), nil, nil, nil))
	s.bulk(ctx, t, c, "index", p+"-a", 10, func(i int) string { return fmt.Sprintf("a-%06d", i*7) }, nil,
		func(i int) map[string]any { return map[string]any{"title": "overwritten by the disaster"} })
	must(t, c.request(ctx, "POST", "/_aliases", nil, map[string]any{"actions": []any{map[string]any{"remove": map[string]string{"index": p + "-a", "alias": p + "-filtered"}}}}, nil))
	must(t, c.request(ctx, "POST", esPath(p+"-a", "_refresh"), nil, nil, nil))
	if !s.noTemplates {
		must(t, c.request(ctx, "PUT", esPath("_ingest", "pipeline", p+"-stamp"), nil, map[string]any{"processors": []any{map[string]any{"set": map[string]any{"field": "stamped", "value": "damaged"}}}}, nil))
		if !s.noDataStreams {
			must(t, c.request(ctx, "DELETE", esPath("_data_stream", p+"-ds-logs"), nil, nil, nil))
			must(t, c.request(ctx, "DELETE", esPath("_index_template", p+"-tpl"), nil, nil, nil))
		}
	}
}

func newTestEngine() *Engine {
	return &Engine{bulkBackoff: 5 * time.Millisecond, pollInterval: 5 * time.Millisecond}
}

// TestStandInSuite runs the shared round-trip suite against the stand-in
// speaking as Elasticsearch 8.11 (point in time, data streams, composable
// templates), with in-place restores. RoundTrip moves 102,000 documents.
func TestStandInSuite(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	svc.big = true
	enginetest.Run(t, newTestEngine(), svc, enginetest.Options{Compare: compareSnapshots})
	if std.callCount("pit-open") == 0 || std.callCount("scroll") > std.callCount("search")*100 {
		t.Errorf("an 8.x server must be read with a point in time: pit-open=%d", std.callCount("pit-open"))
	}
	if std.callCount("search-pit") == 0 {
		t.Errorf("no search with a point in time was made")
	}
}

// TestStandInSuiteRenameSuffix runs the suite with renameSuffix and
// DropPrevious: every index is staged beside the live one and its name
// becomes an alias of the copy.
func TestStandInSuiteRenameSuffix(t *testing.T) {
	svc, _ := newStandInService(t, "elasticsearch", "8.11.0")
	enginetest.Run(t, newTestEngine(), svc, enginetest.Options{Compare: compareSnapshots, Restore: engines.RestoreOptions{DropPrevious: true, Extra: map[string]string{"renameSuffix": "-restored"}}, StagingOpen: 2})
}

// TestStandInSuiteOpenSearch: OpenSearch 2.x has no _shard_doc point in
// time: the engine falls back to scroll.
func TestStandInSuiteOpenSearch(t *testing.T) {
	svc, std := newStandInService(t, "opensearch", "2.11.0")
	enginetest.Run(t, newTestEngine(), svc, enginetest.Options{Compare: compareSnapshots})
	if n := std.callCount("pit-open"); n != 0 {
		t.Errorf("opened %d points in time on OpenSearch", n)
	}
	if std.callCount("search") == 0 || std.callCount("scroll") == 0 {
		t.Errorf("OpenSearch was not read with scroll")
	}
}

// TestStandInSuiteOldElasticsearch: 7.8 has neither _resolve/index, point
// in time nor data streams: indices are listed with _cat and read with
// scroll.
func TestStandInSuiteOldElasticsearch(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "7.8.1")
	svc.noDataStreams = true
	enginetest.Run(t, newTestEngine(), svc, enginetest.Options{Compare: compareSnapshots})
	if std.callCount("cat") == 0 || std.callCount("resolve") != 0 {
		t.Errorf("7.8 must be listed with _cat/indices: cat=%d resolve=%d", std.callCount("cat"), std.callCount("resolve"))
	}
}

// TestStandInSuiteSnapshotMode runs the suite in snapshot mode against the
// stand-in's minimal _snapshot API: the capsule artifact only records the
// repository and snapshot.
func TestStandInSuiteSnapshotMode(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	std.snapshotPolls = 2
	svc.noTemplates = true
	svc.extra = map[string]any{"mode": "snapshot", "repository": "s3repo"}
	enginetest.Run(t, newTestEngine(), svc, enginetest.Options{Compare: compareSnapshots})
	t.Run("RenameSuffix", func(t *testing.T) {
		ctx := context.Background()
		svc.Seed(ctx, t)
		want := svc.Snapshot(ctx, t)
		store, info := enginetest.Backup(ctx, t, newTestEngine(), svc.Source(t))
		if info.SourceInfo["repository"] != "s3repo" || !strings.HasPrefix(info.SourceInfo["snapshot"], "capsule-") {
			t.Fatalf("SourceInfo = %v, want repository and snapshot", info.SourceInfo)
		}
		svc.Damage(ctx, t)
		opts := engines.RestoreOptions{DropPrevious: true, Extra: map[string]string{"renameSuffix": "-snap"}}
		if _, err := newTestEngine().Restore(ctx, store.RestoreJob(t, "snap", svc.Source(t), info, opts)); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if diff := compareSnapshots(want, svc.Snapshot(ctx, t)); diff != "" {
			t.Fatalf("restored data differs: %s", diff)
		}
	})
}

// TestRealClusterSuite runs the same suites against a real cluster.
func TestRealClusterSuite(t *testing.T) {
	svc := realService(t)
	svc.big = true
	t.Run("InPlace", func(t *testing.T) {
		enginetest.Run(t, New(), svc, enginetest.Options{Compare: compareSnapshots})
	})
	t.Run("RenameSuffix", func(t *testing.T) {
		enginetest.Run(t, New(), svc, enginetest.Options{Compare: compareSnapshots, Restore: engines.RestoreOptions{DropPrevious: true, Extra: map[string]string{"renameSuffix": "-restored"}}, StagingOpen: 2})
	})
	if repo := os.Getenv("CAPSULE_TEST_ES_REPOSITORY"); repo != "" {
		t.Run("Snapshot", func(t *testing.T) {
			snap := &esService{url: svc.url, user: svc.user, pass: svc.pass, caFile: svc.caFile, prefixes: map[string]string{}, noTemplates: true,
				extra: map[string]any{"mode": "snapshot", "repository": repo}}
			enginetest.Run(t, New(), snap, enginetest.Options{Compare: compareSnapshots})
		})
	} else {
		t.Log("CAPSULE_TEST_ES_REPOSITORY is not set: snapshot mode not run against the real cluster")
	}
}

func backupAndDamage(t *testing.T, svc *esService) (context.Context, *enginetest.Store, engines.BackupInfo, any) {
	ctx := context.Background()
	svc.Seed(ctx, t)
	want := svc.Snapshot(ctx, t)
	store, info := enginetest.Backup(ctx, t, newTestEngine(), svc.Source(t))
	svc.Damage(ctx, t)
	return ctx, store, info, want
}

// TestBulk429sAreRetried: items refused with 429, and a whole _bulk
// refused with 429, are sent again after a pause; the restore succeeds.
func TestBulk429sAreRetried(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	ctx, store, info, want := backupAndDamage(t, svc)
	std.mu.Lock()
	std.item429, std.request429 = 450, 2
	before := std.calls["bulk"]
	std.mu.Unlock()
	if _, err := newTestEngine().Restore(ctx, store.RestoreJob(t, "r429", svc.Source(t), info, engines.RestoreOptions{})); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if diff := compareSnapshots(want, svc.Snapshot(ctx, t)); diff != "" {
		t.Fatalf("restored data differs: %s", diff)
	}
	std.mu.Lock()
	defer std.mu.Unlock()
	if std.item429 != 0 || std.request429 != 0 {
		t.Fatalf("injected 429s left unused: items %d, requests %d", std.item429, std.request429)
	}
	// 650 documents in batches of 700 need 4 requests (a, b, c, ds) plus
	// 2 for the refused requests plus at least one per index retried.
	if got := std.calls["bulk"] - before; got < 7 {
		t.Fatalf("%d bulk requests: the refused ones were not retried", got)
	}
}

// TestBulkItemErrorFailsNamingTheItem: a document refused with anything but
// 429 fails the restore with the document and index named; the staged
// copies go and the live indices stay as they were.
func TestBulkItemErrorFailsNamingTheItem(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	ctx, store, info, _ := backupAndDamage(t, svc)
	before := svc.Snapshot(ctx, t)
	std.mu.Lock()
	std.itemErrors["b/ü/42"] = "mapper_parsing_exception"
	std.mu.Unlock()
	opts := engines.RestoreOptions{Extra: map[string]string{"renameSuffix": "-new"}}
	_, err := newTestEngine().Restore(ctx, store.RestoreJob(t, "item", svc.Source(t), info, opts))
	var be *BulkItemError
	if !errors.As(err, &be) {
		t.Fatalf("Restore err = %v, want a *BulkItemError", err)
	}
	p := svc.prefix(t)
	if be.ID != "b/ü/42" || be.Index != p+"-b-new-a1" || be.Type != "mapper_parsing_exception" || !strings.Contains(err.Error(), "b/ü/42") {
		t.Fatalf("error %q (%+v) does not name the document and index", err, be)
	}
	if diff := compareSnapshots(before, svc.Snapshot(ctx, t)); diff != "" {
		t.Fatalf("a failed restore changed the target: %s", diff)
	}
	std.mu.Lock()
	defer std.mu.Unlock()
	for n := range std.indices {
		if strings.Contains(n, "-new") {
			t.Errorf("staged index %s left behind", n)
		}
	}
}

// TestPointInTimeExpiry: when the point in time expires midway, the backup
// fails naming the index (resuming in a new one would mix two views).
func TestPointInTimeExpiry(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	ctx := context.Background()
	svc.Seed(ctx, t)
	std.mu.Lock()
	std.expirePITPages = 1
	std.mu.Unlock()
	_, err := newTestEngine().Backup(ctx, &engines.BackupJob{ID: "bk", Source: svc.Source(t), Artifacts: enginetest.NewStore(), Log: enginetest.TestLog(t)})
	if !errors.Is(err, ErrContextExpired) || !strings.Contains(err.Error(), svc.prefix(t)+"-a") {
		t.Fatalf("Backup err = %v, want ErrContextExpired naming index %s-a", err, svc.prefix(t))
	}
	std.mu.Lock()
	defer std.mu.Unlock()
	if len(std.pits) != 0 {
		t.Errorf("%d points in time left open", len(std.pits))
	}
}

// TestCorruptArtifactCreatesNothing: a corrupt artifact is refused before
// any request that changes the cluster, in place or staged.
func TestCorruptArtifactCreatesNothing(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	ctx, store, info, _ := backupAndDamage(t, svc)
	writes := []string{"index-put", "index-delete", "settings-put", "bulk", "aliases", "itemplate-put", "ctemplate-put", "pipeline-put", "datastream-delete"}
	count := func() map[string]int {
		std.mu.Lock()
		defer std.mu.Unlock()
		m := map[string]int{}
		for _, w := range writes {
			m[w] = std.calls[w]
		}
		return m
	}
	for _, extra := range []map[string]string{nil, {"renameSuffix": "-x"}} {
		for _, name := range store.Names() {
			corrupt := store.Clone()
			corrupt.Flip(t, name)
			before := count()
			_, err := newTestEngine().Restore(ctx, corrupt.RestoreJob(t, "c", svc.Source(t), info, engines.RestoreOptions{Extra: extra}))
			var ce *engines.ChecksumError
			if !errors.As(err, &ce) || ce.Artifact != name {
				t.Fatalf("options %v, %s corrupt: err = %v", extra, name, err)
			}
			if after := count(); !reflect.DeepEqual(before, after) {
				t.Errorf("options %v, %s corrupt: write requests made: before %v, after %v", extra, name, before, after)
			}
		}
	}
}

// TestRenameSuffixKeepsPrevious: without DropPrevious the live index keeps
// its name and data; the backed-up aliases move to the copy, named with the
// suffix and the restore's attempt (-v2-a1).
func TestRenameSuffixKeepsPrevious(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	ctx, store, info, _ := backupAndDamage(t, svc)
	p := svc.prefix(t)
	opts := engines.RestoreOptions{Extra: map[string]string{"renameSuffix": "-v2"}}
	rinfo, err := newTestEngine().Restore(ctx, store.RestoreJob(t, "keep", svc.Source(t), info, opts))
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if rinfo.Previous != p+"-a,"+p+"-b" {
		t.Errorf("Previous = %q, want the live indices %s-a,%s-b", rinfo.Previous, p, p)
	}
	std.mu.Lock()
	if got := std.aliasHolders(p + "-alias"); len(got) != 1 || got[0] != p+"-a-v2-a1" {
		t.Errorf("alias %s-alias on %v, want the copy", p, got)
	}
	if got := std.aliasHolders(p + "-filtered"); len(got) != 1 || got[0] != p+"-a-v2-a1" {
		t.Errorf("alias %s-filtered on %v, want the copy", p, got)
	}
	if got := std.aliasHolders(p + "-c"); len(got) != 1 || got[0] != p+"-c-v2-a1" {
		t.Errorf("the deleted index's name %s-c is an alias of %v, want the copy", p, got)
	}
	if _, live := std.indices[p+"-a"]; !live || len(std.indices[p+"-a"].docs) != 300 {
		t.Errorf("the live index was not kept")
	}
	if copied, ok := std.indices[p+"-a-v2-a1"]; !ok || len(copied.visible()) != 300 {
		t.Errorf("the copy %s-a-v2-a1 is missing or does not hold 300 documents", p)
	}
	std.mu.Unlock()
	// A second restore with the same suffix is refused before anything.
	_, err = newTestEngine().Restore(ctx, store.RestoreJob(t, "again", svc.Source(t), info, opts))
	if err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("a restore onto an existing copy: err = %v", err)
	}
}

// TestRestoreDoesNotRerunPipelines: the stand-in counts ingest pipeline
// runs; a restore loads documents as they were stored.
func TestRestoreDoesNotRerunPipelines(t *testing.T) {
	svc, std := newStandInService(t, "elasticsearch", "8.11.0")
	ctx, store, info, _ := backupAndDamage(t, svc)
	std.mu.Lock()
	runs := std.pipelineRun
	std.mu.Unlock()
	if _, err := newTestEngine().Restore(ctx, store.RestoreJob(t, "pl", svc.Source(t), info, engines.RestoreOptions{})); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	std.mu.Lock()
	defer std.mu.Unlock()
	if std.pipelineRun != runs {
		t.Errorf("the restore ran ingest pipelines %d times", std.pipelineRun-runs)
	}
	if got := std.indices[svc.prefix(t)+"-b"].settings["index.default_pipeline"]; got != svc.prefix(t)+"-stamp" {
		t.Errorf("default_pipeline after restore = %v", got)
	}
}

// TestSecretsNeverLeak: the password reaches the server, and never a
// process's argv, a log line, the BackupInfo, an artifact or an error.
func TestSecretsNeverLeak(t *testing.T) {
	svc, _ := newStandInService(t, "elasticsearch", "8.11.0")
	ctx := context.Background()
	svc.Seed(ctx, t)
	pw := svc.pass
	var logs bytes.Buffer
	logger := newBufferLogger(&logs)
	stop := enginetest.WatchArgv(t, pw, 10*time.Millisecond)
	store := enginetest.NewStore()
	info, err := newTestEngine().Backup(ctx, &engines.BackupJob{ID: "bk", Source: svc.Source(t), Artifacts: store, Log: logger})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	raw, _ := json.Marshal(info)
	if bytes.Contains(raw, []byte(pw)) {
		t.Errorf("BackupInfo holds the password: %s", raw)
	}
	for _, n := range store.Names() {
		if bytes.Contains(store.Bytes(n), []byte(pw)) {
			t.Errorf("artifact %s holds the password", n)
		}
	}
	svc.Damage(ctx, t)
	job := store.RestoreJob(t, "sec", svc.Source(t), *info, engines.RestoreOptions{})
	job.Log = logger
	if _, err := newTestEngine().Restore(ctx, job); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	stop()
	if logs.Len() == 0 {
		t.Fatalf("no log captured")
	}
	if bytes.Contains(logs.Bytes(), []byte(pw)) {
		t.Errorf("a log line holds the password")
	}
	// A wrong password fails without echoing either password.
	bad := svc.Source(t)
	bad.Password = func(context.Context) (string, error) { return "wrong-" + pw, nil }
	svc.std.mu.Lock()
	svc.std.refusedExpected = true
	svc.std.mu.Unlock()
	_, err = newTestEngine().Backup(ctx, &engines.BackupJob{ID: "bk2", Source: bad, Artifacts: enginetest.NewStore(), Log: logger})
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), pw) {
		t.Errorf("Backup with a wrong password: err = %v", err)
	}
}

// TestTLSWithCAFile: caFile makes the cluster's certificate trusted;
// without it the connection is refused.
func TestTLSWithCAFile(t *testing.T) {
	std := newStandIn(t, "elasticsearch", "8.11.0", true)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	must(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: std.srv.Certificate().Raw}), 0o600))
	svc := &esService{url: std.srv.URL, caFile: caFile, std: std, prefixes: map[string]string{}}
	ctx := context.Background()
	svc.Seed(ctx, t)
	if _, info := enginetest.Backup(ctx, t, newTestEngine(), svc.Source(t)); info.Format != FormatLogical {
		t.Fatalf("format %q", info.Format)
	}
	noCA := svc.Source(t)
	delete(noCA.Config, "caFile")
	_, err := newTestEngine().Backup(ctx, &engines.BackupJob{ID: "x", Source: noCA, Artifacts: enginetest.NewStore(), Log: enginetest.TestLog(t)})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Backup without caFile: err = %v, want a certificate error", err)
	}
}

// TestStandInIsStrict: the stand-in refuses, and reports, what the real
// API would refuse.
func TestStandInIsStrict(t *testing.T) {
	rec := &recorder{}
	std := newStandInReporting(t, rec, "elasticsearch", "8.11.0", false)
	c, err := newClient(context.Background(), engines.Source{}, &Config{URL: std.srv.URL})
	must(t, err)
	ctx := context.Background()
	cases := []struct {
		name, method, path string
		q                  url.Values
		body               any
	}{
		{"wrong method", "GET", "/_bulk", nil, nil},
		{"missing body", "POST", "/_bulk", nil, nil},
		{"unknown parameter", "GET", "/x", url.Values{"pretty_please": {"1"}}, nil},
		{"missing keep_alive", "POST", "/x/_pit", nil, nil},
		{"unknown endpoint", "GET", "/_nodes/stats", nil, nil},
		{"private setting", "PUT", "/x", nil, map[string]any{"settings": map[string]any{"index.uuid": "abc"}}},
		{"unknown body field", "PUT", "/y", nil, map[string]any{"settings": map[string]any{}, "mapping": map[string]any{}}},
		{"bulk without newline", "POST", "/_bulk", nil, ndjson(`{"index":{"_index":"x","_id":"1"}}` + "\n" + `{}`)},
		{"search not on _shard_doc", "POST", "/_search", nil, map[string]any{"size": 1, "pit": map[string]string{"id": "x"}, "sort": []string{"_doc"}}},
	}
	for _, tc := range cases {
		n := rec.count()
		err := c.request(ctx, tc.method, tc.path, tc.q, tc.body, nil)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
		if rec.count() != n+1 {
			t.Errorf("%s: refused without failing the test", tc.name)
		}
	}
	// Version gates: 7.8 has no point in time.
	old := newStandInReporting(t, rec, "elasticsearch", "7.8.1", false)
	oc, err := newClient(context.Background(), engines.Source{}, &Config{URL: old.srv.URL})
	must(t, err)
	n := rec.count()
	if err := oc.request(ctx, "POST", "/x/_pit", url.Values{"keep_alive": {"1m"}}, nil, nil); err == nil || rec.count() != n+1 {
		t.Errorf("7.8 opened a point in time")
	}
}

type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func TestValidateNamesTheSetting(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	must(t, os.WriteFile(caFile, []byte("x"), 0o600))
	cases := []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"indices": []any{"a"}}, "url"},
		{map[string]any{"url": "ftp://h", "indices": []any{"a"}}, "url"},
		{map[string]any{"url": "https://u:secret@h:9200", "indices": []any{"a"}}, "url"},
		{map[string]any{"url": "https://h:9200"}, "indices"},
		{map[string]any{"url": "https://h:9200", "indices": []any{"a,b"}}, "indices"},
		{map[string]any{"url": "http://h:9200", "indices": []any{"a"}, "caFile": caFile}, "caFile"},
		{map[string]any{"url": "https://h:9200", "indices": []any{"a"}, "caFile": "/nonexistent"}, "caFile"},
		{map[string]any{"url": "https://h:9200", "indices": []any{"a"}, "mode": "snapshot"}, "repository"},
		{map[string]any{"url": "https://h:9200", "indices": []any{"a"}, "mode": "fast"}, "mode"},
		{map[string]any{"url": "https://h:9200", "indices": []any{"a"}, "keepAlive": "5 minutes"}, "keepAlive"},
		{map[string]any{"url": "https://h:9200", "indices": []any{"a"}, "batchSize": 100000}, "batchSize"},
		{map[string]any{"url": "https://h:9200", "indices": []any{"a"}, "bogus": 1}, "bogus"},
	}
	for _, tc := range cases {
		err := New().Validate(engines.Source{Name: "s", Engine: Name, Config: tc.cfg})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Validate error echoes the password: %v", err)
		}
	}
	ok := map[string]any{"url": "https://h:9200", "user": "elastic", "passwordEnv": "ES_PW", "indices": []any{"logs-*", "users"}, "caFile": caFile, "mode": "snapshot", "repository": "s3-backups"}
	if err := New().Validate(engines.Source{Name: "s", Engine: Name, Config: ok}); err != nil {
		t.Errorf("Validate(good) = %v", err)
	}
	if _, err := parseRestoreOptions(map[string]string{"renameSuffix": "-Bad"}); err == nil {
		t.Errorf("renameSuffix with an upper-case letter accepted")
	}
	if _, err := parseRestoreOptions(map[string]string{"rename": "-x"}); err == nil {
		t.Errorf("unknown restore option accepted")
	}
}

func TestSettingsFilters(t *testing.T) {
	in := map[string]any{
		"index.uuid": "u", "index.creation_date": "1", "index.version.created": "8", "index.provided_name": "x",
		"index.number_of_shards": "3", "index.number_of_replicas": "2", "index.analysis.analyzer.a.type": "custom",
		"index.default_pipeline": "p", "index.blocks.write": "true",
	}
	r := restorable(in)
	for _, k := range []string{"index.uuid", "index.creation_date", "index.version.created", "index.provided_name"} {
		if _, ok := r[k]; ok {
			t.Errorf("restorable kept %s", k)
		}
	}
	c := creationSettings(r)
	if c["index.number_of_replicas"] != "0" || c["index.refresh_interval"] != "-1" || c["index.number_of_shards"] != "3" {
		t.Errorf("creation settings %v", c)
	}
	if _, ok := c["index.default_pipeline"]; ok {
		t.Errorf("creation settings keep the default pipeline")
	}
	if _, ok := c["index.blocks.write"]; ok {
		t.Errorf("creation settings keep the write block")
	}
	f := finalSettings(r)
	if f["index.number_of_replicas"] != "2" || f["index.default_pipeline"] != "p" || f["index.blocks.write"] != "true" {
		t.Errorf("final settings %v", f)
	}
	if v, ok := f["index.refresh_interval"]; !ok || v != nil {
		t.Errorf("final settings do not reset refresh_interval: %v", f)
	}
	for pat, names := range map[string][2]string{"logs-*": {"logs-app", "metrics"}, "*-x-*": {"a-x-b", "a-y-b"}, "exact": {"exact", "exactly"}} {
		if !match(pat, names[0]) || match(pat, names[1]) {
			t.Errorf("match(%q) wrong for %v", pat, names)
		}
	}
}
