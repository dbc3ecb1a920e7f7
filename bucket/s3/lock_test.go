package s3_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/s3test"
)

// TestDeleteRetained: versitygw keeps an object written with a retain-until
// date in a bucket created with Object Lock, and answers its Delete with 403
// AccessDenied; the bucket translates that to bucket.ErrRetained and leaves
// other errors alone. The bucket is left behind (its objects cannot be
// removed before their date); the shared server's directory goes with it.
func TestDeleteRetained(t *testing.T) {
	srv := s3test.Shared(t)
	var rnd [6]byte
	rand.Read(rnd[:])
	name := "capsule-lock-" + hex.EncodeToString(rnd[:])
	b := newBucket(t, srv, "unused")
	if _, err := b.Client().CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(name), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("create a bucket with object lock: %v", err)
	}
	b = newBucket(t, srv, name)
	until := time.Now().Add(time.Hour)
	if _, err := bucket.PutBytes(t.Context(), b, "locked", []byte("x"), bucket.PutOptions{RetainUntil: until}); err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(t.Context(), b, "free", []byte("y"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	err := b.Delete(t.Context(), "locked")
	if !errors.Is(err, bucket.ErrRetained) {
		t.Fatalf("delete of a retained object: %v, want ErrRetained", err)
	}
	if _, err := b.Head(t.Context(), "locked"); err != nil {
		t.Fatalf("the retained object is gone: %v", err)
	}
	if err := b.Delete(t.Context(), "free"); err != nil {
		t.Fatalf("delete of an object without retention: %v", err)
	}
	if err := b.Delete(t.Context(), "missing"); err != nil {
		t.Fatalf("delete of a missing object: %v", err)
	}
}
