package retention_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/buckettest"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
)

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// An oversized lock object is a damaged lease, never read: retention
// waits for it to expire by its own lease length, then takes it over.
// An oversized request under requests/ cannot be restoring anything (a
// worker rejects it) and does not stop retention either.
func TestOversizedLockAndRequestAreNotRead(t *testing.T) {
	fb, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	cb := buckettest.Count(b)
	writeAll(t, b, scheduled(3))
	p := policy(1)
	const huge = 64 << 20
	for _, key := range []string{retention.LockKey(p), requests.RequestKey("huge-request")} {
		if _, err := b.Put(t.Context(), key, io.LimitReader(zeros{}, huge), huge, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r := newRunner(t, cb, "a")
	rep, err := r.Apply(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if rep.LeaseHeldBy == "" || len(rep.Deleted) != 0 {
		t.Errorf("with a fresh oversized lock: %+v, want it held (and named)", rep)
	}
	// Its last write was two minutes ago by the bucket's clock.
	old := time.Now().Add(-2 * time.Minute)
	if err := os.Chtimes(filepath.Join(fb.Dir(), "capsule", retention.LockKey(p)), old, old); err != nil {
		t.Fatal(err)
	}
	rep = apply(t, r, p)
	wantIDs(t, "deleted once the oversized lock expired", rep.Deleted, []string{"nightly-00", "nightly-01"})
	if n := cb.Read(requests.RequestKey("huge-request")); n != 0 {
		t.Errorf("retention read %d bytes of the oversized request", n)
	}
	if n := cb.Read(retention.LockKey(p)); n > requests.DefaultMaxControlObject {
		t.Errorf("retention read %d bytes of the lock", n)
	}
}
