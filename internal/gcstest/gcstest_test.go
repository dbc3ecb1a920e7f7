package gcstest

import (
	"errors"
	"testing"

	"google.golang.org/api/iterator"
)

func TestStartAndNewBucket(t *testing.T) {
	s := Start(t)
	name := s.NewBucket(t)
	it := s.client.Buckets(t.Context(), "capsule-test")
	found := false
	for {
		b, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		found = found || b.Name == name
	}
	if !found {
		t.Fatalf("bucket %s not listed", name)
	}
	if Shared(t) != Shared(t) {
		t.Fatal("Shared started two servers")
	}
}
