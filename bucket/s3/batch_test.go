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

// A server that refuses DeleteObjects as sent (here: one that refuses
// the CRC32 checksum the SDK must send with it, as several S3-compatible
// servers do) costs one refused call: DeleteKeys deletes every key by
// itself, and later DeleteKeys of that Bucket make no DeleteObjects call.
func TestDeleteKeysWhereTheServerRefusesTheBatch(t *testing.T) {
	t.Setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "")
	t.Setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "")
	srv, p := quirky(t, faultproxy.RejectChecksums)
	name := srv.NewBucket(t)
	b := bucketAt(t, srv, p.URL(), name)
	clean := newBucket(t, srv, name)
	ctx := t.Context()
	for round := range 2 {
		keys := []string{"requests/a.json", "leases/a.json"}
		for _, k := range keys {
			if _, err := bucket.PutBytes(ctx, clean, k, []byte("x"), bucket.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		before := p.Stats()
		if err := bucket.DeleteKeys(ctx, b, keys...); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		after := p.Stats()
		batches := after.Requests[faultproxy.DeleteObjects] - before.Requests[faultproxy.DeleteObjects]
		singles := after.Requests[faultproxy.DeleteObject] - before.Requests[faultproxy.DeleteObject]
		if want := 1 - round; batches != want || singles != len(keys) {
			t.Errorf("round %d: %d DeleteObjects and %d DeleteObject calls, want %d and %d", round, batches, singles, want, len(keys))
		}
		for _, k := range keys {
			if _, err := clean.Head(ctx, k); !errors.Is(err, bucket.ErrNotFound) {
				t.Errorf("round %d: %s is still there: %v", round, k, err)
			}
		}
	}
}
