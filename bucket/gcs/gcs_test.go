package gcs_test

import (
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/buckettest"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/internal/gcstest"
)

func testLogger(t *testing.T) logrus.FieldLogger {
	l := logrus.New()
	l.Out = t.Output()
	l.Level = logrus.DebugLevel
	return l
}

// newBucket opens name on endpoint ("" for Google's, with Application
// Default Credentials) with small chunks, so that resumable uploads of a
// few MiB take several.
func newBucket(t *testing.T, endpoint, name string) *gcs.Bucket {
	t.Helper()
	b, err := gcs.New(t.Context(), gcs.Options{Bucket: name, Endpoint: endpoint, ChunkSize: 1 << 20, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	srv := gcstest.Shared(t)
	name := srv.NewBucket(t)
	buckettest.Run(t, func(t *testing.T) bucket.Bucket { return newBucket(t, srv.Endpoint, name) })
}

// TestConformanceReal runs the suite against a real bucket: the races
// there prove Google's generation preconditions as the emulator's prove
// fake-gcs-server's.
func TestConformanceReal(t *testing.T) {
	name := gcstest.Real(t, "the conformance suite against Google Cloud Storage itself")
	buckettest.Run(t, func(t *testing.T) bucket.Bucket { return newBucket(t, "", name) })
}
