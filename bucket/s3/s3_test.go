package s3_test

import (
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/buckettest"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/internal/s3test"
)

func testLogger(t *testing.T) logrus.FieldLogger {
	l := logrus.New()
	l.Out = t.Output()
	l.Level = logrus.DebugLevel
	return l
}

func newBucket(t *testing.T, srv *s3test.Server, name string) *s3.Bucket {
	t.Helper()
	b, err := s3.New(t.Context(), s3.Options{
		Bucket:    name,
		Endpoint:  srv.Endpoint,
		Region:    srv.Region,
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
		PartSize:  s3.MinPartSize, // exercise multipart with less data
		Log:       testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	buckettest.Run(t, func(t *testing.T) bucket.Bucket { return newBucket(t, srv, name) })
}
