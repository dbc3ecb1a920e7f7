package metrics_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/metrics"
)

// batchFS is a directory bucket with a batch delete, counting its calls.
type batchFS struct {
	bucket.Bucket
	batches int
}

func (b *batchFS) DeleteBatch(ctx context.Context, keys []string) ([]error, error) {
	b.batches++
	out := make([]error, len(keys))
	for i, k := range keys {
		out[i] = b.Bucket.Delete(ctx, k)
	}
	return out, nil
}

// The instrumented bucket passes a batch delete through (bucket.DeleteKeys
// makes one call, counted as delete_batch), and over a bucket without
// one, DeleteKeys deletes key by key, each counted as a delete.
func TestInstrumentBucketPassesBatchDeletesThrough(t *testing.T) {
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, batch := range []bool{true, false} {
		r := metrics.New(metrics.Options{NoRuntime: true})
		var under bucket.Bucket = fb
		bf := &batchFS{Bucket: fb}
		if batch {
			under = bf
		}
		b := metrics.InstrumentBucket(bucket.Prefixed(under, "capsule/"), r)
		for _, k := range []string{"requests/a.json", "leases/a.json"} {
			if _, err := bucket.PutBytes(ctx, b, k, []byte("{}"), bucket.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := bucket.DeleteKeys(ctx, b, "requests/a.json", "leases/a.json"); err != nil {
			t.Fatal(err)
		}
		s := scrapes{scrape(t, r.Handler())}
		batches, deletes := s.sum(metrics.BucketOperations, L{"operation": "delete_batch"}), s.sum(metrics.BucketOperations, L{"operation": "delete"})
		if batch && (bf.batches != 1 || batches != 1 || deletes != 0) {
			t.Errorf("with a batch: %d batch calls, counted %v delete_batch and %v delete; want 1, 1, 0", bf.batches, batches, deletes)
		}
		if !batch && (batches != 0 || deletes != 2) {
			t.Errorf("without a batch: counted %v delete_batch and %v delete; want 0 and 2", batches, deletes)
		}
	}
}
