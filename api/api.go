package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/schemas"
	"github.com/sirupsen/logrus"
)

// Config configures the API.
type Config struct {
	// Bucket is where everything is read from and written to. Required.
	Bucket bucket.Bucket
	// TokenFile, when set, enables writes (POST): they need
	// "Authorization: Bearer <token>" where the token is the file's
	// content without surrounding whitespace. The file is checked on every
	// write and re-read when it changed, so rotation needs no restart.
	TokenFile string
	// Metrics, when set, is served at GET /metrics.
	Metrics http.Handler
	// CacheTTL is how long a listing of a cluster's backups is reused
	// before the bucket is read again (default 2s; negative: no cache).
	CacheTTL time.Duration
	// Log receives one line per request (debug; warn on 503, error on
	// 500). Nothing when nil.
	Log logrus.FieldLogger
	// Damaged reports damaged indexes the listings meet (each key once);
	// when nil the API logs each to Log once.
	Damaged *index.Reporter
	// MaxControlObject is the size limit of the requests, leases and
	// results the API reads and writes (default
	// requests.DefaultMaxControlObject; the workers'
	// worker.maxControlObject). A larger one is answered with a 500
	// object_too_large, without being read whole.
	MaxControlObject int64
	// Legacy, when set, is where the old cnvrg-capsule service's backups
	// are: GET /v1/clusters lists them (legacy).
	Legacy *legacy.Store
	// FailureTTL is how long the failed, canceled and rejected backups
	// read from results/ are reused (default DefaultFailureTTL; negative:
	// read them on every call). Each read lists results/ and reads the
	// results it has not read before among the newest ResultWindow.
	FailureTTL time.Duration
	// ResultWindow is how many of the newest results are searched for
	// failures (default index.DefaultResultWindow).
	ResultWindow int
	// Trust judges each backup's signature: the listings mark one that
	// no trusted key signed "untrusted" (and it is no source's newest
	// success). Nil checks none ("unchecked").
	Trust *index.Trust
}

// DefaultCacheTTL is the freshness of backup listings when
// Config.CacheTTL is zero.
const DefaultCacheTTL = 2 * time.Second

// DefaultFailureTTL is the freshness of failure listings when
// Config.FailureTTL is zero: the page's refresh interval, so that a page
// left open lists results/ at most this often.
const DefaultFailureTTL = 15 * time.Second

// maxBody caps a POST body.
const maxBody = 1 << 20

//go:embed openapi.yaml
var openapiDoc []byte

type server struct {
	b       bucket.Bucket
	log     logrus.FieldLogger
	token   *tokenFile
	catalog *catalog
	// failures are the failed backups read from results/.
	failures *failureCache
	// limit is the size limit of control objects, for package client.
	limit client.Option
}

// New checks cfg and returns the API's handler. A configured TokenFile
// must be readable and hold a token now.
func New(cfg Config) (http.Handler, error) {
	if cfg.Bucket == nil {
		return nil, errors.New("api: Bucket is required")
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.FailureTTL == 0 {
		cfg.FailureTTL = DefaultFailureTTL
	}
	if cfg.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		cfg.Log = l
	}
	if cfg.Damaged == nil {
		cfg.Damaged = index.NewReporter(cfg.Log, nil)
	}
	b := reachable{cfg.Bucket}
	s := &server{b: b, log: cfg.Log, catalog: newCatalog(b, cfg.CacheTTL, cfg.Damaged, cfg.Legacy, cfg.Trust, cfg.Log), limit: client.MaxObject(cfg.MaxControlObject)}
	s.failures = newFailureCache(b, cfg.FailureTTL, &index.FailureReader{Window: cfg.ResultWindow, MaxObject: cfg.MaxControlObject}, cfg.Log)
	if cfg.TokenFile != "" {
		s.token = &tokenFile{path: cfg.TokenFile}
		if _, err := s.token.digest(); err != nil {
			return nil, fmt.Errorf("api token file: %w", err)
		}
	}

	mux := http.NewServeMux()
	route := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, h)
	}
	route("GET", "/v1/clusters", s.clusters)
	route("GET", "/v1/clusters/{cluster}/backups", s.backups)
	route("GET", "/v1/clusters/{cluster}/backups/{backupId}", s.backup)
	route("GET", "/v1/clusters/{cluster}/pitr", s.pitrWindow)
	route("GET", "/v1/requests/{id}", s.requestStatus)
	route("POST", "/v1/requests", s.writes(s.submit))
	route("POST", "/v1/requests/{id}/cancel", s.writes(s.cancel))
	route("GET", "/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	route("GET", "/readyz", s.ready)
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	route("GET", "/v1/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openapiDoc)
	})
	route("GET", "/schemas/{name}", serveSchema)
	ui, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		return nil, err
	}
	route("GET", "/{$}", func(w http.ResponseWriter, r *http.Request) { servePage(w, r, ui, "index.html") })
	route("GET", "/ui/{name}", func(w http.ResponseWriter, r *http.Request) { servePage(w, r, ui, r.PathValue("name")) })

	// Every path above answers other methods with a JSON 405, and every
	// other path with a JSON 404 (ServeMux's own answers are plain text).
	allow := map[string][]string{}
	for _, p := range []string{"/v1/clusters", "/v1/clusters/{cluster}/backups", "/v1/clusters/{cluster}/backups/{backupId}", "/v1/clusters/{cluster}/pitr",
		"/v1/requests/{id}", "/healthz", "/readyz", "/v1/openapi.yaml", "/schemas/{name}", "/{$}", "/ui/{name}"} {
		allow[p] = []string{"GET", "HEAD"}
	}
	allow["/v1/requests"] = []string{"POST"}
	allow["/v1/requests/{id}/cancel"] = []string{"POST"}
	if cfg.Metrics != nil {
		allow["/metrics"] = []string{"GET", "HEAD"}
	}
	for p, methods := range allow {
		mux.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "", "this path answers "+strings.Join(methods, ", "))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		msg := "no such path"
		if strings.HasPrefix(r.URL.Path, "/v1/clusters/") {
			msg += " (escape a '/' in a cluster name as %2F)"
		}
		writeError(w, http.StatusNotFound, "not_found", "", msg)
	})
	return s.logged(canonical(mux)), nil
}

// canonical answers a path that is not in canonical form ("..", "//")
// with a JSON 404 rather than ServeMux's redirect to the cleaned path.
func canonical(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath()
		clean := path.Clean("/" + p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if p != clean {
			writeError(w, http.StatusNotFound, CodeNotFound, "", "no such path (it is not in canonical form)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// logged logs each request and turns a panic into a JSON 500.
func (s *server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.WithFields(logrus.Fields{"method": r.Method, "path": r.URL.EscapedPath(), "panic": fmt.Sprint(p), "stack": string(debug.Stack())}).Error("api handler panicked")
				if rec.status == 0 {
					writeError(rec, http.StatusInternalServerError, "internal", "", "internal error")
				}
			}
			log := s.log.WithFields(logrus.Fields{
				"method": r.Method, "path": r.URL.EscapedPath(), "status": rec.status,
				"duration_ms": time.Since(start).Milliseconds(),
			})
			if rec.err != nil {
				log = log.WithError(rec.err)
			}
			switch {
			case rec.status >= 500 && rec.status != http.StatusServiceUnavailable:
				log.Error("api request failed")
			case rec.status == http.StatusServiceUnavailable:
				log.Warn("api request: unavailable")
			default:
				log.Debug("api request")
			}
		}()
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(rec, r)
	})
}

// recorder remembers the status and the error behind a 5xx for the log.
type recorder struct {
	http.ResponseWriter
	status int
	err    error
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.b.List(ctx, requests.RequestsPrefix, bucket.ListOptions{Limit: 1}); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func serveSchema(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	data, err := fs.ReadFile(schemas.FS(), name)
	if err != nil || !strings.HasSuffix(name, ".schema.json") {
		writeError(w, http.StatusNotFound, "not_found", "", "no such schema")
		return
	}
	w.Header().Set("Content-Type", "application/schema+json")
	w.Write(data)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "", "internal error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}
