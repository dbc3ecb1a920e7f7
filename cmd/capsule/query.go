package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/version"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/requests"
	"github.com/spf13/cobra"
)

func outputFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", "table", "table or json")
}

func checkOutput(o string) error {
	if o != "table" && o != "json" && o != "text" {
		return fmt.Errorf("--output: %q is not table or json", o)
	}
	return nil
}

func (a *app) lsCmd() *cobra.Command {
	var source, output, status string
	var all, damaged, withLegacy bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List committed backups, newest first",
		Long: `List the backups in the bucket (those whose backupIndex.json was written),
newest first, for the cluster (--cluster, default "default"; --all-clusters for
every cluster) and optionally one source.

An index whose content does not match its key (cluster, source, backup id,
artifact keys), that cannot be parsed, or that finished in the future by the
bucket's clock is damaged: it is not a backup, and no listing, restore or
retention uses it. --all lists those too, with the reason (in JSON, as
{"damaged": {"key", "cluster", "source", "backupId", "reason"}} after the
backups).

The backups the old cnvrg-capsule service left in the bucket (capsule legacy)
follow, whatever the cluster (in JSON, as {"legacy": {...}}); --legacy=false
leaves them out.

--status failed, canceled or rejected lists the backups that ended so instead,
with the first line of their error, and --status all lists them among the
committed backups (in JSON, as {"failure": {...}}). A failed backup leaves no
index, only its result: they are searched among the newest 1,000 results of the
bucket (by the bucket's clock), since results are not kept per cluster.

VERIFIED says what the newest verification proved: restored (restored into
scratch space and checked), checksum (the stored bytes match; nothing was
restored), failed, or never.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			st := requests.Status(status)
			if st != requests.StatusSucceeded && st != lsAll && !index.IsFailure(st) {
				return fmt.Errorf("--status: %q is not succeeded, failed, canceled, rejected or all", status)
			}
			ctx := cmd.Context()
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			f := index.Filter{Cluster: a.cfg.Cluster, Source: source}
			if all {
				f.Cluster = ""
				if source != "" {
					return errors.New("--source needs a cluster: drop --all-clusters")
				}
			}
			l, err := index.ListAll(ctx, b, f)
			if err != nil {
				return err
			}
			entries := l.Entries
			var failures []index.Failure
			if st != requests.StatusSucceeded {
				ff := index.FailureFilter{Cluster: f.Cluster, Source: source}
				if st != lsAll {
					ff.Statuses, entries = []requests.Status{st}, nil
				}
				if failures, err = index.Failures(ctx, b, ff, a.cfg.Worker.MaxControlObject); err != nil {
					return fmt.Errorf("read the results of failed backups: %w", err)
				}
			}
			rows := lsRows(entries, failures)
			var old []legacy.Backup
			if withLegacy {
				if old, err = a.legacyRows(ctx, b, source); err != nil {
					// A key may read capsule's prefix only: list what it can.
					fmt.Fprintf(a.errOut, "capsule: the old service's backups are not listed: %v\n", err)
				}
			}
			if output == "json" {
				rows := []any{}
				for _, r := range lsRows(entries, failures) {
					if r.failure != nil {
						rows = append(rows, map[string]index.Failure{"failure": *r.failure})
					} else {
						rows = append(rows, r.entry)
					}
				}
				for _, o := range old {
					rows = append(rows, map[string]legacy.Backup{"legacy": o})
				}
				if damaged {
					for _, d := range l.Damaged {
						rows = append(rows, map[string]index.Damaged{"damaged": d})
					}
				}
				if err := writeJSON(a.out, rows); err != nil {
					return err
				}
				if !damaged && len(l.Damaged) > 0 {
					fmt.Fprintf(a.errOut, "%d damaged index(es) skipped; capsule ls --all shows them\n", len(l.Damaged))
				}
				return nil
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			header := "BACKUP ID\tCLUSTER\tSOURCE\tENGINE\tSTATUS\tFINISHED\tSIZE\tSTORED\tVERIFIED"
			if st != requests.StatusSucceeded {
				header += "\tERROR"
			}
			fmt.Fprintln(tw, header)
			for _, r := range rows {
				if x := r.failure; x != nil {
					fmt.Fprintf(tw, "%s\t%s\t%s\t-\t%s\t%s\t-\t-\t-\t%s\n", x.ID, x.Cluster, x.Source, x.Status,
						x.FinishedAt.Local().Format("2006-01-02 15:04:05"), oneLine(x.Error))
					continue
				}
				e := r.entry
				line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", e.BackupID, e.Cluster, e.Source, e.Engine, e.Status,
					e.FinishedAt.Local().Format("2006-01-02 15:04:05"), humanBytes(e.Bytes), humanBytes(e.StoredBytes), verified(e.Verification))
				if st != requests.StatusSucceeded {
					line += "\t"
				}
				fmt.Fprintln(tw, line)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(old) > 0 {
				fmt.Fprintln(a.out, "\nLEGACY: made by the old cnvrg-capsule service (no checksum; restore as legacy:<id>; capsule legacy imports them)")
				tw = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "BACKUP ID\tSOURCE\tENGINE\tDATE\tSTATUS\tSIZE")
				for _, o := range old {
					status := o.Status
					if o.Problem != "" {
						status += " (" + o.Problem + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", o.BackupID, o.Source, o.Engine, o.Date.Local().Format("2006-01-02 15:04:05"), status, humanBytes(o.Bytes))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if damaged && len(l.Damaged) > 0 {
				fmt.Fprintln(a.out, "\nDAMAGED: not listed, restored or deleted")
				tw = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "BACKUP ID\tCLUSTER\tSOURCE\tKEY\tREASON")
				for _, d := range l.Damaged {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.BackupID, d.Cluster, d.Source, d.Key, d.Reason)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if !damaged && len(l.Damaged) > 0 {
				fmt.Fprintf(a.errOut, "%d damaged index(es) skipped; capsule ls --all shows them\n", len(l.Damaged))
			}
			if len(rows) == 0 {
				if st == requests.StatusSucceeded {
					fmt.Fprintf(a.errOut, "no backups in cluster %q\n", f.Cluster)
				} else {
					fmt.Fprintf(a.errOut, "no backups with status %s in cluster %q among the newest %d results\n", status, f.Cluster, index.DefaultResultWindow)
				}
			}
			if len(old) > 0 {
				fmt.Fprintln(a.errOut, "the old service's state files hold secrets: capsule legacy says how to remove them")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "only this source")
	cmd.Flags().BoolVar(&all, "all-clusters", false, "list every cluster")
	cmd.Flags().BoolVar(&damaged, "all", false, "also list damaged indexes (not backups: never listed, restored or deleted), with the reason")
	cmd.Flags().StringVar(&status, "status", "succeeded", "succeeded (committed backups), failed, canceled, rejected, or all")
	cmd.Flags().BoolVar(&withLegacy, "legacy", true, "also list the old cnvrg-capsule service's backups (env "+dstDirEnv+" names their folder)")
	outputFlag(cmd, &output)
	return cmd
}

// lsAll is ls --status all.
const lsAll requests.Status = "all"

// lsRow is a committed backup or a failure.
type lsRow struct {
	entry   index.Entry
	failure *index.Failure
}

// lsRows merges committed backups and failures, newest first.
func lsRows(entries []index.Entry, failures []index.Failure) []lsRow {
	rows := make([]lsRow, 0, len(entries)+len(failures))
	for len(entries)+len(failures) > 0 {
		if len(failures) == 0 || (len(entries) > 0 && !failures[0].FinishedAt.After(entries[0].FinishedAt)) {
			rows = append(rows, lsRow{entry: entries[0]})
			entries = entries[1:]
		} else {
			rows = append(rows, lsRow{failure: &failures[0]})
			failures = failures[1:]
		}
	}
	return rows
}

// verified says what the newest verification proved, and when: only
// "restored" means a restore was done and checked.
func verified(v *index.Verification) string {
	state := index.StateOf(v)
	switch state {
	case index.VerifyNever:
		return state
	case index.VerifyFailed:
		state = "FAILED"
	}
	return state + " " + v.VerifiedAt.Local().Format("2006-01-02 15:04")
}

// oneLine keeps a table row on one line whatever a result holds.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func (a *app) describeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "describe BACKUP_ID",
		Short: "Print a backup's index (JSON) with its newest verification",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			if ref, err := a.backupRef(ctx, args[0]); err != nil {
				return err
			} else if id, ok := requests.LegacyBackupID(ref); ok {
				old, err := a.openLegacy(b)
				if err != nil {
					return err
				}
				x, err := old.Find(ctx, id)
				if err != nil {
					return err
				}
				return writeJSON(a.out, x)
			}
			e, err := index.Find(ctx, b, args[0])
			if err != nil {
				return err
			}
			return writeJSON(a.out, e)
		},
	}
}

func (a *app) statusCmd() *cobra.Command {
	var output string
	var wait bool
	cmd := &cobra.Command{
		Use:   "status REQUEST_ID",
		Short: "Show whether a request is pending, running (with progress) or how it ended",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			var st *client.Status
			if wait {
				st, err = a.follow(ctx, b, args[0])
			} else {
				err = client.Retrying(ctx, "reading the status of "+args[0], func(ctx context.Context) (err error) {
					st, err = client.GetStatus(ctx, b, args[0], a.objectLimit())
					return err
				}, a.clientOpts()...)
			}
			if err != nil {
				return err
			}
			if output == "json" {
				err = writeJSON(a.out, st)
			} else {
				printStatus(a.out, st)
			}
			if err == nil && wait && st.Status != requests.StatusSucceeded {
				err = &exitError{code: 2, err: fmt.Errorf("request %s ended %s: %s", st.ID, st.Status, st.Result.Error)}
			}
			return err
		},
	}
	outputFlag(cmd, &output)
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the request until it ends; exit non-zero unless it succeeded")
	return cmd
}

func printStatus(w io.Writer, st *client.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\n", st.ID)
	fmt.Fprintf(tw, "status\t%s\n", st.Status)
	if r := st.Result; r != nil {
		fmt.Fprintf(tw, "kind\t%s\n", r.RequestKind)
		if r.Source != "" {
			fmt.Fprintf(tw, "source\t%s/%s\n", r.Cluster, r.Source)
		}
		if r.BackupID != "" {
			fmt.Fprintf(tw, "backup\t%s\n", r.BackupID)
		}
		fmt.Fprintf(tw, "attempts\t%d\n", r.Attempts)
		fmt.Fprintf(tw, "worker\t%s\n", r.Worker)
		if !r.StartedAt.IsZero() {
			fmt.Fprintf(tw, "duration\t%s\n", r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond))
		}
		if r.Bytes > 0 {
			fmt.Fprintf(tw, "size\t%s (%s stored)\n", humanBytes(r.Bytes), humanBytes(r.StoredBytes))
		}
		if r.DowntimeMillis > 0 {
			fmt.Fprintf(tw, "downtime\t%s\n", time.Duration(r.DowntimeMillis)*time.Millisecond)
		}
		if r.Error != "" {
			fmt.Fprintf(tw, "error\t%s\n", r.Error)
		}
	} else if l := st.Lease; l != nil {
		fmt.Fprintf(tw, "progress\t%s\n", progressLine(st))
	}
	if st.CancelRequested {
		fmt.Fprintf(tw, "cancel\trequested\n")
	}
	tw.Flush()
}

func (a *app) tailCmd() *cobra.Command {
	var follow bool
	var output string
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print results as they appear",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			seen := map[string]bool{}
			print := func(key string, r requests.Result) error {
				seen[key] = true
				if output == "json" {
					data, _ := json.Marshal(r)
					_, err := fmt.Fprintln(a.out, string(data))
					return err
				}
				line := fmt.Sprintf("%s  %-9s %-7s %s", r.FinishedAt.Local().Format("2006-01-02 15:04:05"), r.Status, r.RequestKind, r.ID)
				if r.Source != "" {
					line += "  " + r.Cluster + "/" + r.Source
				}
				if r.Error != "" {
					line += "  " + r.Error
				}
				_, err := fmt.Fprintln(a.out, line)
				return err
			}
			isSeen := func(k string) bool { return seen[k] }
			if !follow {
				return client.Retrying(ctx, "listing results", func(ctx context.Context) error {
					return client.Results(ctx, b, isSeen, print, a.objectLimit())
				}, a.clientOpts()...)
			}
			if err := client.FollowResults(ctx, b, interval, isSeen, print, a.clientOpts()...); err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new results until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "with --follow: how often to look")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json (one object a line)")
	return cmd
}

func (a *app) cancelCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel REQUEST_ID",
		Short: "Ask the worker running a request to stop it",
		Long: `Write cancel/<id>.json. The worker sees it at its next lease renewal (or
before it starts the request) and ends the request "canceled"; a restore that
is canceled leaves its target as it was.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			if err := client.Cancel(ctx, b, args[0], reason, a.objectLimit()); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "cancel requested for %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the cancel object)")
	return cmd
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print capsule's version and engines",
		Args:  cobra.NoArgs,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return nil // needs no configuration
		},
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(a.out, "capsule %s\nengines: %s\n", version.String(), strings.Join(registry().Names(), ", "))
			return nil
		},
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
