package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"text/tabwriter"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/config"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/fleet"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/redact"
	"github.com/cnvrg/capsule/internal/version"
	"github.com/cnvrg/capsule/metrics"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/scanner"
	"github.com/cnvrg/capsule/watcher"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// scanSettings are the flags that point the CnvrgApp scanner at a cluster.
type scanSettings struct {
	enabled     bool // worker --scan
	kubeconfig  string
	namespaces  []string
	tick        time.Duration
	poll        time.Duration
	serviceHost string
	// stagingDir is where PostgreSQL plans' restores stage archives
	// ("capsule start": the operator's PVC); "" for $TMPDIR.
	stagingDir string
}

func (s *scanSettings) flags(f *pflag.FlagSet, worker bool) {
	if worker {
		f.BoolVar(&s.enabled, "scan", false, "also run the CnvrgApp scanner, and serve every bucket a CnvrgApp names besides --bucket")
	}
	f.StringVar(&s.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)")
	f.StringSliceVar(&s.namespaces, "namespaces", nil, "namespaces to watch for CnvrgApps, comma-separated (default all)")
	f.DurationVar(&s.tick, "scan-tick", 10*time.Second, "longest time between two passes over the plans")
	f.DurationVar(&s.poll, "scan-poll", scanner.DefaultPoll, "how often CnvrgApps and PVCs are listed where the role may list but not watch them")
	f.StringVar(&s.serviceHost, "service-host", "", "reach every data service at this host instead of <svcName>.<namespace> (outside the cluster, through port-forwards on the services' ports)")
}

// newScanner connects to the API server and makes a scanner. --cluster (or
// CAPSULE_CLUSTER, or the config file's cluster) other than "default" names
// the cluster of every plan; otherwise each CnvrgApp is its own cluster.
// With a metrics registry, the scanner's bucket clients count their calls
// and its retention reports damaged indexes there.
func (a *app) newScanner(s *scanSettings, holder string, reg *engines.Registry, mreg *metrics.Registry, events func(scanner.Event)) (*scanner.Scanner, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = s.kubeconfig
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	cluster := ""
	if a.cfg.Cluster != requests.DefaultCluster {
		cluster = a.cfg.Cluster
	}
	if holder == "" {
		host, _ := os.Hostname()
		holder = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	var hostFor func(string, string) string
	if s.serviceHost != "" {
		hostFor = func(string, string) string { return s.serviceHost }
	}
	_, trust, err := a.cfg.Signing()
	if err != nil {
		return nil, err
	}
	cfg := scanner.Config{
		Dynamic: dyn, Kube: kube, Namespaces: s.namespaces, Cluster: cluster, Engines: reg,
		HostFor: hostFor, Holder: holder, Tick: s.tick, Poll: s.poll, StagingDir: s.stagingDir, Log: a.log,
		Events: events,
		Trust:  trust,
	}
	if mreg != nil {
		cfg.Damaged = mreg.Damaged()
		cfg.WrapBucket = func(_ string, b bucket.Bucket) bucket.Bucket { return metrics.InstrumentBucket(b, mreg) }
	}
	return scanner.New(cfg)
}

func (a *app) scanCmd() *cobra.Command {
	var (
		s      scanSettings
		once   bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "scan",
		Short: "Derive backup plans from CnvrgApps and drop their scheduled requests",
		Long: `Watch the CnvrgApps of a cnvrg cluster (mlops.cnvrg.io/v1) and turn each enabled
backup block (spec.dbs.pg, .redis, .es) into a plan: the service, the bucket its
bucketRef Secret names, the period and the rotation. The capsule.mlops.cnvrg.io/
annotations the operator writes on the PostgreSQL PVC are read too (one plan per
service when both are there). Every replica drops each plan's requests at its
slots, create-only, so any number of replicas make exactly one request per slot;
after each successful backup it applies the rotation. Invalid blocks become
Warning Events on the CnvrgApp when the role may create them. The annotation
capsule.cnvrg.io/pitr-pg: "true" on a CnvrgApp turns on point-in-time recovery
for its PostgreSQL plan: base backups, and a WAL stream that "worker --scan"
runs into the plan's bucket.

With --once it reads the CnvrgApps and their Secrets once, prints the plans
(no secrets) and exits, without touching any bucket. "capsule worker --scan"
runs the scanner together with workers for every bucket the plans name.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseFormat(output)
			if err != nil {
				return err
			}
			sc, err := a.newScanner(&s, "", registry(), nil, nil)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !once {
				return sc.Run(ctx)
			}
			res, err := sc.Scan(ctx)
			if err != nil {
				return err
			}
			if f.data() {
				return writeData(a.out, f, res)
			}
			return printPlans(a, res)
		},
	}
	s.flags(cmd.Flags(), false)
	cmd.Flags().BoolVar(&once, "once", false, "scan once, print the plans and exit")
	outputFlag(cmd, &output)
	return cmd
}

func printPlans(a *app, res *scanner.Result) error {
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLAN\tCLUSTER\tENGINE\tHOST\tBUCKET\tSCHEDULE\tROTATION\tVERIFY\tPITR")
	for _, p := range res.Plans {
		verify := "-"
		if p.Verify != nil && p.Verify.Every > 0 {
			verify = fmt.Sprintf("every %d", p.Verify.Every)
		} else if p.Verify != nil && p.Verify.Schedule != nil {
			verify = p.Verify.Schedule.Spec
		}
		pitrOn := "-"
		if p.PITR {
			pitrOn = "on"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s:%d\t%s\t%s\t%d\t%s\t%s\n", p.Name, p.Cluster, p.Engine, p.Host, p.Port,
			p.Bucket.URL(), p.Schedule.Spec, p.Rotation, verify, pitrOn)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range res.Problems {
		fmt.Fprintf(a.errOut, "%s: %s: %s\n", p.Where(), p.Field, p.Message)
	}
	return nil
}

// runScanWorker is "capsule worker --scan" and "capsule start": the
// scanner, and one watcher per bucket that a plan names (plus --bucket
// when given), started and stopped as CnvrgApps and PVCs come and go;
// with --listen, the API, /metrics and the probes (scanAPI).
func (a *app) runScanWorker(ctx context.Context, s *scanSettings, svc *workerServices, name string, once bool) error {
	switch {
	case once:
		return errors.New("--scan: not with --once (the scanner runs until stopped)")
	case svc.sqsQueue != "":
		return errors.New("--scan: --sqs-queue serves one bucket and does not combine with --scan yet")
	}
	if name == "" {
		host, _ := os.Hostname()
		name = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	w := a.cfg.Worker
	var sc *scanner.Scanner
	mreg := metrics.New(metrics.Options{Log: a.log, EngineOf: func(source string) string {
		if p, ok := sc.Plan(source); ok {
			return p.Engine
		}
		return a.engineOf(source)
	}})
	notifier, err := a.notifier()
	if err != nil {
		return err
	}
	defer closeNotifier(notifier)
	a.logStartup(name, redact.String(a.cfg.Bucket), notifier.Len())
	sc, err = a.newScanner(s, name, registry(), mreg, missedAlerts(func() *scanner.Scanner { return sc }, name, notifier))
	if err != nil {
		return err
	}
	fixed := map[string]bucket.Bucket{}
	if a.cfg.Bucket != "" {
		b, err := a.openBucket(ctx)
		if err != nil {
			return err
		}
		fixed[a.cfg.Bucket] = metrics.InstrumentBucket(b, mreg)
	}
	var ln net.Listener
	if svc.listen != "" {
		if ln, err = net.Listen("tcp", svc.listen); err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
	}
	signer, trust, err := a.signing()
	if err != nil {
		return err
	}
	safe := newSafeBuckets()
	web := &scanAPI{a: a, sc: sc, fixed: fixed, reg: mreg, tokenFile: a.getenv("CAPSULE_API_TOKEN_FILE"), trust: trust}
	fl, err := fleet.New(fleet.Config{
		Set: sc, Fixed: fixed, Log: a.log, Changed: web.follow,
		New: func(key string, b bucket.Bucket) (fleet.Runner, error) {
			log := a.log.WithField("bucket", key)
			// Each bucket serves its own sources only: the configuration's
			// serve the worker's own bucket, a CnvrgApp bucket's are the
			// plans that name it (and were configured with its keys).
			var srcs executor.Sources = sc.Sources(key)
			restoreAs := sc.RestoreAs
			if _, ok := fixed[key]; ok {
				srcs, restoreAs = fixedSources{cfg: &a.cfg, sc: sc}, nil
			}
			old, err := a.openLegacy(b)
			if err != nil {
				return nil, err
			}
			exec, err := executor.New(executor.Config{
				Bucket: b, Engines: registry(), Sources: srcs, Worker: name, Version: version.String(),
				Timeout: w.Timeout, Compression: w.Compression, RetainFor: w.RetainFor, Legacy: old, Log: log, RestoreAs: restoreAs,
				Recipients: w.Encryption.Recipients, Identities: a.cfg.Identities,
				Signer: signer, Trust: trust, FormatVerifiers: pitr.Verifiers(),
				PointInTime: &pitr.Restorer{Bucket: b, Scratch: w.Scratch},
			})
			if err != nil {
				return nil, err
			}
			wcfg := w.Watcher()
			wcfg.Bucket, wcfg.Runner, wcfg.Worker, wcfg.Log, wcfg.Events = b, exec, name, log, mreg.Observe
			alertOn(&wcfg, notifier)
			wt, err := watcher.New(wcfg)
			if err != nil {
				return nil, err
			}
			// The bucket's start-up safety check runs in the member's
			// goroutine: a slow or unsafe bucket holds up no other.
			return gatedRunner{safety: &svc.safety, b: b, r: seeded{w: wt, reg: mreg, b: b, log: log, trust: trust}, log: log, passed: safe}, nil
		},
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	web.fl = fl
	if err := web.init(); err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	scanErr := make(chan error, 1)
	go func() {
		err := sc.Run(ctx)
		cancel() // a scanner that cannot run stops the workers too
		scanErr <- err
	}()
	// The API keeps answering (/healthz, /metrics) while the watchers
	// drain, and stops after them.
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	httpErr := make(chan error, 1)
	if ln != nil {
		go func() {
			err := a.serveHTTP(httpCtx, ln, web.handler(), web.tokenFile != "")
			if err != nil {
				err = fmt.Errorf("--listen: %w", err)
				cancel()
			}
			httpErr <- err
		}()
	} else {
		httpErr <- nil
	}
	// The worker's own bucket gets its maintenance (GC, the configured
	// sources' retention and schedules) as a plain worker's does; the
	// CnvrgApp plans' retention is the scanner's.
	if fb := fixed[a.cfg.Bucket]; fb != nil && !once {
		wait, err := a.startMaintenance(ctx, fb, name, mreg)
		if err != nil {
			cancel()
			return errors.Join(err, <-scanErr)
		}
		defer wait()
		defer cancel()
	}
	// Point-in-time recovery: the WAL stream and slot guard of every
	// plan with PITR on (into the plan's own bucket) and of every pitr
	// source of the configuration (into --bucket), started and stopped
	// as the plans change, once their bucket passed the start-up check.
	var configJobs map[string]pitr.Job
	if fb := fixed[a.cfg.Bucket]; fb != nil {
		if configJobs, err = a.configPITRJobs(fb); err != nil {
			cancel()
			return errors.Join(err, <-scanErr)
		}
	}
	jobs := a.newPITRJobs(name, w.Lease, mreg, signer)
	jobsDone := make(chan struct{})
	go func() {
		defer close(jobsDone)
		jobs.Follow(ctx, func() map[string]pitr.Job {
			want := sc.PITRJobs()
			for k, j := range configJobs {
				want[k] = j
			}
			for k, j := range want {
				if !safe.has(j.Bucket) {
					delete(want, k)
				}
			}
			return want
		}, func() <-chan struct{} {
			// Either change: the plans, or the buckets that passed.
			plans, buckets := sc.PlansChanged(), safe.Changed()
			ch := make(chan struct{})
			go func() {
				defer close(ch)
				select {
				case <-plans:
				case <-buckets:
				case <-ctx.Done():
				}
			}()
			return ch
		})
	}()
	fleetErr := fl.Run(ctx)
	<-jobsDone
	stopHTTP()
	return errors.Join(<-scanErr, fleetErr, <-httpErr)
}

// seeded is a bucket's watcher that first seeds the backup-age metrics
// from the bucket's catalog, so that a restarted worker reports the right
// ages at once.
type seeded struct {
	w     *watcher.Watcher
	reg   *metrics.Registry
	b     bucket.Bucket
	log   logrus.FieldLogger
	trust *index.Trust
}

func (s seeded) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := s.reg.LoadTrustedCatalog(ctx, s.b, s.trust); err != nil && ctx.Err() == nil {
			s.log.WithError(err).Warn("reading the catalog for the backup-age metrics failed; they show this worker's backups only")
		}
	}()
	err := s.w.Run(ctx)
	<-done
	return err
}

// fixedSources are the sources of the worker's own bucket (--bucket):
// those of its configuration. A plan's source is not served there.
type fixedSources struct {
	cfg *config.Config
	sc  *scanner.Scanner
}

func (f fixedSources) Lookup(name string) (engines.Source, error) {
	src, err := f.cfg.Lookup(name)
	if errors.Is(err, executor.ErrUnknownSource) {
		if nerr := f.sc.NotServed(name); errors.Is(nerr, executor.ErrNotServed) {
			return src, nerr
		}
	}
	return src, err
}
