package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/cnvrg/capsule/api"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

func (a *app) serveCmd() *cobra.Command {
	var (
		listen    string
		tokenFile string
		cacheTTL  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API and the page over the bucket",
		Long: `Serve capsule's HTTP API and its page (GET /) from the bucket, with no other
state: clusters and their backups, a backup's index, a request's status with
its progress, /healthz and /readyz.

The API is read-only unless --api-token-file (env CAPSULE_API_TOKEN_FILE) names
a file holding a token: then POST /v1/requests and POST /v1/requests/{id}/cancel
need "Authorization: Bearer <token>". The file is re-read when it changes, so
a rotated token needs no restart.

Backup listings are cached for --cache-ttl (default 2s): a committed backup
appears within that time. Request status is read from the bucket on every call.
The OpenAPI document is served at /v1/openapi.yaml.`,
		Example: `  capsule serve --bucket s3://backups/capsule/ --listen 127.0.0.1:8080
  capsule serve --api-token-file /run/secrets/capsule-api-token
  curl -H "Authorization: Bearer $(cat token)" -d '{"kind":"Backup","source":"cnvrg/pg"}' http://127.0.0.1:8080/v1/requests`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tokenFile == "" {
				tokenFile = a.getenv("CAPSULE_API_TOKEN_FILE")
			}
			if cacheTTL <= 0 {
				return fmt.Errorf("--cache-ttl: must be positive, got %s", cacheTTL)
			}
			ctx := cmd.Context()
			b, err := a.openExisting(ctx)
			if err != nil {
				return err
			}
			old, err := a.openLegacy(b)
			if err != nil {
				return err
			}
			_, trust, err := a.signing()
			if err != nil {
				return err
			}
			h, err := api.New(api.Config{Bucket: b, TokenFile: tokenFile, CacheTTL: cacheTTL, Log: a.log, MaxControlObject: a.cfg.Worker.MaxControlObject, Legacy: old, Trust: trust})
			if err != nil {
				return fmt.Errorf("--api-token-file: %w", err)
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			return a.serveHTTP(ctx, ln, h, tokenFile != "")
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the API and the page on")
	f.StringVar(&tokenFile, "api-token-file", "", "file holding the bearer token that enables writes (env CAPSULE_API_TOKEN_FILE); read-only without it")
	f.DurationVar(&cacheTTL, "cache-ttl", api.DefaultCacheTTL, "how long a backup listing is reused before the bucket is read again")
	return cmd
}

// serveHTTP serves h on ln until ctx ends, then shuts down gracefully:
// in-flight requests get shutdownGrace to finish.
func (a *app) serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, writes bool) error {
	const shutdownGrace = 10 * time.Second
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	mode := "read-only"
	if writes {
		mode = "writes enabled"
	}
	a.log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "writes": writes}).Info("serving the API")
	fmt.Fprintf(a.errOut, "capsule: serving the API and the page on http://%s/ (%s)\n", ln.Addr(), mode)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("shut down the API: %w", err)
	}
	a.log.Info("API stopped")
	return nil
}
