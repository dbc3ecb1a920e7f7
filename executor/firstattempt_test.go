package executor_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/reqcount"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
)

// s3Fixture is an executor on a fresh bucket of the S3 test server whose
// calls are counted.
func s3Fixture(t *testing.T) (*fixture, *reqcount.Bucket) {
	t.Helper()
	srv := s3test.Shared(t)
	sb, err := s3.New(t.Context(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	counted := &reqcount.Bucket{B: bucket.Prefixed(sb, "capsule/")}
	dir := t.TempDir()
	f := &fixture{t: t, b: counted, data: filepath.Join(dir, "data"), copy: filepath.Join(dir, "copy")}
	must(t, os.MkdirAll(f.data, 0o755))
	must(t, os.WriteFile(filepath.Join(f.data, "a.txt"), bytes.Repeat([]byte("capsule\n"), 1000), 0o644))
	f.x, err = executor.New(executor.Config{
		Bucket: f.b, Engines: engines.NewRegistry(files.New()), Worker: "test", Version: "test", Compression: "zstd",
		Sources: sources{"data": {Name: "data", Engine: "files", Config: map[string]any{"path": f.data}}},
		Log:     enginetest.TestLog(t),
	})
	must(t, err)
	return f, counted
}

func (f *fixture) runAttempt(req requests.Request, attempt int) *executor.Outcome {
	f.t.Helper()
	req.APIVersion = requests.APIVersion
	if err := req.Validate(); err != nil {
		f.t.Fatal(err)
	}
	return f.x.Run(context.Background(), &req, attempt, executor.NewTracker())
}

// A first attempt (a lease just created) reads nothing before its run:
// no index of an earlier commit is looked for, since none of this
// request's can exist. A takeover still looks.
func TestFirstAttemptReadsNoIndex(t *testing.T) {
	f, c := s3Fixture(t)
	req := requests.Request{ID: requests.NewID(), Kind: requests.KindBackup, Source: "data"}
	c.Reset()
	out := f.runAttempt(req, 1)
	if out.Result.Status != requests.StatusSucceeded || out.Index == nil {
		t.Fatalf("backup: %s %s", out.Result.Status, out.Result.Error)
	}
	if n := c.Counts(); n.Get != 0 || n.Head != 0 || n.List != 0 {
		t.Errorf("a first attempt's run made %+v: want no read", n)
	}
	req2 := requests.Request{ID: requests.NewID(), Kind: requests.KindBackup, Source: "data"}
	c.Reset()
	if out := f.runAttempt(req2, 2); out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("takeover: %s %s", out.Result.Status, out.Result.Error)
	}
	if n := c.Counts(); n.Get != 1 {
		t.Errorf("a takeover's run made %+v: want one GET (the index of an earlier commit)", n)
	}
}

// A finished id submitted again (a race client.Submit cannot refuse)
// and claimed as a first attempt overwrites nothing of the backup it
// committed: the artifact's create-only write fails, the index is read,
// and the run ends as if the earlier commit were its own. Another
// request's backup of the id still rejects the request.
func TestFirstAttemptOfACommittedIDOverwritesNothing(t *testing.T) {
	f, _ := s3Fixture(t)
	ctx := context.Background()
	req := requests.Request{ID: requests.NewID(), Kind: requests.KindBackup, Source: "data"}
	out := f.runAttempt(req, 1)
	must(t, f.x.Commit(ctx, out))
	first := out.Index
	stored := func() []byte {
		b, _, err := bucket.GetBytes(ctx, f.b, first.Artifacts[0].Key)
		must(t, err)
		return b
	}
	before := stored()
	must(t, os.WriteFile(filepath.Join(f.data, "a.txt"), []byte("changed since\n"), 0o644))
	again := f.runAttempt(req, 1)
	if again.Result.Status != requests.StatusSucceeded || again.Index != nil {
		t.Fatalf("again: %s %q, index %v: want succeeded by the earlier commit, nothing to commit", again.Result.Status, again.Result.Error, again.Index)
	}
	if again.Result.StoredBytes != first.StoredBytes {
		t.Errorf("again: stored %d bytes, the earlier commit %d", again.Result.StoredBytes, first.StoredBytes)
	}
	if after := stored(); !bytes.Equal(after, before) {
		t.Fatal("the committed artifact was overwritten")
	}
	if _, err := index.Read(ctx, f.b, first.Key()); err != nil {
		t.Fatalf("the committed index: %v", err)
	}

	// The id's backup made by another request (an import, say).
	other := requests.Request{ID: requests.NewID(), Kind: requests.KindBackup, Source: "data"}
	o := f.runAttempt(other, 1)
	o.Index.RequestID = "someone-else"
	must(t, f.x.Commit(ctx, o))
	if r := f.runAttempt(other, 1); r.Result.Status != requests.StatusRejected {
		t.Errorf("first attempt of an id another request committed: %s %q, want rejected", r.Result.Status, r.Result.Error)
	}
}

// Artifact keys a first attempt finds taken by no committed backup (an
// earlier life of the id that failed, an earlier try whose commit's answer
// was lost) are written over: the backup is made and committed.
func TestFirstAttemptWritesOverUncommittedArtifacts(t *testing.T) {
	f, _ := s3Fixture(t)
	ctx := context.Background()
	probe := f.runAttempt(requests.Request{ID: requests.NewID(), Kind: requests.KindBackup, Source: "data"}, 1)
	if probe.Index == nil {
		t.Fatalf("probe: %s %s", probe.Result.Status, probe.Result.Error)
	}
	req := requests.Request{ID: requests.NewID(), Kind: requests.KindBackup, Source: "data"}
	name := probe.Index.Artifacts[0].Name
	leftover := requests.ArtifactKey(req.ClusterOrDefault(), "data", req.ID, 1, name)
	if _, err := bucket.PutBytes(ctx, f.b, leftover, []byte("half of an earlier life"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	out := f.runAttempt(req, 1)
	if out.Result.Status != requests.StatusSucceeded || out.Index == nil {
		t.Fatalf("backup over leftovers: %s %s", out.Result.Status, out.Result.Error)
	}
	must(t, f.x.Commit(ctx, out))
	got, _, err := bucket.GetBytes(ctx, f.b, leftover)
	must(t, err)
	if int64(len(got)) != out.Index.Artifacts[0].StoredSize {
		t.Fatalf("artifact holds %d bytes, the index says %d", len(got), out.Index.Artifacts[0].StoredSize)
	}
}
