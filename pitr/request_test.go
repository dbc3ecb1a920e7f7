package pitr_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

// tenantSources are the sources one bucket serves, and names another
// bucket serves (Lookup says ErrNotServed for them).
type tenantSources struct {
	served    map[string]engines.Source
	elsewhere map[string]bool
}

func (s tenantSources) Lookup(name string) (engines.Source, error) {
	if src, ok := s.served[name]; ok {
		return src, nil
	}
	if s.elsewhere[name] {
		return engines.Source{}, fmt.Errorf("source %s: %w: %w", name, executor.ErrUnknownSource, executor.ErrNotServed)
	}
	return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
}

// s3Bucket is a fresh bucket of the shared S3 test server, under the
// capsule/ prefix.
func s3Bucket(t *testing.T) bucket.Bucket {
	t.Helper()
	srv := s3test.Shared(t)
	sb, err := s3.New(context.Background(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	return bucket.Prefixed(sb, "capsule/")
}

// startWorker runs a watcher and an executor that runs point-in-time
// restores, on b, until the test ends.
func startWorker(t *testing.T, b bucket.Bucket, srcs executor.Sources) {
	t.Helper()
	log := enginetest.TestLog(t)
	// The worker's scratch space (worker.scratch), where the postgres
	// user may enter it when the tests run as root.
	scratch, err := os.MkdirTemp("", "capsule-scratch-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(scratch) })
	if err := os.Chmod(scratch, 0o711); err != nil {
		t.Fatal(err)
	}
	x, err := executor.New(executor.Config{Bucket: b, Engines: engines.NewRegistry(postgres.New(), files.New()), Sources: srcs,
		Worker: "w-test", Version: "test", Log: log, PointInTime: &pitr.Restorer{Bucket: b, Scratch: scratch}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := watcher.New(watcher.Config{Bucket: b, Runner: x, Worker: "w-test", Poll: 200 * time.Millisecond,
		Lease: 15 * time.Second, Cluster: cluster, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// submitRaw writes a request object as a client would, unchecked.
func submitRaw(t *testing.T, b bucket.Bucket, id, body string) {
	t.Helper()
	if _, err := bucket.PutBytes(context.Background(), b, requests.RequestKey(id), []byte(body), bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
}

func waitEnded(t *testing.T, b bucket.Bucket, id string) *requests.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := client.Wait(ctx, b, id, 200*time.Millisecond, nil)
	if err != nil {
		t.Fatalf("waiting for %s: %v", id, err)
	}
	if st.Result == nil {
		t.Fatalf("%s ended %s without a result", id, st.Status)
	}
	return st.Result
}

// A Restore request naming a time T of a source, claimed by a worker
// from the S3 bucket, recovers exactly the markers committed up to T
// into the live server, and its result names the base backup and where
// recovery ended. Requests that can never succeed end rejected, naming
// why.
func TestRestoreRequestToTime(t *testing.T) {
	b := s3Bucket(t)
	f := newPITRFixtureOn(t, b)
	idx := f.base.BackupID
	marks := writeMarkers(t, f.srv, "app", 30, 100*time.Millisecond)
	k := 17
	target := marks[k].at.Add(marks[k+1].at.Sub(marks[k].at) / 2)
	f.r.waitFor(t, currentLSN(t, f.srv))

	startWorker(t, b, tenantSources{
		served:    map[string]engines.Source{"pg": f.src, "files": {Name: "files", Engine: "files", Config: map[string]any{"path": t.TempDir()}}},
		elsewhere: map[string]bool{"other-tenant/pg": true},
	})

	t.Run("to time T", func(t *testing.T) {
		req := &requests.Request{Kind: requests.KindRestore, Cluster: cluster,
			PointInTime: &requests.PointInTime{Source: "pg", Time: target}}
		if err := client.Submit(context.Background(), b, req); err != nil {
			t.Fatal(err)
		}
		res := waitEnded(t, b, req.ID)
		if res.Status != requests.StatusSucceeded {
			t.Fatalf("ended %s: %s", res.Status, res.Error)
		}
		ids := markerIDs(t, f.srv, "app")
		if len(ids) != k+1 || ids[len(ids)-1] != marks[k].id {
			t.Fatalf("restored markers %v, want the %d up to id %d (target %s)", ids, k+1, marks[k].id, target)
		}
		if res.BackupID != idx || res.Source != "pg" || res.RequestKind != requests.KindRestore {
			t.Errorf("result names backup %q source %q kind %q, want base backup %s of pg", res.BackupID, res.Source, res.RequestKind, idx)
		}
		data, _ := json.Marshal(res.Details)
		t.Logf("details %s", data)
		pt, _ := res.Details["pointInTime"].(map[string]any)
		// PostgreSQL names the commit that stopped recovery: the first
		// one after the target, which may fall in a later second.
		reason := fmt.Sprint(pt["recoveredReason"])
		stopped, err := time.Parse("2006-01-02 15:04:05.999999999-07", strings.TrimPrefix(reason, "before "))
		if pt["baseBackup"] != idx || pt["recoveredLSN"] == "" || !strings.HasPrefix(reason, "before ") || err != nil || stopped.Before(target.Truncate(time.Microsecond)) {
			t.Errorf("result details %s do not say the base backup and the point recovered (a commit at or after %s): %v", data, target.UTC().Format(time.RFC3339Nano), err)
		}
		if res.Details["previous"] == nil {
			t.Errorf("result details %s do not name the kept previous database", data)
		}
	})

	for _, tc := range []struct {
		name, body string
		status     requests.Status
		want       []string
	}{
		{"both backup and point in time",
			`{"apiVersion":"capsule/v1","kind":"Restore","id":"%s","cluster":"test","backupId":"` + idx + `","pointInTime":{"source":"pg","latest":true}}`,
			requests.StatusRejected, []string{"pointInTime: give backupId or pointInTime, not both"}},
		{"time before every base backup",
			`{"apiVersion":"capsule/v1","kind":"Restore","id":"%s","cluster":"test","pointInTime":{"source":"pg","time":"` + marks[0].at.Add(-time.Hour).UTC().Format(time.RFC3339Nano) + `"}}`,
			requests.StatusRejected, []string{"no base backup of pg can reach", idx + " finished at", "after the target"}},
		{"source not served by this bucket",
			`{"apiVersion":"capsule/v1","kind":"Restore","id":"%s","cluster":"test","pointInTime":{"source":"other-tenant/pg","latest":true}}`,
			requests.StatusRejected, []string{"pointInTime.source", "not served by this bucket"}},
		{"target not served by this bucket",
			`{"apiVersion":"capsule/v1","kind":"Restore","id":"%s","cluster":"test","pointInTime":{"source":"pg","latest":true},"target":"other-tenant/pg"}`,
			requests.StatusRejected, []string{"target", "not served by this bucket"}},
		{"source of another engine",
			`{"apiVersion":"capsule/v1","kind":"Restore","id":"%s","cluster":"test","pointInTime":{"source":"files","latest":true}}`,
			requests.StatusRejected, []string{"files is a files source; point-in-time restores are of postgres sources"}},
		{"source without base backups",
			`{"apiVersion":"capsule/v1","kind":"Restore","id":"%s","cluster":"other","pointInTime":{"source":"pg","latest":true}}`,
			requests.StatusRejected, []string{"source pg has no base backup in cluster other"}},
		{"time after the latest recoverable point",
			`{"apiVersion":"capsule/v1","kind":"Restore","id":"%s","cluster":"test","pointInTime":{"source":"pg","time":"2100-01-01T00:00:00Z"}}`,
			requests.StatusRejected, []string{"is after the latest recoverable point"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := requests.NewID()
			submitRaw(t, b, id, fmt.Sprintf(tc.body, id))
			res := waitEnded(t, b, id)
			if res.Status != tc.status {
				t.Fatalf("ended %s (%s), want %s", res.Status, res.Error, tc.status)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.Error, w) {
					t.Errorf("error %q does not say %q", res.Error, w)
				}
			}
		})
	}
	// The bad requests touched nothing.
	if ids := markerIDs(t, f.srv, "app"); len(ids) != k+1 {
		t.Errorf("after the refused requests the markers are %v, want the %d the restore left", ids, k+1)
	}
}

// A worker's point-in-time restore is fenced like every restore: when
// its lease cannot be confirmed right before the swap (another attempt
// took the request over), it swaps nothing and the target keeps its
// data; the side database carries the attempt in its name.
func TestRestoreFencedLeavesTargetAlone(t *testing.T) {
	f := newPITRFixture(t)
	marks := writeMarkers(t, f.srv, "app", 10, 50*time.Millisecond)
	f.r.waitFor(t, currentLSN(t, f.srv))
	fenced := 0
	_, err := pitr.Restore(context.Background(), pitr.RestoreConfig{
		Bucket: f.b, Cluster: cluster, Source: "pg", Target: pitr.Target{Time: marks[3].at},
		Into: &f.src, ID: requests.NewID(), Attempt: 2, Log: enginetest.TestLog(t),
		Fence: func(context.Context) error { fenced++; return errors.New("lease lost") },
	})
	if !errors.Is(err, engines.ErrFenced) || fenced == 0 {
		t.Fatalf("restore with a failing fence: %v (fence called %d times), want ErrFenced", err, fenced)
	}
	if ids := markerIDs(t, f.srv, "app"); len(ids) != len(marks) {
		t.Errorf("the fenced restore changed the target: markers %v, want all %d", ids, len(marks))
	}
}
