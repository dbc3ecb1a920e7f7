package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/config"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/redact"
	"github.com/cnvrg/capsule/internal/version"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// app holds what every command shares: where output goes, the
// configuration and the bucket. Nothing here is global.
type app struct {
	out, errOut io.Writer
	getenv      func(string) string

	bucketURL  string
	configPath string
	cluster    string
	logLevel   string
	logFormat  string
	// dstDir is --dst-dir (see legacyDir).
	dstDir string
	// local shows times in the local zone (with its offset) instead of UTC.
	local bool
	// explainAfter is how long a followed request may wait for a worker
	// before capsule says why it may wait (--explain-after, hidden).
	explainAfter time.Duration
	// signingKey, trustedKeys and allowUnsigned are the signature flags
	// (see signing).
	signingKey, trustedKeys string
	allowUnsigned           bool

	cfg config.Config
	log *logrus.Logger
}

func newApp(out, errOut io.Writer, getenv func(string) string) *app {
	return &app{out: out, errOut: errOut, getenv: getenv}
}

// The exit codes, the same for every command; capsule --help and the
// README list them.
const (
	// exitFailed: the command could not do its work (the bucket or a
	// service could not be reached, a bad configuration file, a bug).
	exitFailed = 1
	// exitEndedBadly: what was asked for ran and ended badly: a request
	// followed with --wait ended failed, rejected or canceled; bucket
	// check found the bucket unsafe; an import left backups out.
	exitEndedBadly = 2
	// exitTimeout: --timeout ran out while waiting; the request goes on.
	exitTimeout = 3
	// exitRefused: the command line was refused before anything was
	// written: a bad flag or argument, or a check at the prompt (an
	// unknown source, backup id or restore option).
	exitRefused = 4
)

const exitCodesHelp = `Exit codes:
  0  done (with --wait: the request succeeded)
  1  could not run: the bucket or a service unreachable, a bad config file
  2  ran and ended badly: a request followed with --wait failed, was rejected
     or canceled; "bucket check" found the bucket unsafe
  3  --timeout ran out while waiting (the request goes on: "capsule status ID")
  4  refused at the prompt, nothing written: a bad flag or argument, an unknown
     source, backup id or restore option (--no-check skips the lookups)`

// exitError carries a command's exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks err as a refusal at the prompt (exitRefused).
func usageErr(err error) error { return &exitError{code: exitRefused, err: err} }

func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitFailed
}

// args wraps a positional-argument check so that its error is a usage
// error (exitRefused).
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageErr(err)
		}
		return nil
	}
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "capsule",
		Short: "Back up and restore data services into an S3 bucket",
		Long: `capsule backs up and restores PostgreSQL, Redis, MySQL/MariaDB, Elasticsearch,
MongoDB and plain directories into an S3 bucket (or a local directory).

The bucket is the only state. A client drops a request under requests/ in the
bucket ("capsule backup", "capsule restore", "capsule verify"); any number of
workers ("capsule worker") claim requests with conditional writes, run them, and
write a result and a self-describing backupIndex.json. Lose the cluster, keep
the bucket, and any capsule binary can list ("capsule ls") and restore.

The bucket comes from --bucket, else CAPSULE_BUCKET, else the config file, else
a local directory (` + bucketurl.DefaultURL() + `).
Bucket URLs: s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:7070&region=us-east-1
(credentials from the AWS default chain) or file:///path/to/dir.

Every command that prints takes -o table|wide|json|yaml, with the same meaning
everywhere. Times are UTC ("Z"); --local shows them in the local zone, with its
offset.

` + exitCodesHelp,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.load(cmd)
		},
	}
	root.SetOut(a.out)
	root.SetErr(a.errOut)
	root.SetVersionTemplate("capsule {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	pf := root.PersistentFlags()
	pf.StringVar(&a.bucketURL, "bucket", "", "bucket URL (env CAPSULE_BUCKET)")
	pf.StringVar(&a.configPath, "config", "", "YAML config file (env CAPSULE_CONFIG)")
	pf.StringVar(&a.cluster, "cluster", "", `cluster the request belongs to (env CAPSULE_CLUSTER; default "default")`)
	pf.StringVar(&a.logLevel, "log-level", "info", "debug, info, warn or error")
	pf.StringVar(&a.logFormat, "log-format", "auto", "text, json, or auto (text on a terminal, json otherwise)")
	pf.BoolVar(&a.local, "local", false, "show times in the local time zone, with its offset (default: UTC)")
	pf.DurationVar(&a.explainAfter, "explain-after", 30*time.Second, "say why a request waits once it has waited this long")
	_ = pf.MarkHidden("explain-after")
	pf.StringVar(&a.trustedKeys, "trusted-keys", "", "file of the public keys whose signatures are trusted, authorized_keys or allowed_signers lines (env CAPSULE_TRUSTED_KEYS_FILE; config signatures.trustedKeysFile)")
	pf.BoolVar(&a.allowUnsigned, "allow-unsigned", false, "accept backups made before signing (no signature at all); a wrong signature is never accepted (env CAPSULE_ALLOW_UNSIGNED)")
	pf.StringVar(&a.signingKey, "signing-key", "", "worker: private key (OpenSSH, unencrypted) that signs every index and verification record; its public half is trusted (env CAPSULE_SIGNING_KEY_FILE)")
	pf.StringVar(&a.dstDir, "dst-dir", "", "prefix of the old capsule service's backups in each bucket (env "+config.EnvDstDir+`; default "`+config.DefaultLegacyDstDir+`")`)
	root.AddCommand(a.workerCmd(), a.backupCmd(), a.restoreCmd(), a.verifyCmd(), a.lsCmd(), a.describeCmd(),
		a.statusCmd(), a.tailCmd(), a.cancelCmd(), a.versionCmd(), a.serveCmd(), a.scanCmd(), a.bucketCmd(), a.legacyCmd(), a.startCmd(), a.prunePreviousCmd(), a.pruneCmd(), a.gcCmd())
	return root
}

// loadQuiet is load for completion functions, which cobra calls without
// the pre-run hooks: nothing may reach the terminal but the candidates.
func (a *app) loadQuiet(cmd *cobra.Command) error {
	a.errOut = io.Discard
	return a.load(cmd)
}

// load applies defaults, the config file, the environment and the flags,
// in that order, and validates the result once.
func (a *app) load(cmd *cobra.Command) error {
	a.log = logrus.New()
	a.log.SetOutput(a.errOut)
	lvl, err := logrus.ParseLevel(a.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	a.log.SetLevel(lvl)
	switch a.logFormat {
	case "json":
		a.log.SetFormatter(&logrus.JSONFormatter{})
	case "text":
		a.log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "auto":
		if f, ok := a.errOut.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			a.log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
		} else {
			a.log.SetFormatter(&logrus.JSONFormatter{})
		}
	default:
		return fmt.Errorf("--log-format: %q is not text, json or auto", a.logFormat)
	}
	// Every line passes the redactor, whoever logged it: a request field,
	// a driver's error or a tool's output may quote a credential.
	redact.Logger(a.log)
	path := a.configPath
	if path == "" {
		path = a.getenv("CAPSULE_CONFIG")
	}
	a.cfg, err = config.Load(path)
	if err != nil {
		return err
	}
	a.cfg.ApplyEnv(a.getenv)
	if a.bucketURL != "" {
		a.cfg.Bucket = a.bucketURL
	}
	if a.cluster != "" {
		a.cfg.Cluster = a.cluster
	}
	if a.dstDir != "" {
		a.cfg.SetLegacyDstDir(a.dstDir)
	}
	if a.signingKey != "" {
		a.cfg.Signatures.SigningKeyFile = a.signingKey
	}
	if a.trustedKeys != "" {
		a.cfg.Signatures.TrustedKeysFile = a.trustedKeys
	}
	if a.allowUnsigned {
		a.cfg.Signatures.AllowUnsigned = true
	}
	return a.cfg.Validate(registry())
}

// signing returns the signer (nil without a signing key) and the trust
// the configuration gives. A worker (signer set) that trusts no key says
// so once, since then it checks no signature.
func (a *app) signing() (*index.Signer, *index.Trust, error) {
	signer, trust, err := a.cfg.Signing()
	if err != nil {
		return nil, nil, err
	}
	if trust.Checks() {
		a.log.WithFields(logrus.Fields{"trusted_keys": strings.Join(trust.Fingerprints(), ","), "allow_unsigned": trust.AllowUnsigned}).
			Debug("signatures: backups no trusted key signed are refused")
	}
	if signer != nil {
		a.log.WithField("signing_key", signer.Fingerprint()).Info("signing every index and verification record")
	}
	return signer, trust, nil
}

// openBucket opens the configured bucket, or the local default, saying so.
// A local directory is created when missing: for commands that write.
func (a *app) openBucket(ctx context.Context) (bucket.Bucket, error) {
	return a.open(ctx, false)
}

// openExisting opens the configured bucket for a command that only reads
// (ls, describe, status, tail, serve, completion): a local directory
// that does not exist is an error, never a new empty bucket.
func (a *app) openExisting(ctx context.Context) (bucket.Bucket, error) {
	return a.open(ctx, true)
}

func (a *app) open(ctx context.Context, existing bool) (bucket.Bucket, error) {
	url := a.cfg.Bucket
	if url == "" {
		url = bucketurl.DefaultURL()
		fmt.Fprintf(a.errOut, "capsule: no --bucket or CAPSULE_BUCKET given: using the local directory %s\n", strings.TrimPrefix(url, "file://"))
	}
	openFn := bucketurl.Open
	if existing {
		openFn = bucketurl.OpenExisting
	}
	b, desc, err := openFn(ctx, url, a.log)
	if err != nil {
		if errors.Is(err, bucketurl.ErrNoBucket) {
			err = fmt.Errorf("%w; commands that only read never create a bucket: check --bucket", err)
		}
		return nil, err
	}
	a.log.WithField("bucket", desc).Debug("bucket opened")
	return b, nil
}
