package bucket_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
)

// batching is a directory bucket with a batch delete whose answers a test
// decides: fail names keys the batch fails alone (it deletes the others),
// whole fails the call as a whole. It logs every call.
type batching struct {
	bucket.Bucket
	fail  map[string]bool
	whole error
	calls []string
}

func (b *batching) Delete(ctx context.Context, key string) error {
	b.calls = append(b.calls, "delete "+key)
	return b.Bucket.Delete(ctx, key)
}

func (b *batching) DeleteBatch(ctx context.Context, keys []string) ([]error, error) {
	b.calls = append(b.calls, "batch "+strings.Join(keys, ","))
	if b.whole != nil {
		return nil, b.whole
	}
	perKey := make([]error, len(keys))
	for i, k := range keys {
		if b.fail[k] {
			perKey[i] = fmt.Errorf("delete %s: InternalError", k)
			continue
		}
		if err := b.Bucket.Delete(ctx, k); err != nil {
			perKey[i] = err
		}
	}
	return perKey, nil
}

func batchEnv(t *testing.T, keys ...string) (*batching, context.Context) {
	ctx := context.Background()
	root, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := bucket.PutBytes(ctx, root, k, []byte("x"), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return &batching{Bucket: root}, ctx
}

func gone(t *testing.T, ctx context.Context, b bucket.Bucket, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, err := b.Head(ctx, k); !errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("%s is still there: %v", k, err)
		}
	}
}

// DeleteKeys on a bucket with a batch makes one call; a key the batch
// fails alone is deleted once more by itself, and only it; a call that
// fails as a whole, or a bucket (or a server) without a batch, deletes
// every key by itself, in the order given.
func TestDeleteKeys(t *testing.T) {
	keys := []string{"requests/a.json", "cancel/a.json", "leases/a.json"}
	t.Run("one call", func(t *testing.T) {
		b, ctx := batchEnv(t, keys...)
		if err := bucket.DeleteKeys(ctx, b, append(keys, "missing")...); err != nil {
			t.Fatal(err)
		}
		if want := []string{"batch " + strings.Join(append(keys, "missing"), ",")}; !slices.Equal(b.calls, want) {
			t.Errorf("calls %q, want %q", b.calls, want)
		}
		gone(t, ctx, b, keys...)
	})
	t.Run("a key failed alone", func(t *testing.T) {
		b, ctx := batchEnv(t, keys...)
		b.fail = map[string]bool{keys[0]: true}
		if err := bucket.DeleteKeys(ctx, b, keys...); err != nil {
			t.Fatal(err)
		}
		if want := []string{"batch " + strings.Join(keys, ","), "delete " + keys[0]}; !slices.Equal(b.calls, want) {
			t.Errorf("calls %q, want %q", b.calls, want)
		}
		gone(t, ctx, b, keys...)
	})
	for name, whole := range map[string]error{
		"the call failed":   errors.New("connection reset"),
		"no batch":          bucket.NoBatch(),
		"server refused it": fmt.Errorf("%w: NotImplemented", errors.ErrUnsupported),
	} {
		t.Run(name, func(t *testing.T) {
			b, ctx := batchEnv(t, keys...)
			b.whole = whole
			if err := bucket.DeleteKeys(ctx, b, keys...); err != nil {
				t.Fatal(err)
			}
			want := []string{"batch " + strings.Join(keys, ",")}
			for _, k := range keys {
				want = append(want, "delete "+k)
			}
			if !slices.Equal(b.calls, want) {
				t.Errorf("calls %q, want %q", b.calls, want)
			}
			gone(t, ctx, b, keys...)
		})
	}
	t.Run("without a batch, through a prefix", func(t *testing.T) {
		b, ctx := batchEnv(t, "p/x", "p/y")
		view := bucket.Prefixed(b.Bucket, "p/") // the directory bucket: no batch
		if err := bucket.DeleteKeys(ctx, view, "x", "y"); err != nil {
			t.Fatal(err)
		}
		gone(t, ctx, b, "p/x", "p/y")
	})
	t.Run("through a prefix", func(t *testing.T) {
		b, ctx := batchEnv(t, "p/x", "p/y")
		if err := bucket.DeleteKeys(ctx, bucket.Prefixed(b, "p/"), "x", "y"); err != nil {
			t.Fatal(err)
		}
		if want := []string{"batch p/x,p/y"}; !slices.Equal(b.calls, want) {
			t.Errorf("calls %q, want %q", b.calls, want)
		}
		gone(t, ctx, b, "p/x", "p/y")
	})
}
