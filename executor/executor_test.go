package executor_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/schemas"
)

type sources map[string]engines.Source

func (s sources) Lookup(name string) (engines.Source, error) {
	src, ok := s[name]
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
	}
	return src, nil
}

type fixture struct {
	t    *testing.T
	b    bucket.Bucket
	x    *executor.Executor
	data string
	copy string
}

// newFixtureWith is newFixture with configure applied to the executor's
// configuration (nil: none).
func newFixtureWith(t *testing.T, compression string, configure func(*executor.Config)) *fixture {
	if configure == nil {
		return newFixture(t, compression)
	}
	return newFixture(t, compression, configure)
}

func newFixture(t *testing.T, compression string, opts ...func(*executor.Config)) *fixture {
	dir := t.TempDir()
	fb, err := fs.New(filepath.Join(dir, "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, b: bucket.Prefixed(fb, "capsule/"), data: filepath.Join(dir, "data"), copy: filepath.Join(dir, "copy")}
	if err := os.MkdirAll(filepath.Join(f.data, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Some random data (incompressible) and some text (compressible),
	// more than one zstd block.
	rnd := make([]byte, 3<<20)
	_, _ = rand.Read(rnd)
	must(t, os.WriteFile(filepath.Join(f.data, "random.bin"), rnd, 0o600))
	must(t, os.WriteFile(filepath.Join(f.data, "d", "text.txt"), bytes.Repeat([]byte("capsule keeps backups\n"), 200000), 0o644))
	must(t, os.Symlink("d/text.txt", filepath.Join(f.data, "link")))
	cfg := executor.Config{
		Bucket: f.b, Engines: engines.NewRegistry(files.New()), Worker: "test", Version: "test", Compression: compression,
		Sources: sources{
			"data": {Name: "data", Engine: "files", Config: map[string]any{"path": f.data}},
			"copy": {Name: "copy", Engine: "files", Config: map[string]any{"path": f.copy}},
		},
		Log: enginetest.TestLog(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	f.x, err = executor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) run(req requests.Request) *executor.Outcome {
	f.t.Helper()
	req.APIVersion = requests.APIVersion
	if req.ID == "" {
		req.ID = requests.NewID()
	}
	if err := req.Validate(); err != nil {
		f.t.Fatal(err)
	}
	out := f.x.Run(context.Background(), &req, 1, executor.NewTracker())
	if err := f.x.Commit(context.Background(), out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func (f *fixture) backup() *index.BackupIndex {
	f.t.Helper()
	out := f.run(requests.Request{Kind: requests.KindBackup, Source: "data", Labels: map[string]string{"why": "test"}})
	if out.Result.Status != requests.StatusSucceeded {
		f.t.Fatalf("backup: %s %s", out.Result.Status, out.Result.Error)
	}
	return out.Index
}

func treeDigest(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s %v %d %d\n", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintln(h, target)
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestBackupAndRestoreThroughTheBucket(t *testing.T) {
	for _, compression := range []string{"zstd", "zstd-fastest", "none"} {
		t.Run(compression, func(t *testing.T) {
			f := newFixture(t, compression)
			want := treeDigest(t, f.data)
			idx := f.backup()
			ctx := context.Background()
			var v schemas.Validator
			raw, _, err := bucket.GetBytes(ctx, f.b, idx.Key())
			must(t, err)
			if err := v.Validate("backupIndex", raw); err != nil {
				t.Fatal(err)
			}
			if idx.Engine != "files" || idx.Format == "" || idx.CapsuleVersion != "test" || idx.Labels["why"] != "test" {
				t.Errorf("index fields: %+v", idx)
			}
			// Every artifact's stored bytes match the recorded size and sha256.
			for _, a := range idx.Artifacts {
				data, info, err := bucket.GetBytes(ctx, f.b, a.Key)
				must(t, err)
				sum := sha256.Sum256(data)
				if int64(len(data)) != a.StoredSize || info.Size != a.StoredSize || hex.EncodeToString(sum[:]) != a.SHA256 {
					t.Errorf("artifact %s: stored %d bytes sha %x, index says %d %s", a.Name, len(data), sum, a.StoredSize, a.SHA256)
				}
				if compression != "none" && a.StoredSize >= a.Size {
					t.Errorf("artifact %s not compressed: %d -> %d", a.Name, a.Size, a.StoredSize)
				}
			}
			out := f.run(requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"})
			if out.Result.Status != requests.StatusSucceeded {
				t.Fatalf("restore: %s %s", out.Result.Status, out.Result.Error)
			}
			if got := treeDigest(t, f.copy); got != want {
				t.Fatalf("restored tree differs from the source")
			}
		})
	}
}

func TestFlippedStoredByteFailsRestoreBeforeTouchingTheTarget(t *testing.T) {
	f := newFixture(t, "zstd")
	idx := f.backup()
	ctx := context.Background()
	must(t, os.MkdirAll(f.copy, 0o755))
	must(t, os.WriteFile(filepath.Join(f.copy, "precious"), []byte("live data"), 0o644))
	before := treeDigest(t, f.copy)
	a := idx.Artifacts[0]
	data, _, err := bucket.GetBytes(ctx, f.b, a.Key)
	must(t, err)
	for _, pos := range []int{len(data) / 2, len(data) - 1} { // in the frames, and in the last byte
		bad := append([]byte(nil), data...)
		bad[pos] ^= 0x01
		_, err = bucket.PutBytes(ctx, f.b, a.Key, bad, bucket.PutOptions{})
		must(t, err)
		out := f.run(requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"})
		if out.Result.Status != requests.StatusFailed || !strings.Contains(out.Result.Error, "artifact "+a.Name+" is corrupt") {
			t.Fatalf("byte %d flipped: restore %s %q, want failed naming artifact %s", pos, out.Result.Status, out.Result.Error, a.Name)
		}
		if treeDigest(t, f.copy) != before {
			t.Fatalf("byte %d flipped: the target changed", pos)
		}
		out = f.run(requests.Request{Kind: requests.KindVerify, BackupID: idx.BackupID})
		if out.Result.Status != requests.StatusFailed {
			t.Fatalf("byte %d flipped: verify %s", pos, out.Result.Status)
		}
	}
	entries, err := index.List(ctx, f.b, index.Filter{Cluster: "default"})
	must(t, err)
	if len(entries) != 1 || entries[0].Verification == nil || entries[0].Verification.OK {
		t.Fatalf("the failed verification is not what the catalog shows: %+v", entries[0].Verification)
	}
}

func TestVerifyRecordsTheOutcomeBesideTheIndex(t *testing.T) {
	f := newFixture(t, "zstd")
	idx := f.backup()
	ctx := context.Background()
	out := f.run(requests.Request{Kind: requests.KindVerify, BackupID: idx.BackupID})
	if out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("verify: %s %s", out.Result.Status, out.Result.Error)
	}
	e, err := index.Find(ctx, f.b, idx.BackupID)
	must(t, err)
	if e.Verification == nil || !e.Verification.OK || len(e.Verification.Checks) == 0 {
		t.Fatalf("verification not recorded: %+v", e.Verification)
	}
	// The index itself was not rewritten.
	_, info, err := bucket.GetBytes(ctx, f.b, idx.Key())
	must(t, err)
	raw, _, _ := bucket.GetBytes(ctx, f.b, idx.Key())
	var v schemas.Validator
	if err := v.Validate("backupIndex", raw); err != nil {
		t.Error(err)
	}
	_ = info
	var keys []string
	must(t, bucket.Walk(ctx, f.b, requests.BackupDir("default", "data", idx.BackupID), func(o bucket.ObjectInfo) error {
		keys = append(keys, o.Key)
		if strings.Contains(o.Key, "/verify-") {
			data, _, _ := bucket.GetBytes(ctx, f.b, o.Key)
			if err := v.Validate("verification", data); err != nil {
				t.Error(err)
			}
		}
		return nil
	}))
	if len(keys) != 3 { // index, artifact, verification
		t.Errorf("backup folder holds %v", keys)
	}
}

func TestRejections(t *testing.T) {
	f := newFixture(t, "zstd")
	idx := f.backup()
	for _, c := range []struct {
		req  requests.Request
		want string
	}{
		{requests.Request{Kind: requests.KindBackup, Source: "nope"}, "unknown source"},
		{requests.Request{Kind: requests.KindRestore, BackupID: "nope"}, "backup not found"},
		{requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "nope"}, "unknown source"},
	} {
		out := f.run(c.req)
		if out.Result.Status != requests.StatusRejected || !strings.Contains(out.Result.Error, c.want) {
			t.Errorf("%+v: %s %q, want rejected with %q", c.req, out.Result.Status, out.Result.Error, c.want)
		}
	}
}

func TestCanceledBackupLeavesNoIndex(t *testing.T) {
	f := newFixture(t, "zstd")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(executor.ErrCanceled)
	req := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Source: "data"}
	out := f.x.Run(ctx, req, 1, nil)
	if out.Result.Status != requests.StatusCanceled || out.Index != nil {
		t.Fatalf("status %s index %v", out.Result.Status, out.Index)
	}
	if _, err := index.Find(context.Background(), f.b, req.ID); !errors.Is(err, index.ErrBackupNotFound) {
		t.Fatalf("index after cancel: %v", err)
	}
	_ = time.Now
}

// TestDamagedIndexIsRejected: a restore or verification of a backup whose
// index does not match its key (here: it names another backup's artifact)
// is rejected, naming the key and the reason, and the target is not
// touched.
func TestDamagedIndexIsRejected(t *testing.T) {
	f := newFixture(t, "zstd")
	ctx := context.Background()
	victim := f.backup()
	forged := *f.backup()
	forged.Artifacts = append([]index.Artifact(nil), victim.Artifacts...) // the victim's keys
	data, err := json.Marshal(&forged)
	must(t, err)
	_, err = bucket.PutBytes(ctx, f.b, forged.Key(), data, bucket.PutOptions{})
	must(t, err)
	must(t, os.MkdirAll(f.copy, 0o755))
	must(t, os.WriteFile(filepath.Join(f.copy, "precious"), []byte("live data"), 0o644))
	before := treeDigest(t, f.copy)
	for _, kind := range []requests.Kind{requests.KindRestore, requests.KindVerify} {
		out := f.run(requests.Request{Kind: kind, BackupID: forged.BackupID, Target: "copy"})
		if out.Result.Status != requests.StatusRejected || !strings.Contains(out.Result.Error, "damaged") || !strings.Contains(out.Result.Error, forged.Key()) {
			t.Errorf("%s of the forged backup: %s %q, want rejected naming %s as damaged", kind, out.Result.Status, out.Result.Error, forged.Key())
		}
	}
	if treeDigest(t, f.copy) != before {
		t.Error("the target changed")
	}
}
