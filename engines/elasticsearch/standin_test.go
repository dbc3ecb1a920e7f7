package elasticsearch

// The stand-in: no Elasticsearch can run on this machine, so these tests
// talk to an HTTP test server that implements exactly the subset of the
// REST API the engine and the tests call, with the answers the documented
// API gives. It is strict: a request the real API would refuse (unknown
// path, wrong method, unknown or missing query parameter, missing body,
// private settings, ...) is refused with 4xx and fails the test. The same
// tests run against a real cluster when CAPSULE_TEST_ES_URL is set.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type sDoc struct {
	id, routing string
	source      json.RawMessage
	seq         int64
}

type sIndex struct {
	name       string
	settings   map[string]any
	mappings   json.RawMessage
	aliases    map[string]json.RawMessage
	docs       map[string]*sDoc
	order      []string
	dataStream string
	refreshed  int64 // docs with seq <= refreshed are searchable when refresh is off
}

func (ix *sIndex) autoRefresh() bool { return ix.settings["index.refresh_interval"] != "-1" }

// visible lists the searchable documents in a stable order (the stand-in's
// _shard_doc).
func (ix *sIndex) visible() []*sDoc {
	out := make([]*sDoc, 0, len(ix.order))
	for _, id := range ix.order {
		d := ix.docs[id]
		if ix.autoRefresh() || d.seq <= ix.refreshed {
			out = append(out, d)
		}
	}
	return out
}

type sCursor struct {
	docs      []*sDoc
	keepAlive time.Duration
	expires   time.Time
	pos       int // scroll position
	size      int // scroll page size
	pages     int
}

type sSnapshot struct {
	uuid    string
	indices map[string]*sIndex
	streams map[string]string // data stream → backing index
	polls   int
}

// errorf is where the stand-in reports requests the real API would refuse:
// the test (t.Errorf), or a recorder in the test of the stand-in itself.
type errorf interface {
	Errorf(format string, args ...any)
}

type standIn struct {
	t            errorf
	srv          *httptest.Server
	version      string
	distribution string
	user, pass   string

	mu          sync.Mutex
	indices     map[string]*sIndex
	streams     map[string]string // data stream → backing index
	itemplates  map[string]json.RawMessage
	ctemplates  map[string]json.RawMessage
	pipelines   map[string]json.RawMessage
	pits        map[string]*sCursor
	scrolls     map[string]*sCursor
	repos       map[string]string
	snaps       map[string]map[string]*sSnapshot
	seq         int64
	calls       map[string]int
	pipelineRun int

	// Fault injection.
	item429         int               // the next n bulk items are refused with 429
	request429      int               // the next n bulk requests are refused with 429
	itemErrors      map[string]string // document id → error type
	expirePITPages  int               // a point in time expires after this many pages (0: never)
	snapshotPolls   int               // a new snapshot answers IN_PROGRESS this many times
	refusedExpected bool              // a test that provokes refusals on purpose
}

// newStandIn starts a stand-in speaking as the given distribution
// ("elasticsearch" or "opensearch") and version.
func newStandIn(t testing.TB, distribution, version string, tls bool) *standIn {
	return newStandInReporting(t, t, distribution, version, tls)
}

func newStandInReporting(t testing.TB, report errorf, distribution, version string, tls bool) *standIn {
	s := &standIn{
		t: report, version: version, distribution: distribution,
		indices: map[string]*sIndex{}, streams: map[string]string{},
		itemplates: map[string]json.RawMessage{}, ctemplates: map[string]json.RawMessage{},
		pipelines: map[string]json.RawMessage{}, pits: map[string]*sCursor{}, scrolls: map[string]*sCursor{},
		repos: map[string]string{}, snaps: map[string]map[string]*sSnapshot{}, calls: map[string]int{},
		itemErrors: map[string]string{},
	}
	if tls {
		s.srv = httptest.NewTLSServer(s)
	} else {
		s.srv = httptest.NewServer(s)
	}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *standIn) major() int {
	m, _ := strconv.Atoi(strings.SplitN(s.version, ".", 2)[0])
	return m
}

func (s *standIn) minor() int {
	parts := strings.SplitN(s.version, ".", 3)
	m, _ := strconv.Atoi(parts[1])
	return m
}

func (s *standIn) atLeast(major, minor int) bool {
	return s.major() > major || (s.major() == major && s.minor() >= minor)
}

func (s *standIn) os() bool { return s.distribution == "opensearch" }

func (s *standIn) callCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[name]
}

type route struct {
	name     string
	method   string
	pattern  string
	params   []string
	required []string
	body     int // 0 none, 1 required, 2 optional
	when     func(s *standIn) bool
	handle   func(s *standIn, w http.ResponseWriter, v map[string]string, q map[string]string, body []byte)
}

const (
	noBody = iota
	needBody
	optBody
)

var routes []route

func init() {
	es := func(maj, min int) func(*standIn) bool {
		return func(s *standIn) bool { return s.os() || s.atLeast(maj, min) }
	}
	routes = []route{
		{name: "info", method: "GET", pattern: "", handle: (*standIn).info},
		{name: "resolve", method: "GET", pattern: "_resolve/index/{expr}", params: []string{"expand_wildcards"}, when: es(7, 9), handle: (*standIn).resolve},
		{name: "cat", method: "GET", pattern: "_cat/indices/{expr}", params: []string{"format", "h", "expand_wildcards"}, required: []string{"format"}, handle: (*standIn).catIndices},
		{name: "pit-close", method: "DELETE", pattern: "_pit", body: needBody, when: func(s *standIn) bool { return !s.os() && s.atLeast(7, 10) }, handle: (*standIn).closePIT},
		{name: "search-pit", method: "POST", pattern: "_search", body: needBody, when: func(s *standIn) bool { return !s.os() && s.atLeast(7, 10) }, handle: (*standIn).searchPIT},
		{name: "scroll", method: "POST", pattern: "_search/scroll", body: needBody, handle: (*standIn).scrollNext},
		{name: "scroll-clear", method: "DELETE", pattern: "_search/scroll", body: needBody, handle: (*standIn).scrollClear},
		{name: "bulk", method: "POST", pattern: "_bulk", body: needBody, params: []string{"refresh"}, handle: (*standIn).bulk},
		{name: "alias-get", method: "GET", pattern: "_alias/{name}", handle: (*standIn).getAlias},
		{name: "aliases", method: "POST", pattern: "_aliases", body: needBody, handle: (*standIn).aliases},
		{name: "itemplates", method: "GET", pattern: "_index_template", when: es(7, 8), handle: (*standIn).listITemplates},
		{name: "itemplate-put", method: "PUT", pattern: "_index_template/{name}", body: needBody, when: es(7, 8), handle: (*standIn).putITemplate},
		{name: "itemplate-delete", method: "DELETE", pattern: "_index_template/{name}", when: es(7, 8), handle: (*standIn).deleteITemplate},
		{name: "ctemplates", method: "GET", pattern: "_component_template", when: es(7, 8), handle: (*standIn).listCTemplates},
		{name: "ctemplate-put", method: "PUT", pattern: "_component_template/{name}", body: needBody, when: es(7, 8), handle: (*standIn).putCTemplate},
		{name: "ctemplate-delete", method: "DELETE", pattern: "_component_template/{name}", when: es(7, 8), handle: (*standIn).deleteCTemplate},
		{name: "pipelines", method: "GET", pattern: "_ingest/pipeline", handle: (*standIn).listPipelines},
		{name: "pipeline-put", method: "PUT", pattern: "_ingest/pipeline/{name}", body: needBody, handle: (*standIn).putPipeline},
		{name: "pipeline-delete", method: "DELETE", pattern: "_ingest/pipeline/{name}", handle: (*standIn).deletePipeline},
		{name: "datastream-delete", method: "DELETE", pattern: "_data_stream/{name}", when: es(7, 9), handle: (*standIn).deleteDataStream},
		{name: "repo-get", method: "GET", pattern: "_snapshot/{repo}", handle: (*standIn).getRepo},
		{name: "snapshot-put", method: "PUT", pattern: "_snapshot/{repo}/{snap}", body: needBody, params: []string{"wait_for_completion"}, handle: (*standIn).putSnapshot},
		{name: "snapshot-get", method: "GET", pattern: "_snapshot/{repo}/{snap}", handle: (*standIn).getSnapshot},
		{name: "snapshot-delete", method: "DELETE", pattern: "_snapshot/{repo}/{snap}", handle: (*standIn).deleteSnapshot},
		{name: "snapshot-restore", method: "POST", pattern: "_snapshot/{repo}/{snap}/_restore", body: needBody, params: []string{"wait_for_completion"}, handle: (*standIn).restoreSnapshot},
		{name: "index-get", method: "GET", pattern: "{index}", params: []string{"flat_settings"}, handle: (*standIn).getIndex},
		{name: "index-head", method: "HEAD", pattern: "{index}", handle: (*standIn).headIndex},
		{name: "index-put", method: "PUT", pattern: "{index}", body: needBody, handle: (*standIn).putIndex},
		{name: "index-delete", method: "DELETE", pattern: "{index}", params: []string{"ignore_unavailable"}, handle: (*standIn).deleteIndex},
		{name: "settings-put", method: "PUT", pattern: "{index}/_settings", body: needBody, handle: (*standIn).putSettings},
		{name: "refresh", method: "POST", pattern: "{index}/_refresh", handle: (*standIn).refresh},
		{name: "count", method: "GET", pattern: "{index}/_count", handle: (*standIn).count},
		{name: "pit-open", method: "POST", pattern: "{index}/_pit", params: []string{"keep_alive"}, required: []string{"keep_alive"}, when: func(s *standIn) bool { return !s.os() && s.atLeast(7, 10) }, handle: (*standIn).openPIT},
		{name: "search", method: "POST", pattern: "{index}/_search", body: needBody, params: []string{"scroll"}, required: []string{"scroll"}, handle: (*standIn).searchScroll},
	}
}

func matchRoute(pattern string, segs []string) (map[string]string, bool) {
	var ps []string
	if pattern != "" {
		ps = strings.Split(pattern, "/")
	}
	if len(ps) != len(segs) {
		return nil, false
	}
	v := map[string]string{}
	for i, p := range ps {
		if strings.HasPrefix(p, "{") {
			if segs[i] == "" || (strings.HasPrefix(segs[i], "_") && p == "{index}") {
				return nil, false
			}
			v[strings.Trim(p, "{}")] = segs[i]
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return v, true
}

// refuse answers with an error and, unless the test expects refusals,
// fails the test: the engine sent something the real API would refuse.
func (s *standIn) refuse(w http.ResponseWriter, status int, typ, reason string) {
	if !s.refusedExpected {
		s.t.Errorf("stand-in refused a request: HTTP %d %s: %s", status, typ, reason)
	}
	writeErr(w, status, typ, reason)
}

func writeErr(w http.ResponseWriter, status int, typ, reason string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"type": typ, "reason": reason, "root_cause": []any{map[string]string{"type": typ, "reason": reason}}}, "status": status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // sources come back as indexed
	_ = enc.Encode(v)
}

func (s *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.user != "" || s.pass != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u != s.user || p != s.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="security"`)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.refuse(w, http.StatusUnauthorized, "security_exception", "missing or wrong authentication credentials")
			return
		}
	}
	path := strings.Trim(r.URL.Path, "/")
	var segs []string
	if path != "" {
		segs = strings.Split(path, "/")
	}
	body, err := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.refuse(w, 400, "parse_exception", err.Error())
		return
	}
	methodOK := false
	for _, rt := range routes {
		v, ok := matchRoute(rt.pattern, segs)
		if !ok || (rt.when != nil && !rt.when(s)) {
			continue
		}
		if rt.method != r.Method {
			methodOK = true
			continue
		}
		q := map[string]string{}
		for k, vals := range r.URL.Query() {
			allowed := false
			for _, a := range rt.params {
				allowed = allowed || a == k
			}
			if !allowed {
				s.refuse(w, 400, "illegal_argument_exception", fmt.Sprintf("request [%s] contains unrecognized parameter: [%s]", r.URL.Path, k))
				return
			}
			q[k] = vals[0]
		}
		for _, req := range rt.required {
			if _, ok := q[req]; !ok {
				s.refuse(w, 400, "action_request_validation_exception", fmt.Sprintf("[%s] parameter is required", req))
				return
			}
		}
		switch {
		case rt.body == needBody && len(bytes.TrimSpace(body)) == 0:
			s.refuse(w, 400, "parse_exception", "request body is required")
			return
		case rt.body == noBody && len(body) > 0:
			s.refuse(w, 400, "illegal_argument_exception", "request ["+r.URL.Path+"] does not support having a body")
			return
		}
		if rt.name == "bulk" {
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-ndjson") && !strings.HasPrefix(ct, "application/json") {
				s.refuse(w, 406, "content_type_exception", "Content-Type header ["+ct+"] is not supported")
				return
			}
		} else if len(body) > 0 {
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				s.refuse(w, 406, "content_type_exception", "Content-Type header ["+ct+"] is not supported")
				return
			}
			if !json.Valid(body) {
				s.refuse(w, 400, "parse_exception", "request body is not JSON")
				return
			}
		}
		s.calls[rt.name]++
		rt.handle(s, w, v, q, body)
		return
	}
	if methodOK {
		s.refuse(w, 405, "method_not_allowed", fmt.Sprintf("Incorrect HTTP method for uri [%s] and method [%s]", r.URL.Path, r.Method))
		return
	}
	s.refuse(w, 400, "no_handler", fmt.Sprintf("no handler found for uri [%s] and method [%s]", r.URL.Path, r.Method))
}

// strictJSON decodes a body refusing fields the target does not have.
func (s *standIn) strictJSON(w http.ResponseWriter, body []byte, into any) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		s.refuse(w, 400, "x_content_parse_exception", err.Error())
		return false
	}
	return true
}

func randID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *standIn) info(w http.ResponseWriter, _, _ map[string]string, _ []byte) {
	v := map[string]any{"number": s.version, "build_flavor": "default"}
	tagline := "You Know, for Search"
	if s.os() {
		v = map[string]any{"number": s.version, "distribution": "opensearch"}
		tagline = "The OpenSearch Project: https://opensearch.org/"
	}
	writeJSON(w, 200, map[string]any{"name": "standin", "cluster_name": "standin-cluster", "version": v, "tagline": tagline})
}

// ---- names, resolution ----

func validIndexName(n string) bool {
	if n == "" || n != strings.ToLower(n) || strings.ContainsAny(n, `\/*?"<>| ,#:`) || strings.HasPrefix(n, "_") || strings.HasPrefix(n, "-") || strings.HasPrefix(n, "+") {
		return false
	}
	return n != "." && n != ".."
}

func (s *standIn) aliasHolders(alias string) []string {
	var out []string
	for n, ix := range s.indices {
		if _, ok := ix.aliases[alias]; ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// concrete resolves an index, alias or data stream name to indices.
func (s *standIn) concrete(name string) ([]*sIndex, bool) {
	if ix, ok := s.indices[name]; ok {
		return []*sIndex{ix}, true
	}
	if b, ok := s.streams[name]; ok {
		return []*sIndex{s.indices[b]}, true
	}
	if hs := s.aliasHolders(name); len(hs) > 0 {
		var out []*sIndex
		for _, h := range hs {
			out = append(out, s.indices[h])
		}
		return out, true
	}
	return nil, false
}

func hiddenName(n string) bool { return strings.HasPrefix(n, ".") }

func (s *standIn) resolve(w http.ResponseWriter, v, q map[string]string, _ []byte) {
	if ew, ok := q["expand_wildcards"]; ok && ew != "open" {
		s.refuse(w, 400, "illegal_argument_exception", "stand-in only implements expand_wildcards=open")
		return
	}
	idx, als, dss := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, part := range strings.Split(v["expr"], ",") {
		found := false
		for n := range s.indices {
			if (strings.Contains(part, "*") && !hiddenName(n) && match(part, n)) || part == n {
				idx[n], found = true, true
			}
			for a := range s.indices[n].aliases {
				if (strings.Contains(part, "*") && match(part, a)) || part == a {
					als[a], found = true, true
				}
			}
		}
		for d := range s.streams {
			if (strings.Contains(part, "*") && match(part, d)) || part == d {
				dss[d], found = true, true
			}
		}
		if !found && !strings.Contains(part, "*") {
			writeErr(w, 404, "index_not_found_exception", "no such index ["+part+"]")
			return
		}
	}
	out := map[string]any{"indices": []any{}, "aliases": []any{}, "data_streams": []any{}}
	var il, al, dl []any
	for _, n := range sortedKeys(idx) {
		ix := s.indices[n]
		e := map[string]any{"name": n, "aliases": sortedKeys(ix.aliases), "attributes": []string{"open"}}
		if ix.dataStream != "" {
			e["data_stream"] = ix.dataStream
			e["attributes"] = []string{"hidden", "open"}
		}
		il = append(il, e)
	}
	for _, a := range sortedKeys(als) {
		al = append(al, map[string]any{"name": a, "indices": s.aliasHolders(a)})
	}
	for _, d := range sortedKeys(dss) {
		dl = append(dl, map[string]any{"name": d, "backing_indices": []string{s.streams[d]}, "timestamp_field": "@timestamp"})
	}
	if il != nil {
		out["indices"] = il
	}
	if al != nil {
		out["aliases"] = al
	}
	if dl != nil {
		out["data_streams"] = dl
	}
	writeJSON(w, 200, out)
}

func (s *standIn) catIndices(w http.ResponseWriter, v, q map[string]string, _ []byte) {
	if q["format"] != "json" || (q["h"] != "" && q["h"] != "index,status") {
		s.refuse(w, 400, "illegal_argument_exception", "stand-in implements only format=json&h=index,status")
		return
	}
	var rows []map[string]string
	seen := map[string]bool{}
	for _, part := range strings.Split(v["expr"], ",") {
		found := false
		for _, n := range sortedKeys(s.indices) {
			hit := n == part || (strings.Contains(part, "*") && !hiddenName(n) && match(part, n))
			for a := range s.indices[n].aliases {
				hit = hit || a == part || (strings.Contains(part, "*") && match(part, a))
			}
			if hit && !seen[n] {
				seen[n] = true
				rows = append(rows, map[string]string{"index": n, "status": "open"})
			}
			found = found || hit
		}
		if !found && !strings.Contains(part, "*") {
			writeErr(w, 404, "index_not_found_exception", "no such index ["+part+"]")
			return
		}
	}
	if rows == nil {
		rows = []map[string]string{}
	}
	writeJSON(w, 200, rows)
}

// ---- indices ----

// normSettings flattens settings, prefixes "index." and turns scalars
// into strings, as the real API stores them.
func normSettings(in map[string]any) map[string]any {
	flat := map[string]any{}
	flatten("", in, flat)
	out := map[string]any{}
	for k, v := range flat {
		if !strings.HasPrefix(k, "index.") && !strings.HasPrefix(k, "archived.") {
			k = "index." + k
		}
		out[k] = stringify(v)
	}
	return out
}

func stringify(v any) any {
	switch t := v.(type) {
	case nil:
		return nil
	case string:
		return t
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = stringify(e)
		}
		return out
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	default:
		return fmt.Sprint(t)
	}
}

var privateSettings = []string{"index.uuid", "index.creation_date", "index.provided_name", "index.version.created", "index.version.upgraded", "index.history.uuid"}

func (s *standIn) getIndex(w http.ResponseWriter, v, q map[string]string, _ []byte) {
	ixs, ok := s.concrete(v["index"])
	if !ok || strings.Contains(v["index"], ",") || strings.Contains(v["index"], "*") {
		writeErr(w, 404, "index_not_found_exception", "no such index ["+v["index"]+"]")
		return
	}
	out := map[string]any{}
	for _, ix := range ixs {
		aliases := ix.aliases
		if aliases == nil {
			aliases = map[string]json.RawMessage{}
		}
		var settings any = ix.settings
		if q["flat_settings"] != "true" {
			settings = nest(ix.settings)
		}
		mappings := ix.mappings
		if len(mappings) == 0 {
			mappings = json.RawMessage(`{}`)
		}
		out[ix.name] = map[string]any{"aliases": aliases, "mappings": mappings, "settings": settings}
	}
	writeJSON(w, 200, out)
}

func nest(flat map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range flat {
		parts := strings.Split(k, ".")
		m := out
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
	}
	return out
}

func (s *standIn) headIndex(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	if _, ok := s.concrete(v["index"]); ok {
		w.WriteHeader(200)
		return
	}
	w.WriteHeader(404)
}

type indexBody struct {
	Settings map[string]any             `json:"settings"`
	Mappings json.RawMessage            `json:"mappings"`
	Aliases  map[string]json.RawMessage `json:"aliases"`
}

var aliasProps = map[string]bool{"filter": true, "routing": true, "index_routing": true, "search_routing": true, "is_write_index": true, "is_hidden": true}

func (s *standIn) checkAliasBody(w http.ResponseWriter, raw json.RawMessage) bool {
	var props map[string]any
	if err := json.Unmarshal(raw, &props); err != nil {
		s.refuse(w, 400, "x_content_parse_exception", "alias: "+err.Error())
		return false
	}
	for k := range props {
		if !aliasProps[k] {
			s.refuse(w, 400, "x_content_parse_exception", "unknown alias field ["+k+"]")
			return false
		}
	}
	return true
}

// template finds the highest-priority index template matching name.
func (s *standIn) template(name string) (string, map[string]any) {
	best, bestPrio := "", -1
	var body map[string]any
	for tn, raw := range s.itemplates {
		var t map[string]any
		_ = json.Unmarshal(raw, &t)
		var pats []string
		for _, p := range t["index_patterns"].([]any) {
			pats = append(pats, p.(string))
		}
		prio := 0
		if p, ok := t["priority"].(float64); ok {
			prio = int(p)
		}
		if matchAny(pats, name) && prio > bestPrio {
			best, bestPrio, body = tn, prio, t
		}
	}
	return best, body
}

// templateParts merges a template's component templates and its own
// template section: settings, mappings, aliases.
func (s *standIn) templateParts(t map[string]any) (map[string]any, json.RawMessage, map[string]json.RawMessage) {
	settings := map[string]any{}
	var mappings json.RawMessage
	aliases := map[string]json.RawMessage{}
	apply := func(tpl any) {
		m, _ := tpl.(map[string]any)
		if st, ok := m["settings"].(map[string]any); ok {
			for k, v := range normSettings(st) {
				settings[k] = v
			}
		}
		if mp, ok := m["mappings"]; ok {
			mappings = mergeMappings(mappings, mp)
		}
		if al, ok := m["aliases"].(map[string]any); ok {
			for k, v := range al {
				raw, _ := json.Marshal(v)
				aliases[k] = raw
			}
		}
	}
	if co, ok := t["composed_of"].([]any); ok {
		for _, c := range co {
			var ct map[string]any
			_ = json.Unmarshal(s.ctemplates[c.(string)], &ct)
			apply(ct["template"])
		}
	}
	apply(t["template"])
	return settings, mappings, aliases
}

// mergeMappings merges the properties of b into a (both JSON objects).
func mergeMappings(a json.RawMessage, b any) json.RawMessage {
	var am map[string]any
	if len(a) > 0 {
		_ = json.Unmarshal(a, &am)
	}
	if am == nil {
		am = map[string]any{}
	}
	bm, _ := b.(map[string]any)
	for k, v := range bm {
		if k == "properties" {
			props, _ := am["properties"].(map[string]any)
			if props == nil {
				props = map[string]any{}
			}
			for pk, pv := range v.(map[string]any) {
				props[pk] = pv
			}
			am["properties"] = props
			continue
		}
		am[k] = v
	}
	raw, _ := json.Marshal(am)
	return raw
}

func (s *standIn) newIndex(name string, b indexBody) *sIndex {
	settings := map[string]any{"index.number_of_shards": "1", "index.number_of_replicas": "1"}
	mappings := json.RawMessage(nil)
	aliases := map[string]json.RawMessage{}
	if _, t := s.template(name); t != nil {
		ts, tm, ta := s.templateParts(t)
		for k, v := range ts {
			settings[k] = v
		}
		mappings, aliases = tm, ta
	}
	for k, v := range normSettings(b.Settings) {
		settings[k] = v
	}
	if len(b.Mappings) > 0 {
		var bm any
		_ = json.Unmarshal(b.Mappings, &bm)
		mappings = mergeMappings(mappings, bm)
	}
	for k, v := range b.Aliases {
		aliases[k] = v
	}
	settings["index.uuid"] = randID()
	settings["index.creation_date"] = strconv.FormatInt(time.Now().UnixMilli(), 10)
	settings["index.provided_name"] = name
	settings["index.version.created"] = "8110099"
	if len(aliases) == 0 {
		aliases = nil
	}
	return &sIndex{name: name, settings: settings, mappings: mappings, aliases: aliases, docs: map[string]*sDoc{}}
}

func (s *standIn) putIndex(w http.ResponseWriter, v, _ map[string]string, body []byte) {
	name := v["index"]
	var b indexBody
	if !s.strictJSON(w, body, &b) {
		return
	}
	if !validIndexName(name) {
		s.refuse(w, 400, "invalid_index_name_exception", "Invalid index name ["+name+"]")
		return
	}
	if _, ok := s.indices[name]; ok {
		s.refuse(w, 400, "resource_already_exists_exception", "index ["+name+"] already exists")
		return
	}
	if len(s.aliasHolders(name)) > 0 || s.streams[name] != "" {
		s.refuse(w, 400, "invalid_index_name_exception", "Invalid index name ["+name+"], already exists as alias or data stream")
		return
	}
	if _, t := s.template(name); t != nil {
		if _, ds := t["data_stream"]; ds {
			s.refuse(w, 400, "illegal_argument_exception", "cannot create index with name ["+name+"], because it matches with template that creates data streams only")
			return
		}
	}
	for k := range normSettings(b.Settings) {
		for _, p := range privateSettings {
			if k == p {
				s.refuse(w, 400, "illegal_argument_exception", "private index setting ["+k+"] can not be set explicitly")
				return
			}
		}
	}
	for a, raw := range b.Aliases {
		if !s.checkAliasBody(w, raw) {
			return
		}
		if _, clash := s.indices[a]; clash {
			s.refuse(w, 400, "invalid_alias_name_exception", "alias ["+a+"] clashes with an index")
			return
		}
	}
	s.indices[name] = s.newIndex(name, b)
	writeJSON(w, 200, map[string]any{"acknowledged": true, "shards_acknowledged": true, "index": name})
}

func (s *standIn) deleteIndex(w http.ResponseWriter, v, q map[string]string, _ []byte) {
	name := v["index"]
	if strings.ContainsAny(name, "*,") {
		s.refuse(w, 400, "illegal_argument_exception", "stand-in: wildcard or list delete")
		return
	}
	ix, ok := s.indices[name]
	if !ok {
		if len(s.aliasHolders(name)) > 0 {
			s.refuse(w, 400, "illegal_argument_exception", "The provided expression ["+name+"] matches an alias, specify the corresponding concrete indices instead.")
			return
		}
		if q["ignore_unavailable"] == "true" {
			writeJSON(w, 200, map[string]any{"acknowledged": true})
			return
		}
		writeErr(w, 404, "index_not_found_exception", "no such index ["+name+"]")
		return
	}
	if ix.dataStream != "" {
		s.refuse(w, 400, "illegal_argument_exception", "index ["+name+"] is the write index for data stream ["+ix.dataStream+"] and cannot be deleted")
		return
	}
	delete(s.indices, name)
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

var staticSettings = []string{"index.number_of_shards", "index.codec", "index.routing_partition_size"}

func (s *standIn) putSettings(w http.ResponseWriter, v, _ map[string]string, body []byte) {
	ixs, ok := s.concrete(v["index"])
	if !ok {
		writeErr(w, 404, "index_not_found_exception", "no such index ["+v["index"]+"]")
		return
	}
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil {
		s.refuse(w, 400, "x_content_parse_exception", err.Error())
		return
	}
	if st, ok := in["settings"].(map[string]any); ok && len(in) == 1 {
		in = st
	}
	flat := map[string]any{}
	flatten("", in, flat)
	for k := range flat {
		nk := k
		if !strings.HasPrefix(k, "index.") {
			nk = "index." + k
		}
		for _, p := range append(append([]string(nil), staticSettings...), privateSettings...) {
			if nk == p || strings.HasPrefix(nk, "index.analysis.") {
				s.refuse(w, 400, "illegal_argument_exception", "Can't update non dynamic settings [["+nk+"]] for open indices")
				return
			}
		}
	}
	for _, ix := range ixs {
		for k, val := range flat {
			if !strings.HasPrefix(k, "index.") {
				k = "index." + k
			}
			if val == nil {
				delete(ix.settings, k)
				if k == "index.number_of_replicas" {
					ix.settings[k] = "1"
				}
				continue
			}
			ix.settings[k] = stringify(val)
		}
	}
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

func (s *standIn) refresh(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	ixs, ok := s.concrete(v["index"])
	if !ok {
		writeErr(w, 404, "index_not_found_exception", "no such index ["+v["index"]+"]")
		return
	}
	for _, ix := range ixs {
		ix.refreshed = s.seq
	}
	writeJSON(w, 200, map[string]any{"_shards": map[string]int{"total": 1, "successful": 1, "failed": 0}})
}

func (s *standIn) count(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	ixs, ok := s.concrete(v["index"])
	if !ok {
		writeErr(w, 404, "index_not_found_exception", "no such index ["+v["index"]+"]")
		return
	}
	n := 0
	for _, ix := range ixs {
		n += len(ix.visible())
	}
	writeJSON(w, 200, map[string]any{"count": n})
}

// ---- search: point in time and scroll ----

func parseKeepAlive(s string) (time.Duration, bool) {
	for _, u := range []struct {
		sfx string
		d   time.Duration
	}{{"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}, {"d", 24 * time.Hour}} {
		if strings.HasSuffix(s, u.sfx) {
			n, err := strconv.Atoi(strings.TrimSuffix(s, u.sfx))
			if err == nil && n > 0 {
				return time.Duration(n) * u.d, true
			}
		}
	}
	return 0, false
}

func (s *standIn) snapshotDocs(name string) ([]*sDoc, bool) {
	ixs, ok := s.concrete(name)
	if !ok {
		return nil, false
	}
	var docs []*sDoc
	for _, ix := range ixs {
		docs = append(docs, ix.visible()...)
	}
	return docs, true
}

func (s *standIn) openPIT(w http.ResponseWriter, v, q map[string]string, _ []byte) {
	ka, ok := parseKeepAlive(q["keep_alive"])
	if !ok {
		s.refuse(w, 400, "illegal_argument_exception", "failed to parse keep_alive ["+q["keep_alive"]+"]")
		return
	}
	docs, ok := s.snapshotDocs(v["index"])
	if !ok {
		writeErr(w, 404, "index_not_found_exception", "no such index ["+v["index"]+"]")
		return
	}
	id := randID()
	s.pits[id] = &sCursor{docs: docs, keepAlive: ka, expires: time.Now().Add(ka)}
	writeJSON(w, 200, map[string]any{"id": id})
}

func (s *standIn) closePIT(w http.ResponseWriter, _, _ map[string]string, body []byte) {
	var b struct {
		ID string `json:"id"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	if _, ok := s.pits[b.ID]; !ok {
		writeJSON(w, 404, map[string]any{"succeeded": true, "num_freed": 0})
		return
	}
	delete(s.pits, b.ID)
	writeJSON(w, 200, map[string]any{"succeeded": true, "num_freed": 1})
}

func hitJSON(index string, pos int, d *sDoc, withSort bool) map[string]any {
	h := map[string]any{"_index": index, "_id": d.id, "_score": nil, "_source": d.source}
	if d.routing != "" {
		h["_routing"] = d.routing
	}
	if withSort {
		h["sort"] = []int{pos}
	}
	return h
}

func (s *standIn) searchPIT(w http.ResponseWriter, _, _ map[string]string, body []byte) {
	var b struct {
		Size int `json:"size"`
		PIT  *struct {
			ID        string `json:"id"`
			KeepAlive string `json:"keep_alive"`
		} `json:"pit"`
		Sort           json.RawMessage `json:"sort"`
		SearchAfter    []int           `json:"search_after"`
		TrackTotalHits *bool           `json:"track_total_hits"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	if b.PIT == nil {
		s.refuse(w, 400, "illegal_argument_exception", "stand-in implements _search only with a point in time")
		return
	}
	var sortSpec any
	_ = json.Unmarshal(b.Sort, &sortSpec)
	okSort := false
	switch t := sortSpec.(type) {
	case []any:
		if len(t) == 1 {
			if m, ok := t[0].(map[string]any); ok && len(m) == 1 && m["_shard_doc"] == "asc" {
				okSort = true
			}
			okSort = okSort || t[0] == "_shard_doc"
		}
	}
	if !okSort || !s.atLeast(7, 12) {
		s.refuse(w, 400, "illegal_argument_exception", "stand-in pages a point in time only sorted on _shard_doc: "+string(b.Sort))
		return
	}
	if b.Size < 1 || b.Size > 10000 {
		s.refuse(w, 400, "illegal_argument_exception", "size must be 1..10000 (index.max_result_window)")
		return
	}
	c, ok := s.pits[b.PIT.ID]
	if !ok || time.Now().After(c.expires) {
		delete(s.pits, b.PIT.ID)
		writeErr(w, 404, "search_context_missing_exception", "No search context found for id ["+b.PIT.ID+"]")
		return
	}
	if b.PIT.KeepAlive != "" {
		ka, ok := parseKeepAlive(b.PIT.KeepAlive)
		if !ok {
			s.refuse(w, 400, "illegal_argument_exception", "failed to parse keep_alive")
			return
		}
		c.keepAlive = ka
	}
	c.expires = time.Now().Add(c.keepAlive)
	c.pages++
	if s.expirePITPages > 0 && c.pages > s.expirePITPages {
		delete(s.pits, b.PIT.ID)
		writeErr(w, 404, "search_context_missing_exception", "No search context found for id ["+b.PIT.ID+"]")
		return
	}
	start := 0
	if len(b.SearchAfter) == 1 {
		start = b.SearchAfter[0] + 1
	} else if b.SearchAfter != nil {
		s.refuse(w, 400, "illegal_argument_exception", "search_after has one value per sort field")
		return
	}
	hits := []any{}
	for i := start; i < len(c.docs) && len(hits) < b.Size; i++ {
		hits = append(hits, hitJSON("standin", i, c.docs[i], true))
	}
	out := map[string]any{"pit_id": b.PIT.ID, "took": 1, "timed_out": false, "hits": map[string]any{"hits": hits}}
	if b.TrackTotalHits == nil || *b.TrackTotalHits {
		out["hits"].(map[string]any)["total"] = map[string]any{"value": len(c.docs), "relation": "eq"}
	}
	writeJSON(w, 200, out)
}

func (s *standIn) scrollPage(c *sCursor, size int) []any {
	hits := []any{}
	for ; c.pos < len(c.docs) && len(hits) < size; c.pos++ {
		hits = append(hits, hitJSON("standin", c.pos, c.docs[c.pos], false))
	}
	return hits
}

func (s *standIn) searchScroll(w http.ResponseWriter, v, q map[string]string, body []byte) {
	var b struct {
		Size int      `json:"size"`
		Sort []string `json:"sort"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	if len(b.Sort) != 1 || b.Sort[0] != "_doc" || b.Size < 1 || b.Size > 10000 {
		s.refuse(w, 400, "illegal_argument_exception", "stand-in scrolls only sorted on _doc with size 1..10000")
		return
	}
	ka, ok := parseKeepAlive(q["scroll"])
	if !ok {
		s.refuse(w, 400, "illegal_argument_exception", "failed to parse scroll")
		return
	}
	docs, ok := s.snapshotDocs(v["index"])
	if !ok {
		writeErr(w, 404, "index_not_found_exception", "no such index ["+v["index"]+"]")
		return
	}
	id := randID()
	c := &sCursor{docs: docs, keepAlive: ka, expires: time.Now().Add(ka), size: b.Size}
	s.scrolls[id] = c
	writeJSON(w, 200, map[string]any{"_scroll_id": id, "hits": map[string]any{"total": map[string]any{"value": len(docs), "relation": "eq"}, "hits": s.scrollPage(c, b.Size)}})
}

func (s *standIn) scrollNext(w http.ResponseWriter, _, _ map[string]string, body []byte) {
	var b struct {
		Scroll   string `json:"scroll"`
		ScrollID string `json:"scroll_id"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	c, ok := s.scrolls[b.ScrollID]
	if !ok || time.Now().After(c.expires) {
		delete(s.scrolls, b.ScrollID)
		writeErr(w, 404, "search_context_missing_exception", "No search context found for id ["+b.ScrollID+"]")
		return
	}
	if ka, ok := parseKeepAlive(b.Scroll); ok {
		c.keepAlive = ka
	} else if b.Scroll != "" {
		s.refuse(w, 400, "illegal_argument_exception", "failed to parse scroll")
		return
	}
	c.expires = time.Now().Add(c.keepAlive)
	writeJSON(w, 200, map[string]any{"_scroll_id": b.ScrollID, "hits": map[string]any{"hits": s.scrollPage(c, c.size)}})
}

func (s *standIn) scrollClear(w http.ResponseWriter, _, _ map[string]string, body []byte) {
	var b struct {
		ScrollID []string `json:"scroll_id"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	n := 0
	for _, id := range b.ScrollID {
		if _, ok := s.scrolls[id]; ok {
			delete(s.scrolls, id)
			n++
		}
	}
	writeJSON(w, 200, map[string]any{"succeeded": true, "num_freed": n})
}

// ---- bulk ----

func (s *standIn) runPipeline(id string, src json.RawMessage) (json.RawMessage, error) {
	raw, ok := s.pipelines[id]
	if !ok {
		return nil, fmt.Errorf("pipeline with id [%s] does not exist", id)
	}
	s.pipelineRun++
	var p struct {
		Processors []map[string]struct {
			Field string `json:"field"`
			Value any    `json:"value"`
		} `json:"processors"`
	}
	_ = json.Unmarshal(raw, &p)
	var doc map[string]any
	if err := json.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	for _, proc := range p.Processors {
		doc[proc["set"].Field] = proc["set"].Value
	}
	return json.Marshal(doc)
}

func (s *standIn) bulk(w http.ResponseWriter, _, _ map[string]string, body []byte) {
	if !bytes.HasSuffix(body, []byte("\n")) {
		s.refuse(w, 400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]")
		return
	}
	if s.request429 > 0 {
		s.request429--
		writeErr(w, 429, "es_rejected_execution_exception", "rejected execution (stand-in: injected)")
		return
	}
	lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
	if len(lines)%2 != 0 {
		s.refuse(w, 400, "illegal_argument_exception", "stand-in: action line without a source line")
		return
	}
	var items []any
	anyErr := false
	for i := 0; i < len(lines); i += 2 {
		var action map[string]map[string]string
		if err := json.Unmarshal(lines[i], &action); err != nil || len(action) != 1 {
			s.refuse(w, 400, "illegal_argument_exception", "Malformed action/metadata line ["+strconv.Itoa(i+1)+"]")
			return
		}
		var op string
		var meta map[string]string
		for k, m := range action {
			op, meta = k, m
		}
		if op != "index" && op != "create" {
			s.refuse(w, 400, "illegal_argument_exception", "stand-in implements bulk index and create only, not "+op)
			return
		}
		for k := range meta {
			if k != "_index" && k != "_id" && k != "routing" && k != "pipeline" {
				s.refuse(w, 400, "illegal_argument_exception", "Action/metadata line ["+strconv.Itoa(i+1)+"] contains an unknown parameter ["+k+"]")
				return
			}
		}
		if meta["_index"] == "" || meta["_id"] == "" {
			s.refuse(w, 400, "action_request_validation_exception", "stand-in: bulk items need _index and _id")
			return
		}
		src := lines[i+1]
		if !json.Valid(src) {
			s.refuse(w, 400, "mapper_parsing_exception", "failed to parse document "+meta["_id"])
			return
		}
		res := map[string]any{"_index": meta["_index"], "_id": meta["_id"]}
		fail := func(status int, typ, reason string) {
			res["status"] = status
			res["error"] = map[string]any{"type": typ, "reason": reason}
			anyErr = true
		}
		switch {
		case s.item429 > 0:
			s.item429--
			fail(429, "es_rejected_execution_exception", "rejected execution of coordinating operation (stand-in: injected)")
		case s.itemErrors[meta["_id"]] != "":
			fail(400, s.itemErrors[meta["_id"]], "failed to parse (stand-in: injected)")
		default:
			status, typ, reason := s.indexDoc(op, meta, src)
			if status >= 300 {
				fail(status, typ, reason)
			} else {
				res["status"] = status
				res["result"] = "created"
			}
		}
		items = append(items, map[string]any{op: res})
	}
	writeJSON(w, 200, map[string]any{"took": 1, "errors": anyErr, "items": items})
}

func (s *standIn) indexDoc(op string, meta map[string]string, src json.RawMessage) (int, string, string) {
	name := meta["_index"]
	ix, ok := s.indices[name]
	if !ok {
		if b, ok := s.streams[name]; ok {
			ix = s.indices[b]
		}
	}
	if ix == nil {
		if hs := s.aliasHolders(name); len(hs) > 0 {
			return 400, "illegal_argument_exception", "stand-in: writes through aliases are not implemented"
		}
		tn, t := s.template(name)
		if _, ds := t["data_stream"]; t == nil || !ds {
			s.t.Errorf("stand-in: bulk into missing index %s would auto-create it: the engine must create indices itself", name)
			return 404, "index_not_found_exception", "no such index [" + name + "]"
		}
		if op != "create" {
			return 400, "illegal_argument_exception", "only write ops with an op_type of create are allowed in data streams"
		}
		backing := fmt.Sprintf(".ds-%s-%s-000001", name, time.Now().Format("2006.01.02"))
		nix := s.newIndex(backing, indexBody{})
		nix.dataStream = name
		s.indices[backing] = nix
		s.streams[name] = backing
		ix = nix
		_ = tn
	}
	if ix.dataStream != "" {
		if op != "create" {
			return 400, "illegal_argument_exception", "only write ops with an op_type of create are allowed in data streams"
		}
		var d map[string]any
		_ = json.Unmarshal(src, &d)
		if _, ok := d["@timestamp"]; !ok {
			return 400, "illegal_argument_exception", "data stream timestamp field [@timestamp] is missing"
		}
	}
	if _, exists := ix.docs[meta["_id"]]; exists && op == "create" {
		return 409, "version_conflict_engine_exception", "[" + meta["_id"] + "]: version conflict, document already exists"
	}
	pl := meta["pipeline"]
	if pl == "" {
		pl, _ = ix.settings["index.default_pipeline"].(string)
	}
	if pl != "" && pl != "_none" {
		out, err := s.runPipeline(pl, src)
		if err != nil {
			return 400, "illegal_argument_exception", err.Error()
		}
		src = out
	}
	if fp, _ := ix.settings["index.final_pipeline"].(string); fp != "" && fp != "_none" {
		out, err := s.runPipeline(fp, src)
		if err != nil {
			return 400, "illegal_argument_exception", err.Error()
		}
		src = out
	}
	s.seq++
	id := meta["_id"]
	if _, exists := ix.docs[id]; !exists {
		ix.order = append(ix.order, id)
	}
	ix.docs[id] = &sDoc{id: id, routing: meta["routing"], source: append(json.RawMessage(nil), src...), seq: s.seq}
	return 201, "", ""
}

// ---- aliases ----

func (s *standIn) getAlias(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	name := v["name"]
	hs := s.aliasHolders(name)
	if len(hs) == 0 {
		writeJSON(w, 404, map[string]any{"error": "alias [" + name + "] missing", "status": 404})
		return
	}
	out := map[string]any{}
	for _, h := range hs {
		out[h] = map[string]any{"aliases": map[string]json.RawMessage{name: s.indices[h].aliases[name]}}
	}
	writeJSON(w, 200, out)
}

func (s *standIn) aliases(w http.ResponseWriter, _, _ map[string]string, body []byte) {
	var b struct {
		Actions []map[string]json.RawMessage `json:"actions"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	type act struct {
		op, index, alias string
		props            json.RawMessage
	}
	var acts []act
	removed := map[string]bool{}
	for _, a := range b.Actions {
		if len(a) != 1 {
			s.refuse(w, 400, "illegal_argument_exception", "one action per object")
			return
		}
		for op, raw := range a {
			var m map[string]any
			_ = json.Unmarshal(raw, &m)
			index, _ := m["index"].(string)
			alias, _ := m["alias"].(string)
			if _, ok := s.indices[index]; !ok || strings.ContainsAny(index, "*,") {
				s.refuse(w, 404, "index_not_found_exception", "no such index ["+index+"]")
				return
			}
			switch op {
			case "add":
				props := map[string]any{}
				for k, val := range m {
					if k == "index" || k == "alias" {
						continue
					}
					if !aliasProps[k] {
						s.refuse(w, 400, "x_content_parse_exception", "unknown alias action field ["+k+"]")
						return
					}
					props[k] = val
				}
				pr, _ := json.Marshal(props)
				acts = append(acts, act{op, index, alias, pr})
			case "remove":
				if _, ok := s.indices[index].aliases[alias]; !ok {
					s.refuse(w, 404, "aliases_not_found_exception", "aliases ["+alias+"] missing")
					return
				}
				acts = append(acts, act{op: op, index: index, alias: alias})
			case "remove_index":
				if len(m) != 1 {
					s.refuse(w, 400, "x_content_parse_exception", "remove_index takes only index")
					return
				}
				removed[index] = true
				acts = append(acts, act{op: op, index: index})
			default:
				s.refuse(w, 400, "x_content_parse_exception", "unknown alias action ["+op+"]")
				return
			}
		}
	}
	for _, a := range acts {
		if a.op == "add" {
			if _, clash := s.indices[a.alias]; clash && !removed[a.alias] {
				s.refuse(w, 400, "invalid_alias_name_exception", "Invalid alias name ["+a.alias+"]: an index or data stream exists with the same name as the alias")
				return
			}
			if a.alias == "" {
				s.refuse(w, 400, "action_request_validation_exception", "[alias] is required")
				return
			}
		}
	}
	for _, a := range acts {
		switch a.op {
		case "add":
			ix := s.indices[a.index]
			if ix.aliases == nil {
				ix.aliases = map[string]json.RawMessage{}
			}
			ix.aliases[a.alias] = a.props
		case "remove":
			delete(s.indices[a.index].aliases, a.alias)
			if len(s.indices[a.index].aliases) == 0 {
				s.indices[a.index].aliases = nil
			}
		case "remove_index":
			delete(s.indices, a.index)
		}
	}
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

// ---- templates and pipelines ----

func (s *standIn) listITemplates(w http.ResponseWriter, _, _ map[string]string, _ []byte) {
	out := []any{}
	for _, n := range sortedKeys(s.itemplates) {
		out = append(out, map[string]any{"name": n, "index_template": s.itemplates[n]})
	}
	writeJSON(w, 200, map[string]any{"index_templates": out})
}

func (s *standIn) putITemplate(w http.ResponseWriter, v, _ map[string]string, body []byte) {
	var b struct {
		IndexPatterns   []string        `json:"index_patterns"`
		Template        json.RawMessage `json:"template"`
		ComposedOf      []string        `json:"composed_of"`
		Priority        *int            `json:"priority"`
		Version         *int            `json:"version"`
		Meta            json.RawMessage `json:"_meta"`
		DataStream      json.RawMessage `json:"data_stream"`
		AllowAutoCreate *bool           `json:"allow_auto_create"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	if len(b.IndexPatterns) == 0 {
		s.refuse(w, 400, "action_request_validation_exception", "index patterns are missing")
		return
	}
	for _, c := range b.ComposedOf {
		if _, ok := s.ctemplates[c]; !ok {
			s.refuse(w, 400, "invalid_index_template_exception", "index template ["+v["name"]+"] specifies component templates ["+c+"] that do not exist")
			return
		}
	}
	s.itemplates[v["name"]] = append(json.RawMessage(nil), body...)
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

func (s *standIn) deleteITemplate(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	if _, ok := s.itemplates[v["name"]]; !ok {
		writeErr(w, 404, "resource_not_found_exception", "index template matching ["+v["name"]+"] not found")
		return
	}
	delete(s.itemplates, v["name"])
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

func (s *standIn) listCTemplates(w http.ResponseWriter, _, _ map[string]string, _ []byte) {
	out := []any{}
	for _, n := range sortedKeys(s.ctemplates) {
		out = append(out, map[string]any{"name": n, "component_template": s.ctemplates[n]})
	}
	writeJSON(w, 200, map[string]any{"component_templates": out})
}

func (s *standIn) putCTemplate(w http.ResponseWriter, v, _ map[string]string, body []byte) {
	var b struct {
		Template json.RawMessage `json:"template"`
		Version  *int            `json:"version"`
		Meta     json.RawMessage `json:"_meta"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	if len(b.Template) == 0 {
		s.refuse(w, 400, "action_request_validation_exception", "template is missing")
		return
	}
	s.ctemplates[v["name"]] = append(json.RawMessage(nil), body...)
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

func (s *standIn) deleteCTemplate(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	for tn, raw := range s.itemplates {
		if bytes.Contains(raw, []byte(`"`+v["name"]+`"`)) {
			s.refuse(w, 400, "illegal_argument_exception", "component templates ["+v["name"]+"] cannot be removed as they are still in use by index templates ["+tn+"]")
			return
		}
	}
	delete(s.ctemplates, v["name"])
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

func (s *standIn) listPipelines(w http.ResponseWriter, _, _ map[string]string, _ []byte) {
	out := map[string]json.RawMessage{}
	for k, v := range s.pipelines {
		out[k] = v
	}
	writeJSON(w, 200, out)
}

func (s *standIn) putPipeline(w http.ResponseWriter, v, _ map[string]string, body []byte) {
	var b struct {
		Description string `json:"description"`
		Processors  []map[string]struct {
			Field string `json:"field"`
			Value any    `json:"value"`
		} `json:"processors"`
		Version *int            `json:"version"`
		Meta    json.RawMessage `json:"_meta"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	for _, p := range b.Processors {
		if _, ok := p["set"]; !ok || len(p) != 1 {
			s.refuse(w, 400, "parse_exception", "stand-in implements only the set processor")
			return
		}
	}
	s.pipelines[v["name"]] = append(json.RawMessage(nil), body...)
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

func (s *standIn) deletePipeline(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	if _, ok := s.pipelines[v["name"]]; !ok {
		writeErr(w, 404, "resource_not_found_exception", "pipeline ["+v["name"]+"] is missing")
		return
	}
	delete(s.pipelines, v["name"])
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

func (s *standIn) deleteDataStream(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	b, ok := s.streams[v["name"]]
	if !ok {
		writeErr(w, 404, "index_not_found_exception", "no such index ["+v["name"]+"]")
		return
	}
	delete(s.indices, b)
	delete(s.streams, v["name"])
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

// ---- snapshots ----

func (s *standIn) getRepo(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	typ, ok := s.repos[v["repo"]]
	if !ok {
		writeErr(w, 404, "repository_missing_exception", "["+v["repo"]+"] missing")
		return
	}
	writeJSON(w, 200, map[string]any{v["repo"]: map[string]any{"type": typ, "settings": map[string]string{"bucket": "standin"}}})
}

func copyIndex(ix *sIndex, name string) *sIndex {
	c := *ix
	c.name = name
	c.settings = map[string]any{}
	for k, v := range ix.settings {
		c.settings[k] = v
	}
	c.aliases = nil
	if ix.aliases != nil {
		c.aliases = map[string]json.RawMessage{}
		for k, v := range ix.aliases {
			c.aliases[k] = v
		}
	}
	c.docs = map[string]*sDoc{}
	for k, v := range ix.docs {
		c.docs[k] = v
	}
	c.order = append([]string(nil), ix.order...)
	return &c
}

func (s *standIn) putSnapshot(w http.ResponseWriter, v, q map[string]string, body []byte) {
	if _, ok := s.repos[v["repo"]]; !ok {
		writeErr(w, 404, "repository_missing_exception", "["+v["repo"]+"] missing")
		return
	}
	var b struct {
		Indices            string            `json:"indices"`
		IncludeGlobalState bool              `json:"include_global_state"`
		Metadata           map[string]string `json:"metadata"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	if s.snaps[v["repo"]] == nil {
		s.snaps[v["repo"]] = map[string]*sSnapshot{}
	}
	if _, dup := s.snaps[v["repo"]][v["snap"]]; dup {
		s.refuse(w, 400, "invalid_snapshot_name_exception", "snapshot with the same name already exists")
		return
	}
	snap := &sSnapshot{uuid: randID(), indices: map[string]*sIndex{}, streams: map[string]string{}}
	for _, n := range strings.Split(b.Indices, ",") {
		if ds, ok := s.streams[n]; ok {
			snap.streams[n] = ds
			snap.indices[ds] = copyIndex(s.indices[ds], ds)
			continue
		}
		ix, ok := s.indices[n]
		if !ok {
			writeErr(w, 404, "index_not_found_exception", "no such index ["+n+"]")
			return
		}
		snap.indices[n] = copyIndex(ix, n)
	}
	s.snaps[v["repo"]][v["snap"]] = snap
	if q["wait_for_completion"] == "true" {
		writeJSON(w, 200, map[string]any{"snapshot": map[string]any{"snapshot": v["snap"], "state": "SUCCESS"}})
		return
	}
	writeJSON(w, 200, map[string]any{"accepted": true})
}

func (s *standIn) getSnapshot(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	snap, ok := s.snaps[v["repo"]][v["snap"]]
	if !ok {
		writeErr(w, 404, "snapshot_missing_exception", "["+v["repo"]+":"+v["snap"]+"] is missing")
		return
	}
	state := "SUCCESS"
	if snap.polls < s.snapshotPolls {
		snap.polls++
		state = "IN_PROGRESS"
	}
	writeJSON(w, 200, map[string]any{"snapshots": []any{map[string]any{"snapshot": v["snap"], "uuid": snap.uuid, "state": state, "indices": sortedKeys(snap.indices), "data_streams": sortedKeys(snap.streams)}}})
}

func (s *standIn) deleteSnapshot(w http.ResponseWriter, v, _ map[string]string, _ []byte) {
	if _, ok := s.snaps[v["repo"]][v["snap"]]; !ok {
		writeErr(w, 404, "snapshot_missing_exception", "["+v["repo"]+":"+v["snap"]+"] is missing")
		return
	}
	delete(s.snaps[v["repo"]], v["snap"])
	writeJSON(w, 200, map[string]any{"acknowledged": true})
}

func (s *standIn) restoreSnapshot(w http.ResponseWriter, v, q map[string]string, body []byte) {
	snap, ok := s.snaps[v["repo"]][v["snap"]]
	if !ok {
		writeErr(w, 404, "snapshot_missing_exception", "["+v["repo"]+":"+v["snap"]+"] is missing")
		return
	}
	if q["wait_for_completion"] != "true" {
		s.refuse(w, 400, "illegal_argument_exception", "stand-in restores only with wait_for_completion=true")
		return
	}
	var b struct {
		Indices            string `json:"indices"`
		IncludeGlobalState bool   `json:"include_global_state"`
		IncludeAliases     *bool  `json:"include_aliases"`
		RenamePattern      string `json:"rename_pattern"`
		RenameReplacement  string `json:"rename_replacement"`
	}
	if !s.strictJSON(w, body, &b) {
		return
	}
	if b.RenamePattern != "" && (b.RenamePattern != "(.+)" || !strings.HasPrefix(b.RenameReplacement, "$1")) {
		s.refuse(w, 400, "illegal_argument_exception", "stand-in renames only (.+) to $1<suffix>")
		return
	}
	sfx := strings.TrimPrefix(b.RenameReplacement, "$1")
	type todo struct {
		src    *sIndex
		name   string
		stream string
	}
	var todos []todo
	for _, n := range strings.Split(b.Indices, ",") {
		if ds, ok := snap.streams[n]; ok {
			if _, live := s.streams[n+sfx]; live {
				s.refuse(w, 500, "snapshot_restore_exception", "cannot restore data stream ["+n+sfx+"] because it exists")
				return
			}
			todos = append(todos, todo{snap.indices[ds], ds, n + sfx})
			continue
		}
		ix, ok := snap.indices[n]
		if !ok {
			writeErr(w, 404, "index_not_found_exception", "no such index ["+n+"] in snapshot")
			return
		}
		if _, live := s.indices[n+sfx]; live {
			s.refuse(w, 500, "snapshot_restore_exception", "cannot restore index ["+n+sfx+"] because an open index with same name already exists in the cluster")
			return
		}
		todos = append(todos, todo{src: ix, name: n + sfx})
	}
	for _, td := range todos {
		c := copyIndex(td.src, td.name)
		if b.IncludeAliases != nil && !*b.IncludeAliases {
			c.aliases = nil
		}
		if td.stream != "" {
			c.dataStream = td.stream
			s.streams[td.stream] = td.name
		}
		s.indices[td.name] = c
	}
	writeJSON(w, 200, map[string]any{"snapshot": map[string]any{"snapshot": v["snap"], "indices": strings.Split(b.Indices, ","), "shards": map[string]int{"total": len(todos), "failed": 0, "successful": len(todos)}}})
}
