package pitr_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/pitr"
)

// With retainFor set, the stream writes every WAL object with a
// retain-until date: in a bucket with Object Lock (versitygw), none can
// be deleted, and pruning skips them rather than fail.
func TestWALObjectsRetained(t *testing.T) {
	srv := s3test.Shared(t)
	var rnd [6]byte
	rand.Read(rnd[:])
	name := "capsule-wal-lock-" + hex.EncodeToString(rnd[:])
	opts := s3.Options{Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Log: enginetest.TestLog(t)}
	opts.Bucket = "unused"
	admin, err := s3.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Client().CreateBucket(t.Context(), &awss3.CreateBucketInput{Bucket: aws.String(name), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("create a bucket with object lock: %v", err)
	}
	opts.Bucket = name
	sb, err := s3.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(sb, "capsule/")
	pg := startServer(t)
	src := source(pg, "pg")
	r := runStreamCfg(t, pitr.StreamConfig{Bucket: b, Source: src, RetainFor: time.Hour,
		Leaser: &pitr.BucketLeaser{Bucket: b, Holder: "w1", Length: 6 * time.Second}})
	execPG(t, pg, `CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g`)
	r.waitFor(t, currentLSN(t, pg))
	r.stop()
	segs, err := pitr.ListSegments(t.Context(), b, cluster, "pg")
	if err != nil || len(segs) == 0 {
		t.Fatalf("WAL objects: %d %v", len(segs), err)
	}
	for _, s := range segs {
		if err := b.Delete(t.Context(), s.Key); !errors.Is(err, bucket.ErrRetained) {
			t.Errorf("delete %s: %v, want ErrRetained", s.Key, err)
		}
	}
}
