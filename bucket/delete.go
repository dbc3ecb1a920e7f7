package bucket

import (
	"context"
	"errors"
	"fmt"
)

// MaxBatchDelete is the most keys one batch delete takes (S3
// DeleteObjects' limit).
const MaxBatchDelete = 1000

// BatchDeleter is a bucket that deletes many keys in one call (S3
// DeleteObjects). Not part of Bucket: callers use DeleteKeys, which
// deletes one key at a time where a bucket has no batch.
type BatchDeleter interface {
	// DeleteBatch deletes up to MaxBatchDelete keys in one call, in no
	// promised order. It returns one error per key, in keys' order (nil:
	// deleted, or was missing), or, when the call as a whole failed, err:
	// then any key may or may not be deleted. An err that wraps
	// errors.ErrUnsupported says the bucket (or the server behind it)
	// has no batch, and that no call was made or none took effect.
	DeleteBatch(ctx context.Context, keys []string) (perKey []error, err error)
}

// DeleteKeys removes keys, as Delete does each (a missing key is no
// error), and returns what failed, joined, each error naming its key.
//
// Where b deletes in batches (a BatchDeleter: S3), the keys go in one
// call per MaxBatchDelete, and the batch promises no order: a caller
// whose keys must go in order (a request before its lease) gets that
// order only when nothing fails. What it does get: a key the batch
// failed alone is deleted once more by itself, and when the call failed
// as a whole (or the server has no batch) every key is deleted by itself,
// in keys' order. So a key is left behind only when its own delete failed
// twice, and a later key may then be gone while it stays.
//
// Elsewhere (GCS, Azure, a directory) the keys are deleted one by one in
// keys' order, and a failure does not stop the keys after it.
func DeleteKeys(ctx context.Context, b Bucket, keys ...string) error {
	var errs []error
	one := func(key string) {
		if err := b.Delete(ctx, key); err != nil {
			errs = append(errs, err)
		}
	}
	bd, ok := b.(BatchDeleter)
	if !ok || len(keys) < 2 {
		for _, key := range keys {
			one(key)
		}
		return errors.Join(errs...)
	}
	for start := 0; start < len(keys); start += MaxBatchDelete {
		batch := keys[start:min(start+MaxBatchDelete, len(keys))]
		perKey, err := bd.DeleteBatch(ctx, batch)
		if err == nil && len(perKey) != len(batch) {
			err = fmt.Errorf("delete %d keys: %d answers", len(batch), len(perKey))
		}
		for i, key := range batch {
			if err != nil || perKey[i] != nil {
				one(key)
			}
		}
	}
	return errors.Join(errs...)
}

// errNoBatch is a wrapper's DeleteBatch over a bucket without one.
var errNoBatch = fmt.Errorf("batch delete: %w", errors.ErrUnsupported)

// NoBatch is what a wrapper's DeleteBatch returns when the bucket it
// wraps has none: DeleteKeys then deletes one key at a time, and no call
// was made.
func NoBatch() error { return errNoBatch }
