package s3_test

import (
	"errors"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/faultproxy"
)

// DeleteKeys on S3 is one DeleteObjects call for all its keys, a missing
// one included, and through a prefixed view too; every key is gone after.
func TestDeleteKeysIsOneCall(t *testing.T) {
	b, clean, p := viaProxy(t, 1)
	ctx := t.Context()
	keys := []string{"capsule/requests/a.json", "capsule/cancel/a.json", "capsule/leases/a.json"}
	for _, k := range keys {
		if _, err := bucket.PutBytes(ctx, clean, k, []byte("x"), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	view := bucket.Prefixed(b, "capsule/")
	if err := bucket.DeleteKeys(ctx, view, "requests/a.json", "cancel/a.json", "leases/a.json", "leases/missing.json"); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Requests[faultproxy.DeleteObjects] != 1 || st.Requests[faultproxy.DeleteObject] != 0 {
		t.Errorf("calls: %s; want one DeleteObjects and no DeleteObject", st)
	}
	for _, k := range keys {
		if _, err := clean.Head(ctx, k); !errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("%s is still there: %v", k, err)
		}
	}
}
