package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cnvrg/capsule/config"
	"github.com/cnvrg/capsule/scanner"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// startCmd is "capsule start": the cnvrg operator's Deployment runs the
// old capsule service as "/opt/app-root/capsule start" with no args, and
// this image in its place does the same and more.
func (a *app) startCmd() *cobra.Command {
	var (
		name, nsWhitelist, dumpDir, listen, kubeconfig, serviceHost string
		verbose                                                     bool
		tick, poll                                                  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Run in a cnvrg cluster as the operator starts the old capsule service",
		Long: `Run what the cnvrg operator's capsule Deployment expects, with no arguments: the
scanner (plans from the capsule.mlops.cnvrg.io/ annotations of PostgreSQL PVCs,
and from CnvrgApps when the role may read them), a worker for every bucket the
plans name (buckets from their cp-object-storage Secrets), and on --api-bind-addr
(default :8080) /healthz, /readyz, /metrics and the API.

It works with the operator's ClusterRole (get and list on persistentvolumeclaims
and secrets): it lists what it may not watch every --scan-poll, reads Secrets by
name, and logs once what the role does not let it do. PostgreSQL restores stage
archives in /tmp/capsule-data (the operator's PVC) when it is there and
writable, else in $TMPDIR; they run as the application role when it can, else
as postgres with pg-creds' POSTGRESQL_ADMIN_PASSWORD, and the result says which.

Every setting has the old service's environment twin, read first:
CNVRG_CAPSULE_NS_WHITELIST ("*" or namespaces, comma-separated),
CNVRG_CAPSULE_DUMPDIR, CNVRG_CAPSULE_API_BIND_ADDR, CNVRG_CAPSULE_KUBECONFIG,
CNVRG_CAPSULE_VERBOSE, CNVRG_CAPSULE_DST_DIR (--dst-dir: the prefix of the old
service's backups in each bucket). Settings of workers (concurrency, lease...)
come from the config file (CAPSULE_CONFIG).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := config.StartFromEnv(a.getenv)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			if f.Changed("ns-whitelist") {
				if st.Namespaces, err = config.ParseNamespaces(nsWhitelist); err != nil {
					return fmt.Errorf("--ns-whitelist: %w", err)
				}
			}
			if f.Changed("dumpdir") {
				if !filepath.IsAbs(dumpDir) {
					return fmt.Errorf("--dumpdir: %q is not an absolute path", dumpDir)
				}
				st.DumpDir = filepath.Clean(dumpDir)
			}
			if f.Changed("api-bind-addr") {
				st.Listen = listen
			}
			if f.Changed("kubeconfig") {
				st.Kubeconfig = kubeconfig
			}
			if f.Changed("verbose") {
				st.Verbose = verbose
			}
			if st.Verbose && !f.Changed("log-level") {
				a.log.SetLevel(logrus.DebugLevel)
			}
			staging, err := stagingDir(st.DumpDir, config.DefaultDumpDir, a.log)
			if err != nil {
				return err
			}
			a.sweepPrivateDirs()
			a.log.WithFields(logrus.Fields{
				"namespaces": nsList(st.Namespaces), "listen": st.Listen, "staging_dir": orTMPDIR(staging),
				"legacy_dst_dir": a.cfg.Legacy.DstDir,
			}).Info("capsule start: the scanner, a worker per bucket, and the API")
			scan := scanSettings{
				enabled: true, kubeconfig: st.Kubeconfig, namespaces: st.Namespaces, tick: tick, poll: poll,
				serviceHost: serviceHost, stagingDir: staging,
			}
			svc := workerServices{listen: st.Listen}
			return a.runScanWorker(cmd.Context(), &scan, &svc, name, false)
		},
	}
	f := cmd.Flags()
	f.StringVar(&nsWhitelist, "ns-whitelist", "*", `namespaces to serve, comma-separated, or "*" for all (env `+config.EnvNsWhitelist+`)`)
	f.StringVar(&dumpDir, "dumpdir", "", "where PostgreSQL restores stage archives (env "+config.EnvDumpDir+"; default "+config.DefaultDumpDir+" when it is a writable directory, else $TMPDIR)")
	f.StringVar(&listen, "api-bind-addr", config.DefaultAPIBindAddr, "address of the API, /metrics, /healthz and /readyz; empty for none (env "+config.EnvAPIBindAddr+")")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (env "+config.EnvKubeconfig+"; default: in-cluster, else $KUBECONFIG or ~/.kube/config)")
	f.BoolVar(&verbose, "verbose", false, "debug logging (env "+config.EnvVerbose+")")
	f.StringVar(&name, "name", "", "this worker's name in leases and results (default host/pid: the pod's name)")
	f.StringVar(&serviceHost, "service-host", "", "reach every data service at this host instead of <service>.<namespace> (outside the cluster, through port-forwards)")
	f.DurationVar(&tick, "scan-tick", 10*time.Second, "longest time between two passes over the plans")
	f.DurationVar(&poll, "scan-poll", scanner.DefaultPoll, "how often PVCs and CnvrgApps are listed where the role may list but not watch them")
	return cmd
}

// stagingDir returns the staging directory of PostgreSQL restores: dir
// when given (it must be a writable directory), else def when it is one
// (the operator mounts its PVC there), else "" for $TMPDIR, saying why.
func stagingDir(dir, def string, log logrus.FieldLogger) (string, error) {
	if dir != "" {
		if err := writableDir(dir); err != nil {
			return "", fmt.Errorf("--dumpdir (%s): %w", config.EnvDumpDir, err)
		}
		return dir, nil
	}
	if err := writableDir(def); err != nil {
		log.WithFields(logrus.Fields{"dir": def, "reason": err.Error()}).Info("PostgreSQL restores stage archives in $TMPDIR: the capsule PVC's mount is not usable")
		return "", nil
	}
	return def, nil
}

// writableDir checks that dir is a directory this process can create
// files in.
func writableDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".capsule-write-check-*")
	if err != nil {
		return fmt.Errorf("cannot write in %s: %w", dir, errors.Unwrap(err))
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

func nsList(ns []string) any {
	if len(ns) == 0 {
		return "all"
	}
	return ns
}

func orTMPDIR(dir string) string {
	if dir == "" {
		return os.TempDir() + " ($TMPDIR)"
	}
	return dir
}
