package s3

import (
	"context"
	"errors"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
)

var _ bucket.UploadLister = (*Bucket)(nil)

// ListUploads lists the multipart uploads under prefix that were neither
// completed nor aborted, with ListMultipartUploads.
//
// MinIO lists open uploads only when the prefix is a whole key: asked for a
// folder it answers an empty list, and asked with no prefix it lists every
// upload of the bucket. So when a listing with a prefix comes back empty,
// ListUploads lists every upload and keeps those under prefix; once that
// found an upload the prefixed listing missed, it lists that way from then
// on (and says so in the log once). capsule asks for folders (ending in
// "/"), which no key equals, so the prefixed listing is never partial: it
// is empty or complete. On AWS and versitygw the prefixed listing answers,
// and an empty one costs one more (empty, or short) listing.
func (b *Bucket) ListUploads(ctx context.Context, prefix string) ([]bucket.PendingUpload, error) {
	if prefix == "" || b.listAll.Load() {
		return b.listUploads(ctx, "", prefix)
	}
	ups, err := b.listUploads(ctx, prefix, prefix)
	if err != nil || len(ups) > 0 {
		return ups, err
	}
	ups, err = b.listUploads(ctx, "", prefix)
	if len(ups) > 0 && !b.listAll.Swap(true) {
		b.log.WithFields(logrus.Fields{"prefix": prefix, "uploads": len(ups)}).
			Info("the S3 server lists open uploads only for a whole key (as MinIO does): listing all of them and keeping those under the prefix from now on")
	}
	return ups, err
}

// listUploads lists the uploads whose key starts with ask (as the server
// reads it) and keeps those under prefix.
func (b *Bucket) listUploads(ctx context.Context, ask, prefix string) ([]bucket.PendingUpload, error) {
	var ups []bucket.PendingUpload
	in := &s3.ListMultipartUploadsInput{Bucket: &b.name}
	if ask != "" {
		in.Prefix = &ask
	}
	for {
		var out *s3.ListMultipartUploadsOutput
		err := b.retry(ctx, "list uploads", prefix, func() (err error) {
			out, err = b.client.ListMultipartUploads(ctx, in)
			return err
		})
		if err != nil {
			return nil, translate("list uploads", prefix, err)
		}
		for _, u := range out.Uploads {
			if key := aws.ToString(u.Key); strings.HasPrefix(key, prefix) {
				ups = append(ups, bucket.PendingUpload{
					Key:       key,
					UploadID:  aws.ToString(u.UploadId),
					Initiated: aws.ToTime(u.Initiated),
				})
			}
		}
		next, nextID := aws.ToString(out.NextKeyMarker), aws.ToString(out.NextUploadIdMarker)
		if !aws.ToBool(out.IsTruncated) || (next == aws.ToString(in.KeyMarker) && nextID == aws.ToString(in.UploadIdMarker)) {
			return ups, nil
		}
		in.KeyMarker, in.UploadIdMarker = &next, &nextID
	}
}

// AbortUpload aborts a multipart upload; one that is gone (NoSuchUpload) is
// no error.
func (b *Bucket) AbortUpload(ctx context.Context, key, uploadID string) error {
	err := b.retry(ctx, "abort upload", key, func() error {
		_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.name, Key: &key, UploadId: &uploadID})
		return err
	})
	if code, _ := errorCode(err); code == "NoSuchUpload" {
		return nil
	}
	if err = translate("abort upload", key, err); err != nil && !errors.Is(err, bucket.ErrNotFound) {
		return err
	}
	return nil
}
