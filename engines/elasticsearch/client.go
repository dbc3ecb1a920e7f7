package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
)

// client speaks the subset of the REST API the engine uses, with net/http.
type client struct {
	base *url.URL
	user string
	pass string
	hc   *http.Client
}

func newClient(ctx context.Context, src engines.Source, cfg *Config) (*client, error) {
	pw, err := src.Secret(ctx)
	if err != nil {
		return nil, err
	}
	base, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil {
		return nil, errors.New("url: not a valid URL")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if base.Scheme == "https" {
		// No host: net/http checks the certificate for the url's host
		// unless tls.serverName names another.
		if tr.TLSClientConfig, err = cfg.tlsSetting().Config(""); err != nil {
			return nil, err
		}
	}
	return &client{base: base, user: cfg.User, pass: pw, hc: &http.Client{Transport: tr}}, nil
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// APIError is an error answer of the cluster. It carries no request body
// and no credentials.
type APIError struct {
	Method string
	Path   string
	Status int
	Type   string
	Reason string
}

func (e *APIError) Error() string {
	if e.Type == "" && e.Reason == "" {
		return fmt.Sprintf("%s %s: HTTP %d", e.Method, e.Path, e.Status)
	}
	return fmt.Sprintf("%s %s: HTTP %d: %s: %s", e.Method, e.Path, e.Status, e.Type, e.Reason)
}

func isStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}

// ndjson is a request body sent as is with the NDJSON content type.
type ndjson []byte

// request sends one request. body is nil, ndjson, or marshalled as JSON.
// A 2xx answer is decoded into out (when not nil); any other is an
// *APIError.
func (c *client) request(ctx context.Context, method, path string, q url.Values, body, out any) error {
	target := strings.TrimRight(c.base.String(), "/") + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case ndjson:
		rd, ctype = bytes.NewReader(b), "application/x-ndjson"
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("%s %s: encode body: %w", method, path, err)
		}
		rd, ctype = bytes.NewReader(raw), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	if c.user != "" || c.pass != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, scrubURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeAPIError(method, path, resp)
	}
	if out == nil || method == http.MethodHead {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func decodeAPIError(method, path string, resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Method: method, Path: path, Status: resp.StatusCode}
	var body struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && len(body.Error) > 0 {
		var obj struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		}
		var s string
		if json.Unmarshal(body.Error, &obj) == nil {
			e.Type, e.Reason = obj.Type, obj.Reason
		} else if json.Unmarshal(body.Error, &s) == nil {
			e.Reason = s
		}
	}
	return e
}

// scrubURLError drops the URL from a transport error: the engine never
// puts credentials in URLs, but a message should name the path, not the
// host and query.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// esPath joins path segments that are constants or were escaped with seg
// or segs.
func esPath(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(s)
	}
	return b.String()
}

// seg escapes one index, alias, template or pipeline name as a path
// segment.
func seg(n string) string { return url.PathEscape(n) }

// segs escapes a comma-separated list of names or patterns.
func segs(ns []string) string {
	esc := make([]string, len(ns))
	for i, n := range ns {
		esc[i] = url.PathEscape(n)
	}
	return strings.Join(esc, ",")
}

// serverInfo is the answer of GET /.
type serverInfo struct {
	Name        string `json:"name"`
	ClusterName string `json:"cluster_name"`
	Version     struct {
		Number       string `json:"number"`
		Distribution string `json:"distribution"`
		BuildFlavor  string `json:"build_flavor"`
	} `json:"version"`
	Tagline string `json:"tagline"`

	major, minor int
}

func (s *serverInfo) openSearch() bool { return s.Version.Distribution == "opensearch" }

// product names the server for BackupInfo: "elasticsearch 8.11.0".
func (s *serverInfo) product() string {
	if s.openSearch() {
		return "opensearch " + s.Version.Number
	}
	return "elasticsearch " + s.Version.Number
}

func (s *serverInfo) atLeast(major, minor int) bool {
	return s.major > major || (s.major == major && s.minor >= minor)
}

// hasResolve: GET /_resolve/index exists (Elasticsearch 7.9, every
// OpenSearch).
func (s *serverInfo) hasResolve() bool { return s.openSearch() || s.atLeast(7, 9) }

// hasPIT: a point in time sorted on _shard_doc (Elasticsearch 7.12).
// OpenSearch's point in time has another API and no _shard_doc: it uses
// scroll.
func (s *serverInfo) hasPIT() bool { return !s.openSearch() && s.atLeast(7, 12) }

// hasComposableTemplates: _index_template and _component_template
// (Elasticsearch 7.8, every OpenSearch).
func (s *serverInfo) hasComposableTemplates() bool { return s.openSearch() || s.atLeast(7, 8) }

func (c *client) info(ctx context.Context) (*serverInfo, error) {
	var si serverInfo
	if err := c.request(ctx, http.MethodGet, "/", nil, nil, &si); err != nil {
		return nil, err
	}
	parts := strings.SplitN(si.Version.Number, ".", 3)
	if len(parts) < 2 {
		return nil, fmt.Errorf("GET /: version %q is not a version number", si.Version.Number)
	}
	si.major, _ = strconv.Atoi(parts[0])
	si.minor, _ = strconv.Atoi(parts[1])
	if si.openSearch() {
		if si.major < 1 || si.major > 2 {
			return nil, fmt.Errorf("server is OpenSearch %s: supported are 1.x and 2.x", si.Version.Number)
		}
	} else if si.major < 7 || si.major > 8 {
		return nil, fmt.Errorf("server is Elasticsearch %s: supported are 7.x and 8.x", si.Version.Number)
	}
	return &si, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
