package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketcheck"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/spf13/cobra"
)

func (a *app) bucketCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bucket",
		Short: "Create the bucket, or test the bucket itself",
		Args:  args(cobra.NoArgs),
	}
	cmd.AddCommand(a.bucketCheckCmd(), a.bucketCreateCmd())
	return cmd
}

func (a *app) bucketCheckCmd() *cobra.Command {
	var (
		output          string
		rounds, writers int
		uploadMiB       int
	)
	cmd := &cobra.Command{
		Use:   "check [URL]",
		Short: "Test whether a bucket keeps the promises capsule relies on",
		Long: `Test whether the object store behind a bucket (URL, else the configured one)
keeps the promises capsule's correctness rests on. Providers differ: Google's
S3 interface ignores If-None-Match, Backblaze B2 refuses conditional writes,
an older SeaweedFS let several create-only writes of one key all succeed. A
worker on such a bucket would run requests twice and never know.

The check writes under check/<random>/ below the bucket's prefix, removes
everything it wrote (also when it fails or is interrupted), and reports:

  create-only         --writers writers race a create-only write of one new
                      key, --rounds times: exactly one must win each round,
                      and a create-only write of an existing key must fail.
                      (critical: claims and commit marks are create-only)
  if-match            a write with If-Match on the current ETag wins, one on
                      a stale ETag or a missing key fails.
                      (critical: lease renewals and takeovers)
  conditional-upload  a create-only streaming upload commits on a new key
                      and fails on an existing one; --upload-size-mib beyond
                      5 makes it multipart on S3. (critical)
  pending-uploads     an upload that was started and not committed is listed
                      by its folder, and gone once aborted. Garbage collection
                      finds what crashed workers left this way; a failure is a
                      warning (storage leaks, nothing breaks).
  clock-skew          the bucket's clock (the Date of its answers) against
                      this machine's. Leases follow the bucket's clock; above
                      10s is a warning, above 1m a failure (a backup whose
                      times run 5m ahead of the bucket is judged damaged).
  checksums           S3 only: whether the server takes a write with a CRC32
                      checksum and returns it on a read, and when capsule's
                      client sends checksums (always on AWS, only where
                      required elsewhere). Information.
  cleanup             everything the check wrote is gone.

Every worker runs the critical part at start-up and refuses to claim on a
bucket that fails it (capsule worker --unsafe-bucket overrides).

Exit status: 0 the bucket is safe; 2 it is unsafe (the error names every
property that failed); 1 the check could not run (a bad URL, an unreachable
bucket, missing permissions), as for every other command.`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseFormat(output)
			if err != nil {
				return err
			}
			switch {
			case rounds < 1:
				return fmt.Errorf("--rounds: must be at least 1, got %d", rounds)
			case writers < 2:
				return fmt.Errorf("--writers: must be at least 2, got %d", writers)
			case uploadMiB < 1 || uploadMiB > 1024:
				return fmt.Errorf("--upload-size-mib: must be 1 to 1024, got %d", uploadMiB)
			}
			raw := a.cfg.Bucket
			if len(args) == 1 {
				raw = args[0]
			}
			ctx := cmd.Context()
			b, desc, probe, err := a.openForCheck(ctx, raw)
			if err != nil {
				return err
			}
			o := bucketcheck.Full()
			o.Rounds, o.Writers, o.UploadSize, o.Checksums = rounds, writers, int64(uploadMiB)<<20, probe
			if probe != nil && o.UploadSize <= s3.DefaultPartSize {
				// S3 opens a multipart upload only once a part is full.
				o.PendingUploads = false
				fmt.Fprintf(a.errOut, "capsule: pending-uploads is not checked: on S3 an upload is open only beyond one part (%d MiB); raise --upload-size-mib\n", s3.DefaultPartSize>>20)
			}
			rep, err := bucketcheck.Run(ctx, b, o)
			if perr := printCheck(a, f, desc, rep); perr != nil && err == nil {
				err = perr
			}
			if err != nil {
				return err
			}
			if uerr := rep.Err(); uerr != nil {
				return &exitError{code: exitEndedBadly, err: uerr}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&rounds, "rounds", 10, "rounds of create-only races")
	f.IntVar(&writers, "writers", 8, "writers in each race")
	f.IntVar(&uploadMiB, "upload-size-mib", 17, "MiB written in each streaming upload (more than 5 makes it multipart on S3)")
	outputFlag(cmd, &output)
	return cmd
}

// openForCheck opens the bucket rawURL names (the local default when
// empty) and, for S3, the checksum probe: it runs on the bucket without
// its prefix, so it is given the prefix to put before the check's key.
func (a *app) openForCheck(ctx context.Context, rawURL string) (bucket.Bucket, string, func(context.Context, string) (bucketcheck.Result, error), error) {
	if rawURL == "" {
		rawURL = bucketurl.DefaultURL()
		fmt.Fprintf(a.errOut, "capsule: no URL, --bucket or CAPSULE_BUCKET given: checking the local directory %s\n", strings.TrimPrefix(rawURL, "file://"))
	}
	b, desc, err := bucketurl.Open(ctx, rawURL, a.log)
	if err != nil {
		return nil, "", nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "s3" {
		return b, desc, nil, nil
	}
	_, prefix, err := bucketLocation(rawURL)
	if err != nil {
		return b, desc, nil, nil
	}
	q := u.Query()
	q.Set("prefix", "")
	u.RawQuery = q.Encode()
	whole, _, err := bucketurl.Open(ctx, u.String(), a.log)
	s3b, ok := whole.(*s3.Bucket)
	if err != nil || !ok {
		return b, desc, nil, nil
	}
	return b, desc, func(ctx context.Context, key string) (bucketcheck.Result, error) {
		p, err := s3b.ProbeChecksums(ctx, prefix+key)
		r := bucketcheck.Result{Status: bucketcheck.Info, Detail: p.String()}
		switch {
		case err != nil:
		case !p.Accepted && p.ClientSendsAlways():
			r.Status = bucketcheck.Warn
			r.Detail += `; capsule's own writes will be refused: set AWS_REQUEST_CHECKSUM_CALCULATION=when_required`
		case p.Returned && !p.Match:
			r.Status = bucketcheck.Warn
		}
		return r, err
	}, nil
}

// checkOutput is a report as "capsule bucket check -o json" prints it.
type checkOutputJSON struct {
	Bucket string `json:"bucket"`
	*bucketcheck.Report
	Unsafe string `json:"unsafe,omitempty"`
}

func printCheck(a *app, f format, desc string, rep *bucketcheck.Report) error {
	var unsafe string
	if err := rep.Err(); err != nil {
		unsafe = err.Error()
	}
	if f.data() {
		return writeData(a.out, f, checkOutputJSON{Bucket: desc, Report: rep, Unsafe: unsafe})
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROPERTY\tSTATUS\tDETAIL")
	for _, r := range rep.Results {
		status := string(r.Status)
		if r.Status == bucketcheck.Fail && r.Critical {
			status = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Property, status, r.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case unsafe != "":
		fmt.Fprintf(a.out, "\n%s is UNSAFE for capsule: workers refuse to claim on it.\n", desc)
	case rep.Safe:
		fmt.Fprintf(a.out, "\n%s is safe for capsule (%.1fs).\n", desc, rep.Seconds)
	default:
		fmt.Fprintf(a.out, "\n%s: the check did not finish.\n", desc)
	}
	return nil
}
