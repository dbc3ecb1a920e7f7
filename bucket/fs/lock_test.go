package fs

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
)

// newWideBuckets returns n Bucket values on one directory (only flock
// connects them, as with processes) whose writes pause between checking
// their condition and publishing, so that any gap in the locking shows.
func newWideBuckets(t *testing.T, n int) []*Bucket {
	dir := t.TempDir()
	var out []*Bucket
	for i := 0; i < n; i++ {
		b, err := New(dir)
		if err != nil {
			t.Fatal(err)
		}
		b.beforeMove = func() { time.Sleep(2 * time.Millisecond) }
		out = append(out, b)
	}
	return out
}

func TestLockSerialisesCompareAndSwap(t *testing.T) {
	buckets := newWideBuckets(t, 4)
	ctx := t.Context()
	info, err := bucket.PutBytes(ctx, buckets[0], "k", []byte("base"), bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 5; round++ {
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := bucket.PutBytes(ctx, buckets[i%len(buckets)], "k", []byte(fmt.Sprint("cas ", i)), bucket.PutOptions{IfMatch: info.ETag})
				if err == nil {
					wins.Add(1)
				} else if !errors.Is(err, bucket.ErrPreconditionFailed) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if w := wins.Load(); w != 1 {
			t.Fatalf("round %d: %d compare-and-swap winners, want 1", round, w)
		}
		if info, err = buckets[0].Head(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCreateAfterDeleteBeatsStaleCompareAndSwap: a writer that checked the
// ETag before a Delete must not publish over the object created after it.
// Whichever comes first, the created object stays.
func TestCreateAfterDeleteBeatsStaleCompareAndSwap(t *testing.T) {
	buckets := newWideBuckets(t, 2)
	buckets[1].beforeMove = nil
	ctx := t.Context()
	for round := 0; round < 10; round++ {
		info, err := bucket.PutBytes(ctx, buckets[1], "k", []byte("base"), bucket.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checked := make(chan struct{})
		buckets[0].beforeMove = func() {
			close(checked)
			time.Sleep(5 * time.Millisecond)
		}
		created := []byte(fmt.Sprint("created in round ", round))
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := bucket.PutBytes(ctx, buckets[0], "k", []byte("cas"), bucket.PutOptions{IfMatch: info.ETag})
			if err != nil && !errors.Is(err, bucket.ErrPreconditionFailed) {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			<-checked // the CAS has seen its ETag match
			if err := buckets[1].Delete(ctx, "k"); err != nil {
				t.Error(err)
			}
			if _, err := bucket.PutBytes(ctx, buckets[1], "k", created, bucket.PutOptions{IfNoneMatch: true}); err != nil {
				t.Errorf("round %d: create after delete: %v", round, err)
			}
		}()
		wg.Wait()
		if data, _, err := bucket.GetBytes(ctx, buckets[1], "k"); err != nil || !bytes.Equal(data, created) {
			t.Fatalf("round %d: object holds %q (%v), want %q", round, data, err, created)
		}
	}
}
