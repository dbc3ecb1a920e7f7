package executor_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
)

// faultyFixture is an executor whose bucket is a real versitygw reached
// through a fault proxy, with targets copy0..copyN-1, and a clean bucket
// on the same server and prefix for the test's own reads and writes.
type faultyFixture struct {
	fixture
	proxy *faultproxy.Proxy
	clean bucket.Bucket
	dir   string
}

func newFaultyFixture(t *testing.T, targets int, seed uint64) *faultyFixture {
	t.Helper()
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	p := faultproxy.Start(t, srv.Endpoint, seed)
	open := func(endpoint string) bucket.Bucket {
		b, err := s3.New(t.Context(), s3.Options{
			Bucket: name, Endpoint: endpoint, Region: srv.Region,
			AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Log: enginetest.TestLog(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		return bucket.Prefixed(b, "capsule/")
	}
	dir := t.TempDir()
	f := &faultyFixture{proxy: p, clean: open(srv.Endpoint), dir: dir}
	f.t, f.b, f.data = t, open(p.URL()), filepath.Join(dir, "data")
	must(t, os.MkdirAll(filepath.Join(f.data, "d"), 0o755))
	// Random data (incompressible, so the artifact has megabytes to cut)
	// and some text.
	rnd := make([]byte, 3<<20)
	_, _ = rand.Read(rnd)
	must(t, os.WriteFile(filepath.Join(f.data, "random.bin"), rnd, 0o600))
	must(t, os.WriteFile(filepath.Join(f.data, "d", "text.txt"), bytes.Repeat([]byte("capsule keeps backups\n"), 50000), 0o644))
	srcs := sources{"data": {Name: "data", Engine: "files", Config: map[string]any{"path": f.data}}}
	for i := range targets {
		name := fmt.Sprintf("copy%d", i)
		srcs[name] = engines.Source{Name: name, Engine: "files", Config: map[string]any{"path": filepath.Join(dir, name)}}
	}
	var err error
	f.x, err = executor.New(executor.Config{
		Bucket: f.b, Engines: engines.NewRegistry(files.New()), Worker: "test", Version: "test", Compression: "zstd",
		Sources: srcs, Log: enginetest.TestLog(t),
	})
	must(t, err)
	return f
}

// cutArtifactReads makes the proxy cut the body of rate of the GETs of
// artifacts part way.
func (f *faultyFixture) cutArtifactReads(rate float64) {
	f.proxy.SetRules(faultproxy.Rule{
		Filter: faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.GetObject}, Keys: faultproxy.Artifacts},
		Rate:   rate, Kinds: []faultproxy.Kind{faultproxy.Cut},
	})
}

func (f *faultyFixture) logFaults(t *testing.T) faultproxy.Stats {
	stats := f.proxy.Stats()
	t.Logf("proxy: %s", stats)
	for _, x := range f.proxy.Faults() {
		t.Logf("fault %d: %s %s %s %s", x.Seq, x.Op, x.Kind, x.Key, x.Detail)
	}
	return stats
}

// TestRestoresSurviveCutArtifactReads is issue #13's attack: ten restores
// of a real files backup from versitygw while 20 % of the GETs of its
// artifact (every resume included) have their body cut part way. Every
// restore must succeed and give back the exact tree: the read resumes
// from the byte it reached, and the checksum, which covers every stored
// byte exactly once, agrees.
func TestRestoresSurviveCutArtifactReads(t *testing.T) {
	const n = 10
	f := newFaultyFixture(t, n, 13)
	want := treeDigest(t, f.data)
	idx := f.backup()
	f.cutArtifactReads(0.2)
	failed := 0
	for i := range n {
		target := fmt.Sprintf("copy%d", i)
		out := f.run(requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: target})
		if out.Result.Status != requests.StatusSucceeded {
			failed++
			t.Errorf("restore %d of %d: %s: %s", i+1, n, out.Result.Status, out.Result.Error)
			continue
		}
		if got := treeDigest(t, filepath.Join(f.dir, target)); got != want {
			t.Errorf("restore %d of %d: the restored tree differs from the source", i+1, n)
		}
	}
	stats := f.logFaults(t)
	t.Logf("%d of %d restores failed; %d of %d artifact GETs cut", failed, n, stats.Of(faultproxy.Cut), stats.Matched[faultproxy.GetObject])
	if stats.Of(faultproxy.Cut) == 0 {
		t.Fatal("no artifact read was cut: the test proved nothing (change the seed)")
	}
}

// TestChecksumCatchesAFlippedByteWhileResuming: a stored byte of the
// artifact is flipped in the bucket, and half of the artifact's GETs are
// cut, so the read resumes several times. The restore must still fail on
// the checksum, naming the artifact, and leave the target untouched:
// resumed bytes are hashed once, not skipped.
func TestChecksumCatchesAFlippedByteWhileResuming(t *testing.T) {
	f := newFaultyFixture(t, 1, 7)
	idx := f.backup()
	ctx := context.Background()
	target := filepath.Join(f.dir, "copy0")
	must(t, os.MkdirAll(target, 0o755))
	must(t, os.WriteFile(filepath.Join(target, "precious"), []byte("live data"), 0o644))
	before := treeDigest(t, target)
	a := idx.Artifacts[0]
	data, _, err := bucket.GetBytes(ctx, f.clean, a.Key)
	must(t, err)
	bad := append([]byte(nil), data...)
	bad[len(bad)*3/4] ^= 0x01
	_, err = bucket.PutBytes(ctx, f.clean, a.Key, bad, bucket.PutOptions{})
	must(t, err)
	f.cutArtifactReads(0.6)
	for _, kind := range []requests.Kind{requests.KindRestore, requests.KindVerify} {
		out := f.run(requests.Request{Kind: kind, BackupID: idx.BackupID, Target: "copy0"})
		// A verification names the corrupt artifact in its record.
		said, _ := json.Marshal(out.Verification)
		if out.Result.Status != requests.StatusFailed || !strings.Contains(out.Result.Error+string(said), "artifact "+a.Name+" is corrupt") {
			t.Errorf("%s with a flipped byte: %s %q %s, want failed naming artifact %s as corrupt", kind, out.Result.Status, out.Result.Error, said, a.Name)
		}
	}
	if treeDigest(t, target) != before {
		t.Error("the target changed")
	}
	stats := f.logFaults(t)
	if stats.Of(faultproxy.Cut) < 3 {
		t.Fatalf("%d artifact reads cut: the test needs resumes to prove anything (change the seed)", stats.Of(faultproxy.Cut))
	}
	// The same backup, undamaged, restores through the same cuts: the
	// failure above was the flipped byte's.
	_, err = bucket.PutBytes(ctx, f.clean, a.Key, data, bucket.PutOptions{})
	must(t, err)
	out := f.run(requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy0"})
	if out.Result.Status != requests.StatusSucceeded {
		t.Errorf("restore of the repaired artifact: %s %q", out.Result.Status, out.Result.Error)
	}
	if _, err := index.Find(ctx, f.b, idx.BackupID); err != nil {
		t.Error(err)
	}
}
