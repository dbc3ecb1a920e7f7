package s3test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestStartAndNewBucket(t *testing.T) {
	s := Start(t)
	name := s.NewBucket(t)
	out, err := s.client.ListBuckets(context.Background(), &s3.ListBucketsInput{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range out.Buckets {
		found = found || *b.Name == name
	}
	if !found {
		t.Fatalf("bucket %s not listed", name)
	}
	if Shared(t) != Shared(t) {
		t.Fatal("Shared started two servers")
	}
}
