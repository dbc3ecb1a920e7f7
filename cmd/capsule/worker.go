package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/internal/childproc"
	"github.com/cnvrg/capsule/internal/redact"
	"github.com/cnvrg/capsule/internal/version"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/watcher"
	"github.com/spf13/cobra"
)

func (a *app) workerCmd() *cobra.Command {
	var (
		name       string
		once       bool
		flagsSeen  func(string) bool
		conc       int
		poll       time.Duration
		lease      time.Duration
		maxAttempt int
		grace      time.Duration
		services   workerServices
		scan       scanSettings
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Claim and run requests from the bucket until stopped",
		Long: `Run a worker: poll requests/ in the bucket, claim requests with conditional
writes, run them through their engine, and write results and backup indexes.
Any number of workers may share a bucket; each request runs exactly once.

On SIGTERM or Ctrl-C the worker stops claiming, lets running work finish
within --grace, then cancels it and hands its leases back so another worker
takes over at once. With --once it runs what is pending and exits.

Every worker also runs maintenance, one replica at a time (a lease in the
bucket): every worker.maintenance.every it applies the sources' retention
policies (keepLast, keepDaily, keepWeekly, keepMonthly) and collects garbage
older than worker.maintenance.gcAfter (orphan attempt folders, open uploads).
A source with a schedule (sources.NAME.schedule: 24h or a cron expression)
is backed up once per slot however many workers run; "capsule prune" and
"capsule gc" run one pass by hand.

Before it claims anything the worker checks that the bucket keeps the
promises claims rest on (exclusive create-only writes, If-Match, conditional
upload commits, a sane clock: "capsule bucket check" runs the full test) and
exits with an error naming what failed on a bucket that does not;
--unsafe-bucket claims anyway and says so in the log every 10 minutes.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := a.cfg.Worker
			if flagsSeen("concurrency") {
				w.Concurrency = conc
			}
			if flagsSeen("poll") {
				w.Poll = poll
			}
			if flagsSeen("lease") {
				w.Lease = lease
			}
			if flagsSeen("max-attempts") {
				w.MaxAttempts = maxAttempt
			}
			if flagsSeen("grace") {
				w.Grace = grace
			}
			a.cfg.Worker = w
			if err := a.cfg.Validate(nil); err != nil {
				return err
			}
			if err := services.validate(once); err != nil {
				return err
			}
			a.sweepPrivateDirs()
			if scan.enabled {
				return a.runScanWorker(cmd.Context(), &scan, &services, name, once)
			}
			ctx := cmd.Context()
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			if err := services.safety.gate(ctx, b, a.log); err != nil {
				return err
			}
			old, err := a.openLegacy(b)
			if err != nil {
				return err
			}
			services.legacy = old
			_, prefix := bucket.Unprefixed(b) // before the metrics wrap the view
			if b, err = a.prepareServices(ctx, &services, b); err != nil {
				return err
			}
			if name == "" {
				host, _ := os.Hostname()
				name = fmt.Sprintf("%s/%d", host, os.Getpid())
			}
			notifier, err := a.notifier()
			if err != nil {
				return err
			}
			defer closeNotifier(notifier)
			a.logStartup(name, redact.String(a.cfg.Bucket), notifier.Len())
			signer, trust, err := a.signing()
			if err != nil {
				return err
			}
			// The soft memory limit budgets requests only: not the API's
			// caches nor a WAL stream's buffers.
			requestsOnly := services.listen == ""
			if jobs, err := a.configPITRJobs(b); err == nil && len(jobs) > 0 && !once {
				requestsOnly = false
			}
			if limit := setWorkerMemoryLimit(w.Concurrency, requestsOnly); limit != math.MaxInt64 {
				a.log.WithField("mib", limit>>20).Info("soft memory limit (GOMEMLIMIT overrides)")
			}
			exec, err := executor.New(executor.Config{
				Bucket: b, Prefix: prefix, Engines: registry(), Sources: &a.cfg, Worker: name, Version: version.String(),
				Timeout: w.Timeout, Compression: w.Compression, RetainFor: w.RetainFor, Legacy: old, Log: a.log,
				Recipients: w.Encryption.Recipients, Identities: a.cfg.Identities,
				Signer: signer, Trust: trust, FormatVerifiers: pitr.Verifiers(),
				PointInTime: &pitr.Restorer{Bucket: b, Scratch: w.Scratch},
			})
			if err != nil {
				return err
			}
			wcfg := w.Watcher()
			wcfg.Bucket, wcfg.Runner, wcfg.Worker, wcfg.Log = b, exec, name, a.log
			wcfg.Cluster = a.cfg.Cluster
			services.configure(&wcfg)
			alertOn(&wcfg, notifier)
			wt, err := watcher.New(wcfg)
			if err != nil {
				return err
			}
			if !once {
				stopPITR, err := a.startPITR(ctx, b, name, w.Lease, services.reg, signer)
				if err != nil {
					return err
				}
				defer stopPITR()
			}
			if once {
				for {
					n, err := wt.RunOnce(ctx)
					wt.Wait()
					if err != nil {
						return err
					}
					if n == 0 || ctx.Err() != nil {
						return ctx.Err()
					}
				}
			}
			mctx, stopMaintenance := context.WithCancel(ctx)
			wait, err := a.startMaintenance(mctx, b, name, services.reg)
			if err != nil {
				stopMaintenance()
				return err
			}
			defer wait()
			defer stopMaintenance()
			return a.runServices(ctx, &services, wt)
		},
	}
	f := cmd.Flags()
	flagsSeen = func(n string) bool { return f.Changed(n) }
	f.StringVar(&name, "name", "", "this worker's name in leases and results (default host/pid)")
	f.BoolVar(&once, "once", false, "run what is pending, then exit")
	f.IntVar(&conc, "concurrency", watcher.DefaultConcurrency, "requests run at once")
	f.DurationVar(&poll, "poll", watcher.DefaultPoll, "interval between listings of requests/")
	f.DurationVar(&lease, "lease", watcher.DefaultLease, "lease length; renewed every third of it")
	f.IntVar(&maxAttempt, "max-attempts", watcher.DefaultMaxAttempts, "attempts before a request ends failed")
	f.DurationVar(&grace, "grace", watcher.DefaultGrace, "time running work may finish after SIGTERM")
	services.flags(f)
	services.safety.flags(f)
	scan.flags(f, true)
	return cmd
}

// sweepPrivateDirs removes the tools' private directories (they hold
// option files with passwords) that a killed worker left behind.
func (a *app) sweepPrivateDirs() {
	removed, err := childproc.Sweep("")
	for _, d := range removed {
		a.log.WithField("dir", d).Info("removed a tools' private directory left by a worker that died")
	}
	if err != nil {
		a.log.WithError(err).Warn("sweeping the tools' private directories failed")
	}
}
