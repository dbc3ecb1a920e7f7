package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
	"github.com/spf13/cobra"
)

type submitFlags struct {
	id      string
	wait    bool
	timeout time.Duration
	output  string
	noCheck bool
}

func (s *submitFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.id, "id", "", "request id (default: a new time-ordered id)")
	f.BoolVar(&s.wait, "wait", false, "follow the request, show progress (riding out transient bucket errors), and exit non-zero unless it succeeds")
	f.DurationVar(&s.timeout, "timeout", 0, "with --wait: give up waiting after this long, exit 3 (0: never); the request goes on")
	f.BoolVar(&s.noCheck, "no-check", false, "submit without checking at the prompt that the source, backup and options exist (for a worker that knows more than this CLI)")
	outputFlag(cmd, &s.output)
}

// validate checks the flags before anything is read or written.
func (s *submitFlags) validate() (format, error) {
	if s.timeout != 0 && !s.wait {
		return "", usageErr(errors.New("--timeout needs --wait: without it capsule does not wait at all"))
	}
	if s.timeout < 0 {
		return "", usageErr(fmt.Errorf("--timeout %s: must not be negative", s.timeout))
	}
	return parseFormat(s.output)
}

func (a *app) backupCmd() *cobra.Command {
	var s submitFlags
	var labels []string
	cmd := &cobra.Command{
		Use:   "backup SOURCE",
		Short: "Ask for a backup of a configured source",
		Long: `Write a Backup request for SOURCE (a name from the worker's configuration) and
print its id. A worker runs it. With --wait, follow it until it ends.

SOURCE must be a source of the config file, or one with backups in the cluster
(--no-check skips the lookup: a worker may serve sources this CLI does not see).`,
		Example:           `  capsule backup cnvrg/pg --label reason=pre-upgrade --wait`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeSources,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := s.validate()
			if err != nil {
				return err
			}
			lbl, err := parseKV("--label", labels)
			if err != nil {
				return err
			}
			req := &requests.Request{Kind: requests.KindBackup, ID: s.id, Cluster: a.cfg.Cluster, Source: args[0], Labels: lbl}
			if err := a.validateRequest(req); err != nil {
				return err
			}
			ctx := cmd.Context()
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			if !s.noCheck {
				if err := a.checkSource(ctx, b, "source", a.cfg.Cluster, req.Source); err != nil {
					return err
				}
			}
			return a.submit(ctx, b, req, s, f)
		},
	}
	s.add(cmd)
	cmd.Flags().StringArrayVar(&labels, "label", nil, "label k=v recorded in the backup's index (repeatable)")
	return cmd
}

func (a *app) restoreCmd() *cobra.Command {
	var s submitFlags
	var to string
	var dropPrevious bool
	var options []string
	var p pitrFlags
	cmd := &cobra.Command{
		Use:   "restore BACKUP_ID | restore --source SOURCE --time T|--lsn L|--latest",
		Short: "Ask for a restore of a backup, or restore a source to a point in time",
		Long: `Write a Restore request for BACKUP_ID and print its id. The backup goes into
--to (a configured source; default: the source it was taken from). The target is
never damaged before the backup is known good: every artifact's checksum is
verified, and engines restore into a side copy that is swapped in only when
complete. The replaced data is kept beside the target (the result names it)
unless --drop-previous; capsule prune-previous removes kept copies later.

Before writing the request, capsule checks that the backup exists, that --to is
a source here of the backup's engine, and that every --option is one the
engine takes (docs/engines/<engine>.md); --no-check skips the checks.

A backup of the old cnvrg-capsule service (capsule legacy) is named
legacy:<id>, or by its mixed-case id alone; it has no checksum (the result
says so), and needs --to unless its source's name is configured here.

Point in time (PostgreSQL sources with pitr: true): --source with --time,
--lsn or --latest writes a Restore request naming that point instead of a
backup (--wait follows it). A worker recovers it from the newest base backup
that can reach the target and the WAL the stream keeps in the bucket: a
temporary server of the backup's major version replays the WAL on the worker's
scratch space (worker.scratch), then its databases go into --to (default the
source) by side database and rename, as every postgres restore does; the result
names the base backup and the LSN where recovery ended. --local runs the same
restore here, in this process, on --scratch. --to-dir (always here) instead
writes a complete data directory for a new server (the old one is gone): start
PostgreSQL on it.

Where signing keys are trusted (--trusted-keys, signatures.* in the config),
a backup that no trusted key signed is refused, here and by the workers;
--allow-unsigned accepts one made before signing (no signature at all), never
one whose signature does not check out.`,
		Example: `  capsule restore 01jd3k9x2q8f7m1t6v4w0y5z3a --to cnvrg/pg --wait
  capsule restore --source cnvrg/pg --time 2026-12-07T05:03:50Z --wait
  capsule restore --source cnvrg/pg --lsn 0/3000060 --local --scratch /srv/scratch
  capsule restore --source cnvrg/pg --latest --to-dir /var/lib/postgresql/15/main`,
		Args:              args(cobra.MaximumNArgs(1)),
		ValidArgsFunction: a.completeBackups,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := parseKV("--option", options)
			if err != nil {
				return err
			}
			if p.used() {
				if len(args) > 0 {
					return usageErr(fmt.Errorf("give a BACKUP_ID or --source, not both"))
				}
				if p.here() {
					return a.runPITR(cmd.Context(), &p, to, opts, dropPrevious)
				}
				return a.submitPITR(cmd.Context(), &p, to, opts, dropPrevious, s)
			}
			if len(args) != 1 {
				return usageErr(fmt.Errorf("restore needs a BACKUP_ID, or --source with --time, --lsn or --latest"))
			}
			f, err := s.validate()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ref, err := a.backupRef(ctx, args[0])
			if err != nil {
				return err
			}
			req := &requests.Request{Kind: requests.KindRestore, ID: s.id, Cluster: a.cfg.Cluster, BackupID: ref, Target: to, DropPrevious: dropPrevious, Options: opts, AllowUnsigned: a.allowUnsigned}
			if err := a.validateRequest(req); err != nil {
				return err
			}
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			if !s.noCheck {
				if err := a.checkRestore(ctx, b, req, "--to"); err != nil {
					return err
				}
			}
			return a.submit(ctx, b, req, s, f)
		},
	}
	s.add(cmd)
	cmd.Flags().StringVar(&to, "to", "", "target source (default: the backup's source)")
	cmd.Flags().BoolVar(&dropPrevious, "drop-previous", false, "drop the replaced data after the swap instead of keeping it")
	cmd.Flags().StringArrayVar(&options, "option", nil, "engine option k=v (repeatable), e.g. renameSuffix=-restored; docs/engines/<engine>.md lists them")
	_ = cmd.RegisterFlagCompletionFunc("to", a.completeSources)
	p.add(cmd)
	return cmd
}

func (a *app) verifyCmd() *cobra.Command {
	var s submitFlags
	var into string
	cmd := &cobra.Command{
		Use:   "verify BACKUP_ID",
		Short: "Prove a backup restorable by restoring it into scratch space",
		Long: `Write a Verify request: a worker restores the backup into a scratch target
(a scratch database on the --into source's server, or a scratch directory),
checks it against what the backup recorded, removes the scratch copy, and
records the outcome beside the backup's index ("capsule describe" shows it).

Before writing the request, capsule checks that the backup exists and that
--into is a source here of the backup's engine; --no-check skips the checks.`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeBackups,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := s.validate()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ref, err := a.backupRef(ctx, args[0])
			if err != nil {
				return err
			}
			req := &requests.Request{Kind: requests.KindVerify, ID: s.id, Cluster: a.cfg.Cluster, BackupID: ref, Target: into, AllowUnsigned: a.allowUnsigned}
			if err := a.validateRequest(req); err != nil {
				return err
			}
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			if !s.noCheck {
				if err := a.checkRestore(ctx, b, req, "--into"); err != nil {
					return err
				}
			}
			return a.submit(ctx, b, req, s, f)
		},
	}
	s.add(cmd)
	cmd.Flags().StringVar(&into, "into", "", "source whose server hosts the scratch copy (default: the backup's source)")
	_ = cmd.RegisterFlagCompletionFunc("into", a.completeSources)
	return cmd
}

// validateRequest checks the request's own fields as a worker would,
// before the bucket is opened: a bad name or id is a usage error.
func (a *app) validateRequest(req *requests.Request) error {
	v := *req
	v.APIVersion = requests.APIVersion
	if v.ID == "" {
		v.ID = requests.NewID()
	}
	if err := v.Validate(); err != nil {
		return usageErr(err)
	}
	return nil
}

func (a *app) submit(ctx context.Context, b bucket.Bucket, req *requests.Request, s submitFlags, f format) error {
	if err := client.Submit(ctx, b, req, a.objectLimit()); err != nil {
		return err
	}
	if !s.wait {
		if f.data() {
			return writeData(a.out, f, req)
		}
		fmt.Fprintln(a.out, req.ID)
		return nil
	}
	fmt.Fprintf(a.errOut, "submitted %s %s; waiting for a worker\n", strings.ToLower(string(req.Kind)), req.ID)
	return a.waitAndPrint(ctx, b, req.ID, s.timeout, f)
}

// waitAndPrint follows a request until it ends (or timeout, when
// positive), prints its final status, and turns how it ended into the
// exit code: 0 succeeded, 2 ended otherwise, 3 timed out.
func (a *app) waitAndPrint(ctx context.Context, b bucket.Reader, id string, timeout time.Duration, f format) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, errTimeout)
		defer cancel()
	}
	st, err := a.follow(ctx, b, id)
	if err != nil {
		if errors.Is(err, errTimeout) || (timeout > 0 && errors.Is(context.Cause(ctx), errTimeout)) {
			where := "pending"
			if st != nil {
				where = string(st.Status)
			}
			return &exitError{code: exitTimeout, err: fmt.Errorf("--timeout %s ran out: request %s is still %s (capsule status %s --wait follows it)", timeout, id, where, id)}
		}
		return fmt.Errorf("waiting for %s: %w", id, err)
	}
	if f.data() {
		if err := writeData(a.out, f, st); err != nil {
			return err
		}
	} else if err := a.printStatus(ctx, b, st, f); err != nil {
		return err
	}
	if st.Status != requests.StatusSucceeded {
		return &exitError{code: exitEndedBadly, err: fmt.Errorf("request %s ended %s: %s", id, st.Status, oneLine(st.Result.Error))}
	}
	return nil
}

// errTimeout is the cause of a --timeout's deadline.
var errTimeout = errors.New("--timeout ran out")

// follow waits for a request to end, showing its progress on the error
// stream: a bar on a terminal, a line per change otherwise (see
// progressView). Reads that fail with a transient bucket error are
// retried (client.Wait) and said on the error stream; it gives up only
// when the retry policy is spent (or the context ends), naming the error.
func (a *app) follow(ctx context.Context, b bucket.Reader, id string) (*client.Status, error) {
	v := a.newProgressView(ctx, b)
	defer v.close()
	return client.Wait(ctx, b, id, 500*time.Millisecond, v.update, a.clientOpts()...)
}

// clientOpts are the options of package client: the configured size
// limit of control objects (worker.maxControlObject), and retries of
// transient bucket errors said on the error stream.
func (a *app) clientOpts() []client.Option {
	return []client.Option{a.objectLimit(), client.OnRetry(func(err error, wait time.Duration) {
		fmt.Fprintf(a.errOut, "capsule: bucket error, trying again in %s: %v\n", wait.Round(time.Millisecond), err)
	})}
}

// objectLimit is the configured size limit of control objects
// (worker.maxControlObject), for package client.
func (a *app) objectLimit() client.Option {
	return client.MaxObject(a.cfg.Worker.MaxControlObject)
}

func parseKV(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr(fmt.Errorf("%s %q: want key=value", flag, kv))
		}
		m[k] = v
	}
	return m, nil
}
