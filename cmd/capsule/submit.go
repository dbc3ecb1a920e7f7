package main

import (
	"context"
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
}

func (s *submitFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.id, "id", "", "request id (default: a new time-ordered id)")
	f.BoolVar(&s.wait, "wait", false, "follow the request, show progress (riding out transient bucket errors), and exit non-zero unless it succeeds")
	f.DurationVar(&s.timeout, "timeout", 0, "with --wait: give up waiting after this long (0: never)")
	f.StringVarP(&s.output, "output", "o", "text", "text or json (the final status, with --wait)")
}

func (a *app) backupCmd() *cobra.Command {
	var s submitFlags
	var labels []string
	cmd := &cobra.Command{
		Use:   "backup SOURCE",
		Short: "Ask for a backup of a configured source",
		Long: `Write a Backup request for SOURCE (a name from the worker's configuration) and
print its id. A worker runs it. With --wait, follow it until it ends.`,
		Example: `  capsule backup cnvrg/pg --label reason=pre-upgrade --wait`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lbl, err := parseKV("--label", labels)
			if err != nil {
				return err
			}
			req := &requests.Request{Kind: requests.KindBackup, ID: s.id, Cluster: a.cfg.Cluster, Source: args[0], Labels: lbl}
			return a.submit(cmd.Context(), req, s)
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
	cmd := &cobra.Command{
		Use:   "restore BACKUP_ID",
		Short: "Ask for a restore of a backup",
		Long: `Write a Restore request for BACKUP_ID and print its id. The backup goes into
--to (a configured source; default: the source it was taken from). The target is
never damaged before the backup is known good: every artifact's checksum is
verified, and engines restore into a side copy that is swapped in only when
complete.

A backup of the old cnvrg-capsule service (capsule legacy) is named
legacy:<id>, or by its mixed-case id alone; it has no checksum (the result
says so), and needs --to unless its source's name is configured here.`,
		Example: `  capsule restore 01jd3k9x2q8f7m1t6v4w0y5z3a --to cnvrg/pg --wait`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := parseKV("--option", options)
			if err != nil {
				return err
			}
			ref, err := a.backupRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			req := &requests.Request{Kind: requests.KindRestore, ID: s.id, Cluster: a.cfg.Cluster, BackupID: ref, Target: to, DropPrevious: dropPrevious, Options: opts}
			return a.submit(cmd.Context(), req, s)
		},
	}
	s.add(cmd)
	cmd.Flags().StringVar(&to, "to", "", "target source (default: the backup's source)")
	cmd.Flags().BoolVar(&dropPrevious, "drop-previous", false, "drop the replaced data after the swap instead of keeping it")
	cmd.Flags().StringArrayVar(&options, "option", nil, "engine option k=v (repeatable), e.g. renameSuffix=-restored")
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
records the outcome beside the backup's index ("capsule describe" shows it).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := a.backupRef(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			req := &requests.Request{Kind: requests.KindVerify, ID: s.id, Cluster: a.cfg.Cluster, BackupID: ref, Target: into}
			return a.submit(cmd.Context(), req, s)
		},
	}
	s.add(cmd)
	cmd.Flags().StringVar(&into, "into", "", "source whose server hosts the scratch copy (default: the backup's source)")
	return cmd
}

func (a *app) submit(ctx context.Context, req *requests.Request, s submitFlags) error {
	b, err := a.openBucket(ctx)
	if err != nil {
		return err
	}
	if err := client.Submit(ctx, b, req, a.objectLimit()); err != nil {
		return err
	}
	if !s.wait {
		if s.output == "json" {
			return writeJSON(a.out, req)
		}
		fmt.Fprintln(a.out, req.ID)
		return nil
	}
	fmt.Fprintf(a.errOut, "submitted %s %s; waiting for a worker\n", strings.ToLower(string(req.Kind)), req.ID)
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	st, err := a.follow(ctx, b, req.ID)
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", req.ID, err)
	}
	if s.output == "json" {
		if err := writeJSON(a.out, st); err != nil {
			return err
		}
	} else {
		printStatus(a.out, st)
	}
	if st.Status != requests.StatusSucceeded {
		return &exitError{code: 2, err: fmt.Errorf("request %s ended %s: %s", req.ID, st.Status, st.Result.Error)}
	}
	return nil
}

// follow waits for a request to end, printing each new progress line to
// the error stream. Reads that fail with a transient bucket error are
// retried (client.Wait) and said on the error stream; it gives up only
// when the retry policy is spent (or the context ends), naming the error.
func (a *app) follow(ctx context.Context, b bucket.Reader, id string) (*client.Status, error) {
	last := ""
	return client.Wait(ctx, b, id, 500*time.Millisecond, func(st *client.Status) {
		if line := progressLine(st); line != last {
			fmt.Fprintln(a.errOut, line)
			last = line
		}
	}, a.clientOpts()...)
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

func progressLine(st *client.Status) string {
	switch {
	case st.Result != nil:
		return fmt.Sprintf("%s after %d attempt(s)", st.Status, st.Result.Attempts)
	case st.Lease != nil:
		l := st.Lease
		line := fmt.Sprintf("running: attempt %d on %s", l.Attempt, l.Holder)
		if p := l.Progress; p != nil {
			line += fmt.Sprintf(": %s", p.Phase)
			if p.Artifact != "" {
				line += " " + p.Artifact
			}
			line += fmt.Sprintf(", %s read, %s stored", humanBytes(p.Bytes), humanBytes(p.StoredBytes))
			if p.Total > 0 {
				line += fmt.Sprintf(", %d/%d", p.Done, p.Total)
			} else if p.Done > 0 {
				line += fmt.Sprintf(", %d items", p.Done)
			}
		}
		return line
	}
	return "pending: waiting for a worker"
}

func parseKV(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want key=value", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}
