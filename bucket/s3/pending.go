package s3

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cnvrg/capsule/bucket"
)

var _ bucket.UploadLister = (*Bucket)(nil)

// ListUploads lists the multipart uploads under prefix that were neither
// completed nor aborted, with ListMultipartUploads.
func (b *Bucket) ListUploads(ctx context.Context, prefix string) ([]bucket.PendingUpload, error) {
	var ups []bucket.PendingUpload
	in := &s3.ListMultipartUploadsInput{Bucket: &b.name, Prefix: &prefix}
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
			ups = append(ups, bucket.PendingUpload{
				Key:       aws.ToString(u.Key),
				UploadID:  aws.ToString(u.UploadId),
				Initiated: aws.ToTime(u.Initiated),
			})
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
