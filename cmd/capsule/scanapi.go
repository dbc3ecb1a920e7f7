package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/fleet"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/redact"
	"github.com/cnvrg/capsule/metrics"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/scanner"
)

// scanAPI is what a scanning worker serves on --listen: /healthz,
// /readyz and /metrics for every bucket it serves, and the HTTP API (the
// listings, request status, submit) for one bucket, since the API reads
// one bucket:
//
//   - --bucket, when given;
//   - else the one bucket the plans name, when they name exactly one
//     (a cnvrg cluster's cp-object-storage), following it as it changes;
//   - else none: /v1/... answer 503 saying why (start with --bucket to
//     choose one; "capsule serve --bucket" serves any of them).
//
// /readyz is 200 once the scanner has built its first plans and every
// bucket served answers a LIST of requests/ within 5s; else 503 naming
// what is not ready.
type scanAPI struct {
	a         *app
	sc        *scanner.Scanner
	fl        *fleet.Fleet
	fixed     map[string]bucket.Bucket
	tokenFile string
	// reg counts, among the rest, the damaged indexes the API's listings
	// meet (each key once, with retention's).
	reg *metrics.Registry
	// trust judges the listed backups' signatures.
	trust *index.Trust

	mu  sync.Mutex
	key string       // the bucket the API serves ("" for none)
	api http.Handler // nil for none
	why string       // why there is none
}

// init builds the API of the fixed bucket, if any; it checks the token
// file.
func (s *scanAPI) init() error {
	s.why = "the scanner has not built its plans yet"
	for key, b := range s.fixed {
		return s.serve(key, b)
	}
	return nil
}

func (s *scanAPI) serve(key string, b bucket.Bucket) error {
	h, err := api.New(api.Config{Bucket: b, TokenFile: s.tokenFile, Log: s.a.log, Damaged: s.reg.Damaged(), MaxControlObject: s.a.cfg.Worker.MaxControlObject, Trust: s.trust})
	if err != nil {
		return fmt.Errorf("CAPSULE_API_TOKEN_FILE: %w", err)
	}
	s.mu.Lock()
	s.key, s.api, s.why = key, h, ""
	s.mu.Unlock()
	s.a.log.WithField("bucket", key).Info("the API serves this bucket")
	return nil
}

// follow is the fleet's Changed: without --bucket, the API follows the
// plans' bucket while there is exactly one.
func (s *scanAPI) follow(keys []string) {
	if len(s.fixed) > 0 {
		return
	}
	s.mu.Lock()
	current := s.key
	s.mu.Unlock()
	if len(keys) == 1 {
		if keys[0] == current {
			return
		}
		if b, ok := s.sc.Buckets()[keys[0]]; ok {
			if err := s.serve(keys[0], b); err != nil {
				s.a.log.WithError(err).Error("cannot serve the API")
			}
			return
		}
	}
	why := "no plan names a bucket"
	if len(keys) > 1 {
		why = fmt.Sprintf("the plans name %d buckets and the API serves one: start with --bucket to choose it, or run \"capsule serve --bucket URL\"", len(keys))
	}
	s.mu.Lock()
	s.key, s.api, s.why = "", nil, why
	s.mu.Unlock()
	if current != "" || len(keys) > 1 {
		s.a.log.WithField("buckets", keys).Info("the API serves no bucket: " + why)
	}
}

// handler routes the probes and /metrics, and the rest to the API.
func (s *scanAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeProbe(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /metrics", s.reg.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		h, why := s.api, s.why
		s.mu.Unlock()
		if h == nil {
			writeProbe(w, http.StatusServiceUnavailable, map[string]any{"code": "no_bucket", "message": "the API serves no bucket: " + why})
			return
		}
		h.ServeHTTP(w, r)
	})
	return mux
}

// ready answers /readyz: the scanner has its plans and every bucket
// served answers.
func (s *scanAPI) ready(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.sc.Synced():
	default:
		writeProbe(w, http.StatusServiceUnavailable, map[string]any{"status": "starting", "reason": "the scanner has not built its plans yet"})
		return
	}
	buckets := s.sc.Buckets()
	for k, b := range s.fixed {
		buckets[k] = b
	}
	keys := make([]string, 0, len(buckets))
	for k := range buckets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	for _, k := range keys {
		if _, err := buckets[k].List(ctx, requests.RequestsPrefix, bucket.ListOptions{Limit: 1}); err != nil {
			writeProbe(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "bucket": k, "reason": redact.String(err.Error())})
			return
		}
	}
	writeProbe(w, http.StatusOK, map[string]any{"status": "ok", "plans": len(s.sc.Plans()), "buckets": keys})
}

func writeProbe(w http.ResponseWriter, status int, v any) {
	data, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}
