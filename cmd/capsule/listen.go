package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/metrics"
	"github.com/cnvrg/capsule/notify"
	"github.com/cnvrg/capsule/watcher"
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"
)

// workerServices is what a long-running worker adds around its watcher:
// the HTTP API with /metrics and /healthz (--listen), and claim hints
// from S3 event notifications on SQS (--sqs-queue), with the LIST slowed
// to --backstop.
type workerServices struct {
	listen   string
	sqsQueue string
	backstop time.Duration
	changed  func(string) bool
	safety   bucketSafety

	reg    *metrics.Registry
	bucket bucket.Bucket
	legacy *legacy.Store // the old service's backups, for the API
	ln     net.Listener
	// The queue's client, and where the bucket's keys live in the events.
	sqs              notify.API
	s3Bucket, prefix string
}

func (s *workerServices) flags(f *pflag.FlagSet) {
	f.StringVar(&s.listen, "listen", "", "address to serve the API, /metrics and /healthz on, e.g. :9090 (off by default)")
	f.StringVar(&s.sqsQueue, "sqs-queue", "", "URL of an SQS queue of the bucket's S3 event notifications: claim new requests at once (the LIST runs every --backstop instead of --poll)")
	f.DurationVar(&s.backstop, "backstop", 60*time.Second, "interval between listings of requests/ when --sqs-queue is on")
	s.changed = f.Changed
}

// validate checks the flags against each other.
func (s *workerServices) validate(once bool) error {
	switch {
	case once && s.listen != "":
		return errors.New("--listen: not with --once (a one-shot run is not scraped)")
	case once && s.sqsQueue != "":
		return errors.New("--sqs-queue: not with --once (it runs what is pending and exits)")
	case s.changed("backstop") && s.sqsQueue == "":
		return errors.New("--backstop: only with --sqs-queue; without notifications --poll is the listing interval")
	case s.backstop < 10*time.Millisecond:
		return fmt.Errorf("--backstop: must be at least 10ms, got %s", s.backstop)
	}
	return nil
}

// prepareServices counts the worker's bucket calls and sets up what the
// flags ask for; it returns the bucket the executor and watcher use.
func (a *app) prepareServices(ctx context.Context, s *workerServices, b bucket.Bucket) (bucket.Bucket, error) {
	s.reg = metrics.New(metrics.Options{EngineOf: a.engineOf, Log: a.log})
	s.bucket = metrics.InstrumentBucket(b, s.reg)
	if s.sqsQueue != "" {
		var err error
		if s.s3Bucket, s.prefix, err = bucketLocation(a.cfg.Bucket); err != nil {
			return nil, err
		}
		if s.sqs, err = notify.NewClient(ctx, s.sqsQueue, a.log); err != nil {
			return nil, err
		}
	}
	if s.listen != "" {
		ln, err := net.Listen("tcp", s.listen)
		if err != nil {
			return nil, fmt.Errorf("--listen: %w", err)
		}
		s.ln = ln
	}
	return s.bucket, nil
}

// configure hooks the metrics into the watcher and makes the LIST a
// backstop when notifications are on.
func (s *workerServices) configure(cfg *watcher.Config) {
	cfg.Events = s.reg.Observe
	if s.sqsQueue != "" {
		cfg.Poll = s.backstop
	}
}

// engineOf names a configured source's engine, for claims' metrics.
func (a *app) engineOf(source string) string {
	e, _ := a.cfg.Sources[source]["engine"].(string)
	return e
}

// runServices runs the watcher with the services around it until ctx
// ends. The API keeps answering (/healthz, /metrics) while the watcher
// drains; notifications stop with ctx, as claiming does.
func (a *app) runServices(ctx context.Context, s *workerServices, wt *watcher.Watcher) error {
	var listener *notify.Listener
	if s.sqs != nil {
		var err error
		listener, err = notify.New(notify.Config{
			Client: s.sqs, QueueURL: s.sqsQueue, Bucket: s.s3Bucket, Prefix: s.prefix,
			Claim: wt.ClaimHint, Observe: s.reg.ObserveSQS, Log: a.log,
		})
		if err != nil {
			return err
		}
	}
	wctx, stopWorker := context.WithCancelCause(ctx)
	defer stopWorker(nil)
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	_, trust, err := a.cfg.Signing()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var httpErr error
	if s.ln != nil {
		tokenFile := a.getenv("CAPSULE_API_TOKEN_FILE")
		h, err := api.New(api.Config{Bucket: s.bucket, TokenFile: tokenFile, Metrics: s.reg.Handler(), Log: a.log, Damaged: s.reg.Damaged(), MaxControlObject: a.cfg.Worker.MaxControlObject, Legacy: s.legacy, Trust: trust})
		if err != nil {
			s.ln.Close()
			return fmt.Errorf("CAPSULE_API_TOKEN_FILE: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.serveHTTP(httpCtx, s.ln, h, tokenFile != ""); err != nil {
				httpErr = fmt.Errorf("--listen: %w", err)
				stopWorker(httpErr)
			}
		}()
	}
	if listener != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			listener.Run(wctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Seed the newest-success gauges so that a restarted worker
		// reports the right ages at once.
		start := time.Now()
		n, err := s.reg.LoadTrustedCatalog(wctx, s.bucket, trust)
		if err != nil {
			if wctx.Err() == nil {
				a.log.WithError(err).Warn("reading the catalog for the backup-age metrics failed; they show this worker's backups only")
			}
			return
		}
		a.log.WithFields(logrus.Fields{"backups": n, "seconds": time.Since(start).Seconds()}).Debug("backup-age metrics seeded from the catalog")
	}()
	err = wt.Run(wctx)
	stopWorker(nil)
	stopHTTP()
	wg.Wait()
	return errors.Join(err, httpErr)
}

// bucketLocation returns the S3 bucket name and capsule's prefix in it
// from a bucket URL, as bucket/bucketurl reads them: the prefix is
// ?prefix= when given, else the URL's path, else capsule/. Notifications
// name keys by bucket and full key.
func bucketLocation(rawURL string) (name, prefix string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return "", "", fmt.Errorf("--sqs-queue: S3 event notifications need an s3://BUCKET/PREFIX bucket, not %q", rawURL)
	}
	prefix = strings.TrimPrefix(u.Path, "/")
	if prefix == "" {
		prefix = bucketurl.DefaultPrefix
	}
	if q := u.Query(); q.Has("prefix") {
		prefix = q.Get("prefix")
	}
	prefix = strings.TrimLeft(prefix, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return u.Host, prefix, nil
}
