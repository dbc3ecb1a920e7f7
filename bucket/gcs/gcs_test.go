package gcs_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
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

// TestCreateOnlyUploadRace: resumable create-only uploads of several
// chunks race for one key; GCS checks the condition when each finalizes
// its object, and exactly one wins, whole.
func TestCreateOnlyUploadRace(t *testing.T) {
	srv := gcstest.Shared(t)
	b, err := gcs.New(t.Context(), gcs.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, ChunkSize: gcs.MinChunkSize, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const racers, rounds = 8, 3
	for round := range rounds {
		key := fmt.Sprintf("race/upload-%d", round)
		bodies := make([][]byte, racers)
		for i := range bodies {
			bodies[i] = bytes.Repeat([]byte(fmt.Sprintf("racer %d of round %d;", i, round)), 3*gcs.MinChunkSize/20)
		}
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []int
			start   = make(chan struct{})
		)
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u, err := b.Upload(t.Context(), key, bucket.PutOptions{IfNoneMatch: true})
				if err != nil {
					t.Error(err)
					return
				}
				<-start
				if _, err := u.Write(bodies[i]); err != nil {
					t.Errorf("racer %d: write: %v", i, err)
					u.Abort()
					return
				}
				_, err = u.Commit()
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, i)
				case !errors.Is(err, bucket.ErrPreconditionFailed):
					t.Errorf("racer %d: %v, want success or precondition failed", i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners %v, want exactly 1", round, len(winners), winners)
		}
		data, _, err := bucket.GetBytes(t.Context(), b, key)
		if err != nil || !bytes.Equal(data, bodies[winners[0]]) {
			t.Fatalf("round %d: the object (%d bytes, %v) is not the winner's", round, len(data), err)
		}
	}
}
