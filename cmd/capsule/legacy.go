package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/cnvrg/capsule/config"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/version"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/requests"
	"github.com/spf13/cobra"
)

// dstDirEnv is the old service's setting of its folder in the bucket,
// which capsule reads the same way.
const dstDirEnv = config.EnvDstDir

// legacyDir is the folder of the old cnvrg-capsule service's backups:
// the configuration's legacy.dstDir, which --dst-dir and
// CNVRG_CAPSULE_DST_DIR set (default legacy.DefaultDir).
func (a *app) legacyDir() string {
	if a.cfg.Legacy.DstDir != "" {
		return a.cfg.Legacy.DstDir
	}
	return legacy.DefaultDir
}

// openLegacy opens the old service's folder in the bucket b is a view
// of (b itself, not a wrapper around it).
func (a *app) openLegacy(b bucket.Bucket) (*legacy.Store, error) {
	root, _ := bucket.Unprefixed(b)
	s, err := legacy.Open(root, a.legacyDir())
	if err != nil {
		return nil, fmt.Errorf("--dst-dir (%s): %w", dstDirEnv, err)
	}
	return s, nil
}

// backupRef turns what a person typed after restore or verify into a
// request's backupId: legacy:<id> for a backup of the old service. A
// mixed-case postgresql-<id> can only be one; an all-lower-case one may
// also be a capsule id, and is the old service's only when the bucket
// has it there and not among capsule's backups.
func (a *app) backupRef(ctx context.Context, arg string) (string, error) {
	if _, ok := requests.LegacyBackupID(arg); ok || requests.ValidateLegacyID(arg) != nil {
		return arg, nil
	}
	if requests.ValidateID(arg) != nil {
		return requests.LegacyPrefix + arg, nil
	}
	b, err := a.openExisting(ctx)
	if err != nil {
		return "", err
	}
	old, err := a.openLegacy(b)
	if err != nil {
		return "", err
	}
	if _, err := old.Find(ctx, arg); err != nil {
		return arg, nil
	}
	switch _, err := index.Find(ctx, b, arg); {
	case errors.Is(err, index.ErrBackupNotFound):
		return requests.LegacyPrefix + arg, nil
	case err != nil && !errors.Is(err, index.ErrDamaged):
		return "", err
	}
	return "", fmt.Errorf("backup id %s is both a capsule backup's and the old service's: say legacy:%s for the old one", arg, arg)
}

func (a *app) legacyCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "legacy",
		Short: "List and import the backups of the old cnvrg-capsule service",
		Long: `The platform's old backup service (cnvrg-capsule 1.0.x) left pg_dump tar
archives and state files under <dst-dir>/ at the root of the bucket
(--dst-dir, env CNVRG_CAPSULE_DST_DIR, default cnvrg-smart-backups). capsule
lists them ("capsule ls" too), restores and verifies them
("capsule restore legacy:<id> --to SOURCE"; a mixed-case id alone works too),
and imports them into capsule backups ("capsule legacy import").

Their state files hold the bucket's keys and the database password in plain
text: capsule reads only the id, date, status, service name and dump file from
them, never runs the commands they hold, and copies none of those values.
"capsule legacy" (or "capsule legacy ls") lists the backups and says how to
remove the files.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.legacyList(cmd.Context(), output)
		},
	}
	outputFlag(cmd, &output)
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the old service's backups, their imports, and the state files to remove",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.legacyList(cmd.Context(), output)
		},
	}
	outputFlag(ls, &output)
	cmd.AddCommand(ls, a.legacyImportCmd())
	return cmd
}

// legacyRow is one old backup as capsule legacy shows it.
type legacyRow struct {
	legacy.Backup
	// ImportedAs names the capsule backup it was imported as, if any.
	ImportedAs string `json:"importedAs,omitempty"`
}

type legacyView struct {
	Dir     string           `json:"dir"`
	Backups []legacyRow      `json:"backups"`
	Damaged []legacy.Damaged `json:"damaged,omitempty"`
}

func (a *app) legacyList(ctx context.Context, output string) error {
	f, err := parseFormat(output)
	if err != nil {
		return err
	}
	b, err := a.openExisting(ctx)
	if err != nil {
		return err
	}
	old, err := a.openLegacy(b)
	if err != nil {
		return err
	}
	l, err := old.List(ctx)
	if err != nil {
		return err
	}
	twins, err := legacy.Imports(ctx, b)
	if err != nil {
		return err
	}
	v := legacyView{Dir: old.Dir(), Backups: []legacyRow{}, Damaged: l.Damaged}
	var keys []string
	for _, x := range l.Backups {
		row := legacyRow{Backup: x}
		if e, ok := twins[x.BackupID]; ok {
			row.ImportedAs = e.Cluster + "/" + e.BackupID
		}
		v.Backups = append(v.Backups, row)
		keys = append(keys, x.StateFiles...)
	}
	for _, d := range l.Damaged {
		keys = append(keys, d.Key)
	}
	warn := a.out
	if f.data() {
		if err := writeData(a.out, f, v); err != nil {
			return err
		}
		warn = a.errOut
	} else {
		a.printLegacy(v)
	}
	if len(keys) > 0 {
		fmt.Fprint(warn, "\n"+legacy.SecretsWarning(keys, a.removeCommand()))
	} else if !f.data() {
		fmt.Fprintf(a.errOut, "no state files of the old service under %s/\n", old.Dir())
	}
	return nil
}

func (a *app) printLegacy(v legacyView) {
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LEGACY BACKUP ID\tSOURCE\tDATE\tSTATUS\tSIZE\tSTATE FILE\tIMPORTED AS")
	for _, r := range v.Backups {
		status := r.Status
		if r.Problem != "" {
			status += " (" + r.Problem + ")"
		}
		imported := r.ImportedAs
		if imported == "" {
			imported = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.BackupID, r.Source, r.Date.Local().Format("2006-01-02 15:04:05"),
			status, humanBytes(r.Bytes), r.Shape, imported)
	}
	tw.Flush()
	if len(v.Damaged) > 0 {
		fmt.Fprintln(a.out, "\nSTATE FILES NOT BELIEVED: not listed, restored or imported")
		tw = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tREASON")
		for _, d := range v.Damaged {
			fmt.Fprintf(tw, "%s\t%s\n", d.Key, d.Reason)
		}
		tw.Flush()
	}
}

// removeCommand is how the operator deletes a key of the bucket, for
// the warning about the state files: aws s3 rm for an S3 bucket, rm for
// a local directory.
func (a *app) removeCommand() string {
	if name, _, err := bucketLocation(a.cfg.Bucket); err == nil {
		return "aws s3 rm s3://" + name + "/"
	}
	raw := a.cfg.Bucket
	if raw == "" {
		raw = bucketurl.DefaultURL()
	}
	if u, err := url.Parse(raw); err == nil && (u.Scheme == "file" || u.Scheme == "") && u.Path != "" {
		return "rm " + filepath.Clean(u.Path) + "/"
	}
	return ""
}

func (a *app) legacyImportCmd() *cobra.Command {
	var output string
	var deleteState bool
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Convert each finished backup of the old service into a capsule backup",
		Long: `Re-store each finished backup of the old service as a capsule backup of this
cluster (--cluster) and the old source's name: its dump, as it was, compressed
and with a sha256, as backup legacy-<old id in lower case>-<hash>, with labels
legacy.id, legacy.date and legacy.statefile. Backups imported before are
skipped, so it is safe to run again, and from several replicas at once: each
writes its own copy, the first index written wins, the others remove theirs.

--delete-statefiles then deletes the state files (they hold the bucket's keys
and the database password) of every imported backup and every failed one; the
dumps stay under <dst-dir>/, and backups still in progress keep theirs.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseFormat(output)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			b, err := a.openBucket(ctx)
			if err != nil {
				return err
			}
			old, err := a.openLegacy(b)
			if err != nil {
				return err
			}
			host, _ := os.Hostname()
			signer, trust, err := a.signing()
			if err != nil {
				return err
			}
			x, err := executor.New(executor.Config{
				Bucket: b, Engines: registry(), Sources: &a.cfg, Worker: fmt.Sprintf("%s/%d", host, os.Getpid()),
				Version: version.String(), Compression: a.cfg.Worker.Compression, RetainFor: a.cfg.Worker.RetainFor,
				Legacy: old, Log: a.log, Recipients: a.cfg.Worker.Encryption.Recipients, Signer: signer, Trust: trust,
			})
			if err != nil {
				return err
			}
			rep, err := legacy.Import(ctx, old, legacy.ImportConfig{
				Bucket: b, Cluster: a.cfg.Cluster, Storer: x, DeleteStateFiles: deleteState, Log: a.log,
			})
			if err != nil {
				return err
			}
			warn := a.out
			if f.data() {
				if err := writeData(a.out, f, rep); err != nil {
					return err
				}
				warn = a.errOut
			} else {
				printImport(a.out, rep)
			}
			if len(rep.StateFilesLeft) > 0 {
				fmt.Fprint(warn, "\n"+legacy.SecretsWarning(rep.StateFilesLeft, a.removeCommand()))
			}
			if n := rep.Failed(); n > 0 {
				return &exitError{code: exitEndedBadly, err: fmt.Errorf("%d of %d old backups were not imported", n, len(rep.Results))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&deleteState, "delete-statefiles", false, "delete the state files of imported and failed backups (they hold the bucket's keys and the database password)")
	outputFlag(cmd, &output)
	return cmd
}

func printImport(w io.Writer, rep *legacy.ImportReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LEGACY BACKUP ID\tOUTCOME\tBACKUP\tSIZE\tSTORED\tDETAIL")
	for _, r := range rep.Results {
		backup := "-"
		if r.BackupID != "" {
			backup = r.Cluster + "/" + r.BackupID
		}
		detail := r.Detail
		if len(r.StateFilesDeleted) > 0 {
			if detail != "" {
				detail += "; "
			}
			detail += fmt.Sprintf("%d state file(s) deleted", len(r.StateFilesDeleted))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.LegacyID, r.Outcome, backup, humanBytes(r.Bytes), humanBytes(r.StoredBytes), detail)
	}
	tw.Flush()
	for _, d := range rep.Damaged {
		fmt.Fprintf(w, "not imported: %s: %s\n", d.Key, d.Reason)
	}
}

// legacyRows lists the old service's backups for capsule ls, of source
// when it is set; nil when the bucket has none.
func (a *app) legacyRows(ctx context.Context, b bucket.Bucket, source string) ([]legacy.Backup, error) {
	old, err := a.openLegacy(b)
	if err != nil {
		return nil, err
	}
	l, err := old.List(ctx)
	if err != nil {
		return nil, err
	}
	var rows []legacy.Backup
	for _, x := range l.Backups {
		if source == "" || x.Source == source {
			rows = append(rows, x)
		}
	}
	return rows, nil
}
