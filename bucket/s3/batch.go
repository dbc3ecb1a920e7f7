package s3

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cnvrg/capsule/bucket"
)

var _ bucket.BatchDeleter = (*Bucket)(nil)

// DeleteBatch deletes keys with one DeleteObjects call (quiet: the
// answer lists only the keys that failed). A key the answer names fails
// with its code and message (bucket.DeleteKeys deletes it once more by
// itself, which tells Object Lock from other refusals); a missing key is
// no error. The call is repeated while it fails transiently, like a
// Delete. A server that refuses the call as a whole for good (no
// DeleteObjects, a checksum header it will not take, a policy that
// denies it) is not asked again by this Bucket: DeleteBatch then answers
// errors.ErrUnsupported without a call, and DeleteKeys deletes one key
// at a time.
func (b *Bucket) DeleteBatch(ctx context.Context, keys []string) ([]error, error) {
	if b.noBatch.Load() {
		return nil, fmt.Errorf("delete %d keys: %w: the server refused DeleteObjects", len(keys), errors.ErrUnsupported)
	}
	if len(keys) > bucket.MaxBatchDelete {
		return nil, fmt.Errorf("delete %d keys: more than %d", len(keys), bucket.MaxBatchDelete)
	}
	objs := make([]types.ObjectIdentifier, len(keys))
	for i := range keys {
		objs[i] = types.ObjectIdentifier{Key: aws.String(keys[i])}
	}
	var out *s3.DeleteObjectsOutput
	err := b.retry(ctx, "delete-batch", keys[0], func() (err error) {
		out, err = b.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: &b.name,
			Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)},
		})
		return err
	})
	if err != nil {
		err = translate("delete-batch", keys[0], err)
		if ctx.Err() == nil && !errors.Is(err, bucket.ErrTransient) {
			b.noBatch.Store(true)
			b.log.WithError(err).Warn("the server refused a batch delete (DeleteObjects): deleting one key at a time from now on")
			return nil, fmt.Errorf("%w: %w", errors.ErrUnsupported, err)
		}
		return nil, err
	}
	perKey := make([]error, len(keys))
	at := make(map[string]int, len(keys))
	for i, k := range keys {
		at[k] = i
	}
	for _, e := range out.Errors {
		i, ok := at[aws.ToString(e.Key)]
		if !ok {
			continue
		}
		code := aws.ToString(e.Code)
		if code == "NoSuchKey" {
			continue
		}
		perKey[i] = fmt.Errorf("delete %s: %s: %s", keys[i], code, aws.ToString(e.Message))
	}
	return perKey, nil
}
