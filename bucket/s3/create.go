package s3

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Create creates the bucket, in the client's region (AWS wants a
// location constraint outside us-east-1). It reports false, and no error,
// when the bucket exists and is this account's: creating is idempotent.
func (b *Bucket) Create(ctx context.Context) (bool, error) {
	in := &s3.CreateBucketInput{Bucket: &b.name}
	if r := b.client.Options().Region; r != "" && r != "us-east-1" && isAWSEndpoint(b.opts.Endpoint) {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(r)}
	}
	_, err := b.client.CreateBucket(ctx, in)
	var owned *types.BucketAlreadyOwnedByYou
	var ae smithy.APIError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &owned), errors.As(err, &ae) && ae.ErrorCode() == "BucketAlreadyOwnedByYou":
		return false, nil
	case errors.As(err, &ae) && ae.ErrorCode() == "BucketAlreadyExists":
		// Some servers (versitygw, MinIO) answer this for the caller's
		// own bucket: it is ours when we can list it.
		if _, lerr := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &b.name}); lerr == nil {
			return false, nil
		}
		return false, errors.New("create bucket " + b.name + ": the name is taken by another account (bucket names are global on AWS): choose another")
	}
	return false, translate("create bucket", b.name, err)
}
