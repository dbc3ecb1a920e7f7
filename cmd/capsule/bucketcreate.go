package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/spf13/cobra"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
)

func (a *app) bucketCreateCmd() *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "create [URL]",
		Short: "Create the bucket (URL, else the configured one) if it does not exist",
		Long: `Create the bucket a URL names (else the configured one): an S3 bucket, a
Google Cloud Storage bucket (in the project of the URL's ?project= or
GOOGLE_CLOUD_PROJECT), an Azure Blob container, or a local directory.

It is idempotent: a bucket that exists and is yours is left as it is, and the
command exits 0, so a deployment can run it before every start (the compose
file's bucket-init service does). It writes no object. --wait keeps trying
while the store cannot be reached, for a store that starts beside it. No other command
creates a bucket: the ones that only read (ls, describe, status, tail, serve)
refuse a missing one, so that a mistyped URL shows up at once.`,
		Example: `  capsule bucket create s3://backups/capsule/
  capsule bucket create "s3://backups?endpoint=http://minio:9000&region=us-east-1"
  capsule bucket create file:///var/lib/capsule/bucket`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			url := a.cfg.Bucket
			if len(argv) == 1 {
				url = argv[0]
			}
			if url == "" {
				return usageErr(fmt.Errorf("name the bucket: capsule bucket create URL (or set --bucket, CAPSULE_BUCKET or the config's bucket)"))
			}
			ctx := cmd.Context()
			var desc string
			var created bool
			bo := backoff.NewExponentialBackOff()
			bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = 500*time.Millisecond, 5*time.Second, wait
			err := backoff.RetryNotify(func() (err error) {
				desc, created, err = bucketurl.Create(ctx, url, a.log)
				if err != nil && (wait == 0 || !errors.Is(err, bucket.ErrTransient)) {
					return backoff.Permanent(err)
				}
				return err
			}, backoff.WithContext(bo, ctx), func(err error, d time.Duration) {
				a.log.WithError(err).WithField("retry_in", d.String()).Warn("cannot create the bucket yet; waiting for the store")
			})
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(a.out, "created %s\n", desc)
			} else {
				fmt.Fprintf(a.out, "%s exists already\n", desc)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "keep trying this long while the store cannot be reached (it may still be starting)")
	return cmd
}
