package gcs_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/gcstest"
)

// TestDeleteRetained: an object written with a retain-until date in a
// bucket with object retention enabled cannot be deleted before it; the
// bucket says so with bucket.ErrRetained and leaves other deletes alone.
// The object stays behind until its date (a minute: GCS keeps it that
// long, and a Locked retention cannot be shortened).
//
// Not on fake-gcs-server: v1.56.1 stores and returns an object's retention
// but does not enforce it, and deletes the object.
func TestDeleteRetained(t *testing.T) {
	name := os.Getenv("CAPSULE_TEST_GCS_RETENTION_BUCKET")
	if name == "" {
		t.Skip("fake-gcs-server " + gcstest.Version + " does not enforce object retention (its Delete of a retained object succeeds); " +
			"set CAPSULE_TEST_GCS_RETENTION_BUCKET to a real bucket created with object retention enabled to run this test")
	}
	b := newBucket(t, "", name)
	key := "capsule-retention-test/" + time.Now().UTC().Format("20060102T150405.000000000")
	if _, err := bucket.PutBytes(t.Context(), b, key+"/locked", []byte("x"), bucket.PutOptions{RetainUntil: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(t.Context(), b, key+"/free", []byte("y"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	err := b.Delete(t.Context(), key+"/locked")
	if !errors.Is(err, bucket.ErrRetained) {
		t.Fatalf("delete of a retained object: %v, want ErrRetained", err)
	}
	if _, err := b.Head(t.Context(), key+"/locked"); err != nil {
		t.Fatalf("the retained object is gone: %v", err)
	}
	if err := b.Delete(t.Context(), key+"/free"); err != nil {
		t.Fatalf("delete of an object without retention: %v", err)
	}
	if err := b.Delete(t.Context(), key+"/missing"); err != nil {
		t.Fatalf("delete of a missing object: %v", err)
	}
}

// TestRetainUntilRefusedWithoutObjectRetention: in a bucket without object
// retention, a write that asks for a retain-until date fails and leaves
// nothing; it is never stored unretained.
//
// Not on fake-gcs-server: v1.56.1 keeps the retention of any object in
// any bucket (see TestUnkeptRetentionFailsTheWrite for what the bucket
// does when a store drops it).
func TestRetainUntilRefusedWithoutObjectRetention(t *testing.T) {
	name := gcstest.Real(t, "fake-gcs-server "+gcstest.Version+" accepts object retention in any bucket")
	b := newBucket(t, "", name)
	key := "capsule-retention-test/" + time.Now().UTC().Format("20060102T150405.000000000")
	_, err := bucket.PutBytes(t.Context(), b, key, []byte("x"), bucket.PutOptions{RetainUntil: time.Now().Add(time.Minute)})
	if err == nil {
		t.Fatalf("a write with a retain-until date succeeded in %s; want it refused (does the bucket have object retention enabled?)", name)
	}
	t.Logf("refused: %v", err)
	if _, err := b.Head(t.Context(), key); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("after the refused write: %v, want nothing there", err)
	}
}
