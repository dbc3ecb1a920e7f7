package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cnvrg/capsule/schemas"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// The OpenAPI document and the object schemas it refers to
// (../schemas/*.schema.json) are added to one JSON Schema compiler at
// these addresses, so that the document's relative references resolve to
// the schemas' own $ids.
const (
	specURL    = "https://capsule.cnvrg.io/api/openapi.yaml"
	schemasURL = "https://capsule.cnvrg.io/schemas/"
)

// spec validates response bodies against api/openapi.yaml.
type spec struct {
	doc      map[string]any
	compiler *jsonschema.Compiler

	mu       sync.Mutex
	compiled map[string]*jsonschema.Schema
	// seen records which operation+status pairs the tests exercised.
	seen map[string]bool
}

var (
	specOnce sync.Once
	theSpec  *spec
	specErr  error
)

func loadSpec(t testing.TB) *spec {
	t.Helper()
	specOnce.Do(func() { theSpec, specErr = readSpec() })
	if specErr != nil {
		t.Fatal(specErr)
	}
	return theSpec
}

func readSpec() (*spec, error) {
	raw, err := os.ReadFile("openapi.yaml")
	if err != nil {
		return nil, err
	}
	var y any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	js, err := json.Marshal(y)
	if err != nil {
		return nil, fmt.Errorf("openapi.yaml is not JSON-compatible: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, err
	}
	m, ok := doc.(map[string]any)
	if !ok || m["openapi"] != "3.1.0" {
		return nil, fmt.Errorf("openapi.yaml: want an OpenAPI 3.1.0 document")
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(specURL, doc); err != nil {
		return nil, err
	}
	entries, err := fs.ReadDir(schemas.FS(), ".")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		data, _ := fs.ReadFile(schemas.FS(), e.Name())
		sd, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		if err := c.AddResource(schemasURL+e.Name(), sd); err != nil {
			return nil, err
		}
	}
	return &spec{doc: m, compiler: c, compiled: map[string]*jsonschema.Schema{}, seen: map[string]bool{}}, nil
}

// template finds the document's path template that matches an escaped
// request path, segment by segment ({x} matches any one segment).
func (s *spec) template(escapedPath string) (string, bool) {
	paths, _ := s.doc["paths"].(map[string]any)
	segs := strings.Split(escapedPath, "/")
	best, bestLiteral := "", -1
	for tmpl := range paths {
		ts := strings.Split(tmpl, "/")
		if len(ts) != len(segs) {
			continue
		}
		ok, literal := true, 0
		for i := range ts {
			switch {
			case strings.HasPrefix(ts[i], "{") && strings.HasSuffix(ts[i], "}"):
				if segs[i] == "" {
					ok = false
				}
			case ts[i] == segs[i]:
				literal++
			default:
				ok = false
			}
		}
		// The most literal template wins, as in ServeMux.
		if ok && literal > bestLiteral {
			best, bestLiteral = tmpl, literal
		}
	}
	return best, best != ""
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// check validates one response against the document: its status must be
// listed for the operation, its content type JSON where the document
// gives a JSON schema, and its body valid against that schema.
func (s *spec) check(method, escapedPath string, status int, contentType string, body []byte) error {
	tmpl, ok := s.template(escapedPath)
	if !ok {
		// A path the document does not have must be answered 404.
		if status != 404 {
			return fmt.Errorf("%s %s: no path in openapi.yaml matches, and the answer was %d, not 404", method, escapedPath, status)
		}
		return s.validate("#/components/responses/NotFound", method, escapedPath, status, contentType, body)
	}
	op, ok := s.doc["paths"].(map[string]any)[tmpl].(map[string]any)[strings.ToLower(method)].(map[string]any)
	if !ok {
		if method == "HEAD" {
			return nil
		}
		// A method the path does not have must be answered 405.
		if status != 405 {
			return fmt.Errorf("%s %s: openapi.yaml has no %s for %s, and the answer was %d, not 405", method, escapedPath, method, tmpl, status)
		}
		return s.validate("#/components/responses/MethodNotAllowed", method, escapedPath, status, contentType, body)
	}
	code := strconv.Itoa(status)
	resp, ok := op["responses"].(map[string]any)[code].(map[string]any)
	if !ok {
		return fmt.Errorf("%s %s: status %d is not documented for %s %s", method, escapedPath, status, method, tmpl)
	}
	ptr := "#/paths/" + pointerEscape(tmpl) + "/" + strings.ToLower(method) + "/responses/" + code
	if ref, ok := resp["$ref"].(string); ok {
		ptr = ref
	}
	s.mu.Lock()
	s.seen[method+" "+tmpl+" "+code] = true
	s.mu.Unlock()
	return s.validate(ptr, method, escapedPath, status, contentType, body)
}

func (s *spec) validate(respPtr, method, escapedPath string, status int, contentType string, body []byte) error {
	resp := s.resolve(respPtr)
	content, _ := resp["content"].(map[string]any)
	if _, ok := content["application/json"]; !ok {
		return nil
	}
	if mt, _, _ := mime.ParseMediaType(contentType); mt != "application/json" {
		return fmt.Errorf("%s %s: %d has Content-Type %q, the document says application/json", method, escapedPath, status, contentType)
	}
	loc := specURL + respPtr + "/content/application~1json/schema"
	s.mu.Lock()
	sch, ok := s.compiled[loc]
	if !ok {
		var err error
		if sch, err = s.compiler.Compile(loc); err != nil {
			s.mu.Unlock()
			return fmt.Errorf("compile %s: %w", loc, err)
		}
		s.compiled[loc] = sch
	}
	s.mu.Unlock()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %s: %d body is not JSON: %v: %s", method, escapedPath, status, err, body)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("%s %s: %d body does not match openapi.yaml: %v\nbody: %s", method, escapedPath, status, err, body)
	}
	return nil
}

// resolve follows a local JSON pointer ("#/a/b") into the document.
func (s *spec) resolve(ptr string) map[string]any {
	var cur any = s.doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "#/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, _ := cur.(map[string]any)
		cur = m[tok]
	}
	m, _ := cur.(map[string]any)
	return m
}

func TestOpenAPIDocumentCompiles(t *testing.T) {
	s := loadSpec(t)
	// Every JSON schema in the document compiles (refs resolve).
	paths := s.doc["paths"].(map[string]any)
	n := 0
	for tmpl, item := range paths {
		for method, op := range item.(map[string]any) {
			for code, resp := range op.(map[string]any)["responses"].(map[string]any) {
				ptr := "#/paths/" + pointerEscape(tmpl) + "/" + method + "/responses/" + code
				if ref, ok := resp.(map[string]any)["$ref"].(string); ok {
					ptr = ref
				}
				if r := s.resolve(ptr); r == nil {
					t.Errorf("%s %s %s: %s does not resolve", method, tmpl, code, ptr)
					continue
				}
				if _, ok := s.resolve(ptr)["content"].(map[string]any)["application/json"]; !ok {
					continue
				}
				if _, err := s.compiler.Compile(specURL + ptr + "/content/application~1json/schema"); err != nil {
					t.Errorf("%s %s %s: %v", method, tmpl, code, err)
				}
				n++
			}
		}
	}
	for name := range s.doc["components"].(map[string]any)["schemas"].(map[string]any) {
		if _, err := s.compiler.Compile(specURL + "#/components/schemas/" + name); err != nil {
			t.Errorf("schema %s: %v", name, err)
		}
	}
	if n < 20 {
		t.Errorf("only %d JSON responses in the document", n)
	}
}

// TestOpenAPICheckRejects shows that the response check used by every
// test has teeth: wrong bodies, undocumented statuses and content types
// are caught.
func TestOpenAPICheckRejects(t *testing.T) {
	s := loadSpec(t)
	const js = "application/json"
	bad := []struct {
		method, path string
		status       int
		ctype, body  string
	}{
		{"GET", "/v1/clusters", 200, js, `{"clusters":[]}`},                                                                              // no asOf
		{"GET", "/v1/clusters", 200, js, `{"clusters":[],"asOf":"yesterday"}`},                                                           // not a date-time
		{"GET", "/v1/clusters/default/backups", 200, js, `{"cluster":"default","backups":[{"index":{}}],"asOf":"2025-01-01T00:00:00Z"}`}, // empty index
		{"GET", "/v1/requests/abc", 200, js, `{"id":"abc","status":"running"}`},                                                          // running without a lease
		{"GET", "/v1/requests/abc", 200, js, `{"id":"abc","status":"done"}`},                                                             // unknown status
		{"GET", "/v1/requests/abc", 418, js, `{"code":"internal","message":"x"}`},                                                        // undocumented status
		{"GET", "/v1/requests/abc", 404, js, `{"code":"nope","message":"x"}`},                                                            // unknown code
		{"GET", "/v1/requests/abc", 404, "text/plain", `{"code":"not_found","message":"x"}`},                                             // not JSON
		{"GET", "/nowhere", 200, js, `{}`},                                                                                               // unknown path answered 200
		{"DELETE", "/v1/clusters", 200, js, `{}`},                                                                                        // unknown method answered 200
	}
	for _, c := range bad {
		if err := s.check(c.method, c.path, c.status, c.ctype, []byte(c.body)); err == nil {
			t.Errorf("%s %s %d %s: accepted", c.method, c.path, c.status, c.body)
		}
	}
	if err := s.check("GET", "/v1/requests/abc", 404, js, []byte(`{"code":"not_found","message":"no request has this id"}`)); err != nil {
		t.Errorf("a good 404: %v", err)
	}
}
