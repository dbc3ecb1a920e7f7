package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/version"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/spf13/cobra"
)

type lsFlags struct {
	source, output, status   string
	all, damaged, withLegacy bool
}

func (a *app) lsCmd() *cobra.Command {
	var o lsFlags
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List committed backups, newest first",
		Long: `List the backups in the bucket (those whose backupIndex.json was written),
newest first, for the cluster (--cluster, default "default"; --all-clusters for
every cluster) and optionally one source. -o wide adds the duration, the
attempt, the worker, the signature and the labels.

An index whose content does not match its key (cluster, source, backup id,
artifact keys), that cannot be parsed, or that finished in the future by the
bucket's clock is damaged: it is not a backup, and no listing, restore or
retention uses it. With --source, a source with point-in-time recovery also
shows its recoverable window (in JSON, as {"pitr": {...}} first). --all lists those too, with the reason (in JSON, as
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
restored), failed, or never.

With trusted keys (--trusted-keys, signatures.* in the config), a backup whose
index no trusted key signed shows STATUS untrusted: restores, verifications and
retention refuse it (capsule describe says why). -o wide adds SIGNATURE:
signed, unsigned (accepted with --allow-unsigned), untrusted, or unchecked (no
trusted keys).`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runLs(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.source, "source", "", "only this source")
	cmd.Flags().BoolVar(&o.all, "all-clusters", false, "list every cluster")
	cmd.Flags().BoolVar(&o.damaged, "all", false, "also list damaged indexes (not backups: never listed, restored or deleted), with the reason")
	cmd.Flags().StringVar(&o.status, "status", "succeeded", "succeeded (committed backups), failed, canceled, rejected, or all")
	cmd.Flags().BoolVar(&o.withLegacy, "legacy", true, "also list the old cnvrg-capsule service's backups (env "+dstDirEnv+" names their folder)")
	outputFlag(cmd, &o.output)
	_ = cmd.RegisterFlagCompletionFunc("source", a.completeSources)
	return cmd
}

func (a *app) runLs(ctx context.Context, o lsFlags) error {
	f, err := parseFormat(o.output)
	if err != nil {
		return err
	}
	st := requests.Status(o.status)
	if st != requests.StatusSucceeded && st != lsAll && !index.IsFailure(st) {
		return usageErr(fmt.Errorf("--status: %q is not succeeded, failed, canceled, rejected or all", o.status))
	}
	filter := index.Filter{Cluster: a.cfg.Cluster, Source: o.source}
	if o.all {
		filter.Cluster = ""
		if o.source != "" {
			return usageErr(errors.New("--source needs a cluster: drop --all-clusters"))
		}
	}
	b, err := a.openExisting(ctx)
	if err != nil {
		return err
	}
	var signer *index.Signer
	if signer, filter.Trust, err = a.cfg.Signing(); err != nil {
		return err
	}
	l, err := index.Catalog{Bucket: b, Writer: b, Signer: signer}.List(ctx, filter)
	if err != nil {
		return err
	}
	entries := l.Entries
	var failures []index.Failure
	if st != requests.StatusSucceeded {
		ff := index.FailureFilter{Cluster: filter.Cluster, Source: o.source}
		if st != lsAll {
			ff.Statuses, entries = []requests.Status{st}, nil
		}
		if failures, err = index.Failures(ctx, b, ff, a.cfg.Worker.MaxControlObject); err != nil {
			return fmt.Errorf("read the results of failed backups: %w", err)
		}
	}
	rows := lsRows(entries, failures)
	var old []legacy.Backup
	if o.withLegacy {
		if old, err = a.legacyRows(ctx, b, o.source); err != nil {
			// A key may read capsule's prefix only: list what it can.
			fmt.Fprintf(a.errOut, "capsule: the old service's backups are not listed: %v\n", err)
		}
	}
	var win *pitr.Window
	if o.source != "" && st == requests.StatusSucceeded {
		if win, err = pitr.RecoverableWindow(ctx, b, filter.Cluster, o.source, filter.Trust); err != nil {
			fmt.Fprintf(a.errOut, "capsule: the point-in-time window is not shown: %v\n", err)
		}
	}
	if f.data() {
		data := []any{}
		if win != nil {
			data = append(data, map[string]*pitr.Window{"pitr": win})
		}
		for _, r := range rows {
			if r.failure != nil {
				data = append(data, map[string]index.Failure{"failure": *r.failure})
			} else {
				data = append(data, r.entry)
			}
		}
		for _, x := range old {
			data = append(data, map[string]legacy.Backup{"legacy": x})
		}
		if o.damaged {
			for _, d := range l.Damaged {
				data = append(data, map[string]index.Damaged{"damaged": d})
			}
		}
		if err := writeData(a.out, f, data); err != nil {
			return err
		}
	} else if err := a.printBackups(f, rows, st != requests.StatusSucceeded, old, l.Damaged, o.damaged); err != nil {
		return err
	}
	if !o.damaged && len(l.Damaged) > 0 {
		fmt.Fprintf(a.errOut, "%d damaged index(es) skipped; capsule ls --all shows them\n", len(l.Damaged))
	}
	if n := untrusted(entries); n > 0 {
		fmt.Fprintf(a.errOut, "%d untrusted backup(s): no trusted key signed them, and restores, verifications and retention refuse them; capsule describe ID says why\n", n)
	}
	if f.data() {
		return nil
	}
	if win != nil {
		fmt.Fprintf(a.out, "\npoint in time: %s can be restored to %s\n", o.source, windowText(win))
	}
	if len(rows) == 0 {
		if st == requests.StatusSucceeded {
			fmt.Fprintf(a.errOut, "no backups in cluster %q\n", filter.Cluster)
		} else {
			fmt.Fprintf(a.errOut, "no backups with status %s in cluster %q among the newest %d results\n", o.status, filter.Cluster, index.DefaultResultWindow)
		}
	}
	if len(old) > 0 {
		fmt.Fprintln(a.errOut, "the old service's state files hold secrets: capsule legacy says how to remove them")
	}
	return nil
}

func (a *app) printBackups(f format, rows []lsRow, withErrors bool, old []legacy.Backup, damaged []index.Damaged, withDamaged bool) error {
	cell := func(e func(index.Entry) string, x func(*index.Failure) string) func(lsRow) string {
		return func(r lsRow) string {
			if r.failure != nil {
				return x(r.failure)
			}
			return e(r.entry)
		}
	}
	none := func(*index.Failure) string { return "-" }
	cols := []column[lsRow]{
		{head: "BACKUP ID", cell: cell(func(e index.Entry) string { return e.BackupID }, func(x *index.Failure) string { return x.ID })},
		{head: "CLUSTER", cell: cell(func(e index.Entry) string { return e.Cluster }, func(x *index.Failure) string { return x.Cluster })},
		{head: "SOURCE", cell: cell(func(e index.Entry) string { return e.Source }, func(x *index.Failure) string { return x.Source })},
		{head: "ENGINE", cell: cell(func(e index.Entry) string { return e.Engine }, none)},
		{head: "STATUS", cell: cell(lsStatus, func(x *index.Failure) string { return string(x.Status) })},
		{head: "FINISHED", cell: cell(func(e index.Entry) string { return a.when(e.FinishedAt) }, func(x *index.Failure) string { return a.when(x.FinishedAt) })},
		{head: "DURATION", wide: true, cell: cell(func(e index.Entry) string { return humanDuration(e.FinishedAt.Sub(e.StartedAt)) }, none)},
		{head: "SIZE", cell: cell(func(e index.Entry) string { return humanBytes(e.Bytes) }, none)},
		{head: "STORED", cell: cell(func(e index.Entry) string { return humanBytes(e.StoredBytes) }, none)},
		{head: "VERIFIED", cell: cell(func(e index.Entry) string { return a.verified(e.Verification) }, none)},
		{head: "ATTEMPT", wide: true, cell: cell(func(e index.Entry) string { return fmt.Sprint(e.Attempt) }, func(x *index.Failure) string { return fmt.Sprint(x.Attempts) })},
		{head: "WORKER", wide: true, cell: cell(func(e index.Entry) string { return dash(e.Worker) }, none)},
		{head: "SIGNATURE", wide: true, cell: cell(func(e index.Entry) string { return e.Signature.State }, none)},
		{head: "LABELS", wide: true, cell: cell(func(e index.Entry) string { return dash(kvList(e.Labels)) }, none)},
	}
	if withErrors {
		cols = append(cols, column[lsRow]{head: "ERROR", cell: cell(func(index.Entry) string { return "" }, func(x *index.Failure) string { return oneLine(x.Error) })})
	}
	if err := printTable(a.out, f, rows, cols); err != nil {
		return err
	}
	if len(old) > 0 {
		fmt.Fprintln(a.out, "\nLEGACY: made by the old cnvrg-capsule service (no checksum; restore as legacy:<id>; capsule legacy imports them)")
		err := printTable(a.out, f, old, []column[legacy.Backup]{
			{head: "BACKUP ID", cell: func(x legacy.Backup) string { return x.BackupID }},
			{head: "SOURCE", cell: func(x legacy.Backup) string { return x.Source }},
			{head: "ENGINE", cell: func(x legacy.Backup) string { return x.Engine }},
			{head: "DATE", cell: func(x legacy.Backup) string { return a.when(x.Date) }},
			{head: "STATUS", cell: func(x legacy.Backup) string {
				if x.Problem != "" {
					return x.Status + " (" + x.Problem + ")"
				}
				return x.Status
			}},
			{head: "SIZE", cell: func(x legacy.Backup) string { return humanBytes(x.Bytes) }},
			{head: "DUMP", wide: true, cell: func(x legacy.Backup) string { return dash(x.Dump) }},
		})
		if err != nil {
			return err
		}
	}
	if withDamaged && len(damaged) > 0 {
		fmt.Fprintln(a.out, "\nDAMAGED: not listed, restored or deleted")
		return printTable(a.out, f, damaged, []column[index.Damaged]{
			{head: "BACKUP ID", cell: func(d index.Damaged) string { return d.BackupID }},
			{head: "CLUSTER", cell: func(d index.Damaged) string { return d.Cluster }},
			{head: "SOURCE", cell: func(d index.Damaged) string { return d.Source }},
			{head: "KEY", cell: func(d index.Damaged) string { return d.Key }},
			{head: "REASON", cell: func(d index.Damaged) string { return d.Reason }},
		})
	}
	return nil
}

// verified says what the newest verification proved, and when: only
// "restored" means a restore was done and checked.
func (a *app) verified(v *index.Verification) string {
	state := index.StateOf(v)
	switch state {
	case index.VerifyNever:
		return state
	case index.VerifyFailed:
		state = "FAILED"
	}
	return state + " " + a.when(v.VerifiedAt)
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

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// kvList prints a map as k=v pairs in key order.
func kvList[V any](m map[string]V) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := any(m[k])
		s, ok := v.(string)
		if !ok {
			data, _ := json.Marshal(v)
			s = string(data)
		}
		parts = append(parts, k+"="+s)
	}
	return strings.Join(parts, ", ")
}

func (a *app) describeCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "describe BACKUP_ID",
		Short: "Show a backup: its index, artifacts and newest verification",
		Long: `Show a backup for people (-o table; -o wide adds the artifacts' full sha256
and the engine's details), or its index with the newest verification as JSON
or YAML (-o json, -o yaml) for scripts.`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeBackups,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseFormat(output)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			b, err := a.openExisting(ctx)
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
				if f.data() {
					return writeData(a.out, f, x)
				}
				return a.describeLegacy(x)
			}
			_, trust, err := a.cfg.Signing()
			if err != nil {
				return err
			}
			e, err := index.FindTrusted(ctx, b, args[0], trust)
			if err != nil {
				return err
			}
			var win *pitr.Window
			var winErr error
			if e.Format == postgres.FormatBase {
				if win, winErr = pitr.RecoverableWindow(ctx, b, e.Cluster, e.Source, trust); winErr != nil {
					fmt.Fprintf(a.errOut, "capsule: the point-in-time window is not shown: %v\n", winErr)
				}
			}
			if f.data() {
				if win != nil {
					return writeData(a.out, f, describedBase{Entry: e, PITR: win})
				}
				return writeData(a.out, f, e)
			}
			return a.describeBackup(f, e, win, winErr)
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

// describedBase is describe's data for a base backup: its index and
// the source's recoverable window under "pitr".
type describedBase struct {
	index.Entry
	PITR *pitr.Window `json:"pitr"`
}

// windowText says to which moments a source can be restored.
func windowText(w *pitr.Window) string {
	return fmt.Sprintf("any moment from %s to %s (LSN %s to %s, %d base backups, %d WAL objects)",
		w.Earliest.UTC().Format(time.RFC3339), w.Latest.UTC().Format(time.RFC3339Nano), w.EarliestLSN, w.LatestLSN, w.BaseBackups, w.WALObjects)
}

// describeBackup prints a backup; win, for a base backup, is its
// source's recoverable window (winErr when it could not be read).
func (a *app) describeBackup(f format, e index.Entry, win *pitr.Window, winErr error) error {
	engine := e.Engine
	if e.Format != "" {
		engine += " (format " + e.Format + ")"
	}
	versions := e.ServerVersion
	if e.ToolVersion != "" {
		versions = strings.TrimPrefix(versions+", tool "+e.ToolVersion, ", ")
	}
	verified := "never"
	if v := e.Verification; v != nil {
		verified = a.verified(v) + " by request " + v.RequestID
		if v.Target != "" {
			verified += " into " + v.Target
		}
		if v.Error != "" {
			verified += ": " + v.Error
		}
	}
	retain := ""
	if !e.RetainUntil.IsZero() {
		retain = a.when(e.RetainUntil)
	}
	fields := [][2]string{
		{"Backup", e.BackupID},
		{"Cluster", e.Cluster},
		{"Source", e.Source},
		{"Plan", e.Plan},
		{"Engine", engine},
		{"Versions", versions},
		{"Status", string(e.Status)},
		{"Signature", describeSignature(e.Signature)},
		{"Started", a.when(e.StartedAt)},
		{"Finished", a.when(e.FinishedAt) + " (" + humanDuration(e.FinishedAt.Sub(e.StartedAt)) + ")"},
		{"Size", humanBytes(e.Bytes) + " (" + humanBytes(e.StoredBytes) + " stored)"},
		{"Attempt", fmt.Sprint(e.Attempt)},
		{"Worker", e.Worker},
		{"Capsule", e.CapsuleVersion},
		{"Labels", kvList(e.Labels)},
		{"Source info", kvList(e.SourceInfo)},
		{"Retain until", retain},
		{"Encryption", encryptionNote(e.BackupIndex)},
		{"Verified", verified},
	}
	if e.Format == postgres.FormatBase {
		recoverable := "nowhere yet: no WAL in the bucket follows a base backup of " + e.Source
		switch {
		case winErr != nil:
			recoverable = "unknown (the window could not be read)"
		case win != nil:
			recoverable = windowText(win)
		}
		fields = append(fields, [2]string{"Recoverable", recoverable})
	}
	if f == formatWide {
		fields = append(fields, [2]string{"Details", kvList(e.Details)})
	}
	if err := printFields(a.out, fields); err != nil {
		return err
	}
	fmt.Fprintln(a.out, "\nArtifacts:")
	if err := printTable(a.out, f, e.Artifacts, []column[index.Artifact]{
		{head: "NAME", cell: func(x index.Artifact) string { return x.Name }},
		{head: "SIZE", cell: func(x index.Artifact) string { return humanBytes(x.Size) }},
		{head: "STORED", cell: func(x index.Artifact) string { return humanBytes(x.StoredSize) }},
		{head: "COMPRESSION", cell: func(x index.Artifact) string { return x.Compression }},
		{head: "ENCRYPTION", cell: func(x index.Artifact) string {
			if x.Encryption == nil {
				return "none"
			}
			return x.Encryption.Scheme
		}},
		{head: "SHA256", cell: func(x index.Artifact) string {
			if f == formatWide || len(x.SHA256) < 16 {
				return x.SHA256
			}
			return x.SHA256[:16] + "…"
		}},
		{head: "KEY", wide: true, cell: func(x index.Artifact) string { return x.Key }},
	}); err != nil {
		return err
	}
	if v := e.Verification; v != nil && len(v.Checks) > 0 {
		fmt.Fprintln(a.out, "\nChecks of the newest verification:")
		return printTable(a.out, f, v.Checks, []column[index.CheckResult]{
			{head: "CHECK", cell: func(c index.CheckResult) string { return c.Name }},
			{head: "OK", cell: func(c index.CheckResult) string { return map[bool]string{true: "ok", false: "FAILED"}[c.OK] }},
			{head: "DETAIL", cell: func(c index.CheckResult) string { return dash(c.Detail) }},
		})
	}
	return nil
}

// encryptionNote says which keys open a backup: its recipients' public
// keys (key rotation changes them for new backups only).
func encryptionNote(x *index.BackupIndex) string {
	keys := x.Recipients()
	if len(keys) == 0 {
		return "none (stored in the clear)"
	}
	return "age; any identity of these keys opens it: " + strings.Join(keys, ", ")
}

// lsStatus is a backup's status, or "untrusted" when no trusted key
// signed its index: whatever it claims, nothing uses it.
func lsStatus(e index.Entry) string {
	if !e.Trusted() {
		return index.SigUntrusted
	}
	return string(e.Status)
}

func untrusted(entries []index.Entry) int {
	n := 0
	for _, e := range entries {
		if !e.Trusted() {
			n++
		}
	}
	return n
}

func describeSignature(s index.Signature) string {
	switch s.State {
	case index.SigSigned:
		return "signed by " + s.Signer
	case index.SigUntrusted:
		return "UNTRUSTED: " + s.Reason + " (restores, verifications and retention refuse it)"
	case index.SigUnchecked:
		return "not checked (no trusted keys: --trusted-keys, signatures.trustedKeys)"
	}
	return s.State + ": " + s.Reason
}

func (a *app) describeLegacy(x *legacy.Backup) error {
	return printFields(a.out, [][2]string{
		{"Backup", "legacy:" + x.BackupID + " (made by the old cnvrg-capsule service)"},
		{"Source", x.Source},
		{"Engine", x.Engine},
		{"Date", a.when(x.Date)},
		{"Status", x.Status},
		{"Problem", x.Problem},
		{"Size", humanBytes(x.Bytes)},
		{"Dump", x.Dump},
		{"Checksum", x.Checksum},
		{"Verification", x.Verification},
		{"State files", strings.Join(x.StateFiles, ", ") + " (they hold secrets: capsule legacy says how to remove them)"},
	})
}

func (a *app) statusCmd() *cobra.Command {
	var output string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status REQUEST_ID",
		Short: "Show whether a request is pending, running (with progress) or how it ended",
		Long: `Show where a request stands: pending (and, once it has waited a while, which
workers were seen working on the bucket lately), running (with the worker's
progress: percentage, rate and time left where the total is known), or its
result (a restore's target, the previous copy it kept and the sessions it
ended). With --wait, follow it until it ends; the exit code says how.`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeRequests,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseFormat(output)
			if err != nil {
				return err
			}
			if timeout != 0 && !wait {
				return usageErr(errors.New("--timeout needs --wait"))
			}
			ctx := cmd.Context()
			b, err := a.openExisting(ctx)
			if err != nil {
				return err
			}
			if wait {
				return a.waitAndPrint(ctx, b, args[0], timeout, f)
			}
			var st *client.Status
			err = client.Retrying(ctx, "reading the status of "+args[0], func(ctx context.Context) (err error) {
				st, err = client.GetStatus(ctx, b, args[0], a.objectLimit())
				return err
			}, a.clientOpts()...)
			if errors.Is(err, client.ErrUnknownRequest) {
				return usageErr(err)
			}
			if err != nil {
				return err
			}
			if f.data() {
				return writeData(a.out, f, st)
			}
			return a.printStatus(ctx, b, st, f)
		},
	}
	outputFlag(cmd, &output)
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the request until it ends; exit 0 if it succeeded, 2 if not")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait: give up waiting after this long, exit 3 (0: never)")
	return cmd
}

// printStatus prints a request's status for people. A restore's result
// names the backup and where it came from, the target, the copy of the
// target's previous data it kept and the sessions it ended.
func (a *app) printStatus(ctx context.Context, b bucket.Reader, st *client.Status, f format) error {
	fields := [][2]string{{"Request", st.ID}, {"Status", string(st.Status)}}
	if r := st.Result; r != nil {
		fields = append(fields, [2]string{"Kind", string(r.RequestKind)})
		switch r.RequestKind {
		case requests.KindBackup:
			fields = append(fields, [2]string{"Source", r.Cluster + "/" + r.Source}, [2]string{"Backup", r.BackupID})
		default:
			backup := r.BackupID
			if r.Source != "" {
				backup += " (of " + r.Cluster + "/" + r.Source + ")"
			}
			fields = append(fields, [2]string{"Backup", backup})
			fields = append(fields, restoreFields(r)...)
		}
		fields = append(fields,
			[2]string{"Started", a.when(r.StartedAt)},
			[2]string{"Finished", a.when(r.FinishedAt)},
			[2]string{"Attempts", fmt.Sprint(r.Attempts)},
			[2]string{"Worker", r.Worker},
		)
		if !r.StartedAt.IsZero() {
			fields = append(fields, [2]string{"Duration", humanDuration(r.FinishedAt.Sub(r.StartedAt))})
		}
		if r.Bytes > 0 {
			fields = append(fields, [2]string{"Size", humanBytes(r.Bytes) + " (" + humanBytes(r.StoredBytes) + " stored)"})
		}
		if r.DowntimeMillis > 0 {
			fields = append(fields, [2]string{"Downtime", (time.Duration(r.DowntimeMillis) * time.Millisecond).String()})
		}
		if f == formatWide {
			fields = append(fields, [2]string{"Details", kvList(r.Details)})
		}
		fields = append(fields, [2]string{"Error", r.Error})
	} else {
		if q := st.Request; q != nil {
			fields = append(fields, [2]string{"Kind", string(q.Kind)})
			if q.Source != "" {
				fields = append(fields, [2]string{"Source", q.ClusterOrDefault() + "/" + q.Source})
			}
			if q.BackupID != "" {
				fields = append(fields, [2]string{"Backup", q.BackupID}, [2]string{"Target", q.Target})
			}
		}
		if st.Lease != nil {
			fields = append(fields, [2]string{"Progress", strings.TrimPrefix(progressLine(st), "running: ")})
		} else if p, err := client.Explain(ctx, b, st.ID, a.objectLimit()); err == nil && p.Waiting >= a.explainAfter {
			fields = append(fields, [2]string{"Waiting", p.String()})
		}
	}
	if st.CancelRequested {
		fields = append(fields, [2]string{"Cancel", "requested"})
	}
	return printFields(a.out, fields)
}

// restoreFields are what a Restore's (or Verify's) result says about its
// target: where the backup went, the previous data it kept, the
// sessions it ended.
func restoreFields(r *requests.Result) [][2]string {
	d := r.Details
	str := func(k string) string {
		if v, ok := d[k]; ok && v != nil {
			if s, ok := v.(string); ok {
				return s
			}
			data, _ := json.Marshal(v)
			return string(data)
		}
		return ""
	}
	out := [][2]string{{"Target", str("target")}}
	if pt, ok := d["pointInTime"].(map[string]any); ok {
		// A point-in-time restore: where recovery ended, in PostgreSQL's
		// words, and the WAL position.
		s := func(k string) string { v, _ := pt[k].(string); return v }
		out = append(out, [2]string{"Recovered", strings.TrimSpace(s("recoveredReason") + " (LSN " + s("recoveredLSN") + ", asked: " + s("target") + ")")})
	}
	if r.RequestKind == requests.KindRestore && r.Status == requests.StatusSucceeded {
		prev := str("previous")
		if prev == "" {
			prev = "none kept"
			if v, ok := d["droppedPrevious"]; ok && v == true {
				prev = "dropped (--drop-previous)"
			}
		} else {
			prev += " (capsule prune-previous removes it)"
		}
		out = append(out, [2]string{"Previous", prev})
		if n := str("sessionsEnded"); n != "" {
			out = append(out, [2]string{"Sessions ended", n})
		}
	}
	if r.RequestKind == requests.KindVerify {
		if ok, found := d["ok"]; found {
			out = append(out, [2]string{"Verified", map[bool]string{true: "ok", false: "FAILED"}[ok == true]})
		}
	}
	return out
}

type tailFlags struct {
	follow      bool
	output      string
	interval    time.Duration
	allClusters bool
	source      string
	status      []string
	kind        string
}

func (a *app) tailCmd() *cobra.Command {
	var o tailFlags
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print results as they appear, one line each",
		Long: `Print the results of requests, one line each, oldest first: of the cluster
(--cluster; --all-clusters for every one), narrowed by --source, --status and
--kind. With --follow, keep printing new results until interrupted. -o json
prints one JSON object a line, -o yaml one document each.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runTail(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "keep printing new results until interrupted")
	cmd.Flags().DurationVar(&o.interval, "interval", 2*time.Second, "with --follow: how often to look")
	cmd.Flags().BoolVar(&o.allClusters, "all-clusters", false, "results of every cluster")
	cmd.Flags().StringVar(&o.source, "source", "", "only results of this source (a backup's source, or a restore's backup's)")
	cmd.Flags().StringSliceVar(&o.status, "status", nil, "only these statuses: succeeded, failed, rejected, canceled (comma-separated)")
	cmd.Flags().StringVar(&o.kind, "kind", "", "only this kind: backup, restore or verify")
	outputFlag(cmd, &o.output)
	_ = cmd.RegisterFlagCompletionFunc("source", a.completeSources)
	_ = cmd.RegisterFlagCompletionFunc("status", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"succeeded", "failed", "rejected", "canceled"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func (a *app) runTail(ctx context.Context, o tailFlags) error {
	f, err := parseFormat(o.output)
	if err != nil {
		return err
	}
	statuses := map[requests.Status]bool{}
	for _, s := range o.status {
		st := requests.Status(strings.ToLower(strings.TrimSpace(s)))
		if !st.Ended() {
			return usageErr(fmt.Errorf("--status %q: want succeeded, failed, rejected or canceled", s))
		}
		statuses[st] = true
	}
	var kind requests.Kind
	switch strings.ToLower(o.kind) {
	case "":
	case "backup", "restore", "verify":
		kind = requests.Kind(strings.ToUpper(o.kind[:1]) + strings.ToLower(o.kind[1:]))
	default:
		return usageErr(fmt.Errorf("--kind %q: want backup, restore or verify", o.kind))
	}
	b, err := a.openExisting(ctx)
	if err != nil {
		return err
	}
	keep := func(r requests.Result) bool {
		// A result without a cluster (a request too malformed to say)
		// belongs to no cluster's view but every one's: it is a mistake
		// someone should see.
		if !o.allClusters && r.Cluster != "" && r.Cluster != a.cfg.Cluster {
			return false
		}
		if o.source != "" && r.Source != o.source {
			return false
		}
		if len(statuses) > 0 && !statuses[r.Status] {
			return false
		}
		return kind == "" || r.RequestKind == kind
	}
	seen := map[string]bool{}
	print := func(key string, r requests.Result) error {
		seen[key] = true
		if !keep(r) {
			return nil
		}
		if f.data() {
			return writeLine(a.out, f, r)
		}
		_, err := fmt.Fprintln(a.out, a.tailLine(r, f == formatWide))
		return err
	}
	isSeen := func(k string) bool { return seen[k] }
	if !o.follow {
		return client.Retrying(ctx, "listing results", func(ctx context.Context) error {
			return client.Results(ctx, b, isSeen, print, a.objectLimit())
		}, a.clientOpts()...)
	}
	if err := client.FollowResults(ctx, b, o.interval, isSeen, print, a.clientOpts()...); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// tailLine is one result on one line: its time, status, kind, id and
// source, and the first line's worth of its error.
func (a *app) tailLine(r requests.Result, wide bool) string {
	line := fmt.Sprintf("%s  %-9s %-7s %s", a.when(r.FinishedAt), r.Status, r.RequestKind, r.ID)
	if r.Source != "" {
		line += "  " + r.Cluster + "/" + r.Source
	}
	if r.RequestKind == requests.KindRestore {
		if t, ok := r.Details["target"].(string); ok && t != "" && t != r.Source {
			line += " -> " + t
		}
	}
	if wide {
		line += fmt.Sprintf("  worker=%s attempts=%d", dash(r.Worker), r.Attempts)
		if !r.StartedAt.IsZero() {
			line += " duration=" + humanDuration(r.FinishedAt.Sub(r.StartedAt))
		}
		if r.Bytes > 0 {
			line += " size=" + strings.ReplaceAll(humanBytes(r.Bytes), " ", "")
		}
	}
	if r.Error != "" {
		line += "  " + oneLine(r.Error)
	}
	return line
}

func (a *app) cancelCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel REQUEST_ID",
		Short: "Ask the worker running a request to stop it",
		Long: `Write cancel/<id>.json. The worker sees it at its next lease renewal (or
before it starts the request) and ends the request "canceled"; a restore that
is canceled leaves its target as it was.`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeRequests,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			b, err := a.openExisting(ctx)
			if err != nil {
				return err
			}
			if err := client.Cancel(ctx, b, args[0], reason, a.objectLimit()); err != nil {
				if errors.Is(err, client.ErrUnknownRequest) {
					return usageErr(err)
				}
				return err
			}
			fmt.Fprintf(a.out, "cancel requested for %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the cancel object)")
	return cmd
}

// versionInfo is what capsule version prints.
type versionInfo struct {
	Version string   `json:"version"`
	Engines []string `json:"engines"`
}

func (a *app) versionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print capsule's version and engines (also: capsule --version)",
		Args:  args(cobra.NoArgs),
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return nil // needs no configuration
		},
		RunE: func(*cobra.Command, []string) error {
			f, err := parseFormat(output)
			if err != nil {
				return err
			}
			v := versionInfo{Version: version.String(), Engines: registry().Names()}
			if f.data() {
				return writeData(a.out, f, v)
			}
			_, err = fmt.Fprintf(a.out, "capsule %s\nengines: %s\n", v.Version, strings.Join(v.Engines, ", "))
			return err
		},
	}
	outputFlag(cmd, &output)
	return cmd
}
