package executor_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// pipeEngine backs up what a child process writes to its standard output,
// copied with io.Copy into the artifact as the database engines copy
// pg_dump's, and restores by writing the artifact to a file.
type pipeEngine struct {
	// argv is the child's command line; src, when set, is copied instead.
	argv []string
	src  io.Reader
	// pipeSize is set by a backup to the size of the child's stdout pipe
	// after the copy (Linux; 0 elsewhere).
	pipeSize int
}

func (e *pipeEngine) Name() string                  { return "pipe" }
func (e *pipeEngine) Validate(engines.Source) error { return nil }

func (e *pipeEngine) Backup(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	w, err := job.Artifacts.Create("data.bin")
	if err != nil {
		return nil, err
	}
	if e.src != nil {
		if _, err := io.Copy(w, e.src); err != nil {
			return nil, err
		}
	} else {
		cmd := exec.CommandContext(ctx, e.argv[0], e.argv[1:]...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		_, copyErr := io.Copy(w, out)
		e.pipeSize = pipeSize(out.(*os.File))
		if err := cmd.Wait(); err != nil {
			return nil, err
		}
		if copyErr != nil {
			return nil, copyErr
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return &engines.BackupInfo{Format: "pipe/1"}, nil
}

func (e *pipeEngine) Restore(ctx context.Context, job *engines.RestoreJob) (*engines.RestoreInfo, error) {
	r, err := job.Artifacts.Open(ctx, "data.bin")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return nil, os.WriteFile(job.Target.Config["path"].(string), data, 0o600)
}

func newPipeExecutor(t *testing.T, e *pipeEngine, target string) (*executor.Executor, bucket.Bucket) {
	t.Helper()
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	must(t, err)
	b := bucket.Prefixed(fb, "capsule/")
	x, err := executor.New(executor.Config{
		Bucket: b, Engines: engines.NewRegistry(e), Worker: "test", Version: "test",
		Sources: sources{
			"p":    {Name: "p", Engine: "pipe"},
			"copy": {Name: "copy", Engine: "pipe", Config: map[string]any{"path": target}},
		},
		Log: enginetest.TestLog(t),
	})
	must(t, err)
	return x, b
}

// A tool's output reaches the artifact through the writer's ReadFrom
// (io.Copy from a pipe), which grows the pipe, and comes back unchanged.
func TestBackupCopiedFromAToolsPipe(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	// Random and repetitive parts, several pipe- and read-sizes long.
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	data = append(data, bytes.Repeat([]byte("capsule copies pipes\n"), 200000)...)
	must(t, os.WriteFile(src, data, 0o600))
	e := &pipeEngine{argv: []string{"cat", src}}
	target := filepath.Join(dir, "restored")
	x, _ := newPipeExecutor(t, e, target)
	ctx := context.Background()

	req := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Source: "p"}
	out := x.Run(ctx, req, 1, executor.NewTracker())
	if out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("backup: %s %s", out.Result.Status, out.Result.Error)
	}
	must(t, x.Commit(ctx, out))
	if a := out.Index.Artifacts[0]; a.Size != int64(len(data)) || a.StoredSize >= a.Size {
		t.Errorf("artifact size %d stored %d, want %d raw, compressed", a.Size, a.StoredSize, len(data))
	}
	if wantPipeSize > 0 && e.pipeSize < wantPipeSize {
		t.Errorf("the tool's stdout pipe holds %d bytes after the copy, want at least %d", e.pipeSize, wantPipeSize)
	}

	rreq := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindRestore, ID: requests.NewID(), BackupID: req.ID, Target: "copy"}
	if out := x.Run(ctx, rreq, 1, executor.NewTracker()); out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("restore: %s %s", out.Result.Status, out.Result.Error)
	}
	got, err := os.ReadFile(target)
	must(t, err)
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("restored %d bytes differ from the %d backed up", len(got), len(data))
	}
}

// A read that fails midway fails the backup with that error, and the
// partial artifact is not left in the bucket.
func TestBackupWhoseSourceFailsMidwayLeavesNothing(t *testing.T) {
	boom := errors.New("the tool died")
	head := bytes.Repeat([]byte("x"), 5<<20)
	e := &pipeEngine{src: io.MultiReader(bytes.NewReader(head), failingReader{boom})}
	x, b := newPipeExecutor(t, e, filepath.Join(t.TempDir(), "unused"))
	ctx := context.Background()
	req := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Source: "p"}
	out := x.Run(ctx, req, 1, executor.NewTracker())
	if out.Result.Status != requests.StatusFailed || !strings.Contains(out.Result.Error, boom.Error()) || out.Index != nil {
		t.Fatalf("backup: %s %q index %v, want failed with %q and no index", out.Result.Status, out.Result.Error, out.Index != nil, boom)
	}
	var left []string
	must(t, bucket.Walk(ctx, b, "backups/", func(o bucket.ObjectInfo) error {
		left = append(left, o.Key)
		return nil
	}))
	if len(left) > 0 {
		t.Fatalf("a failed backup left %v", left)
	}
	if _, err := index.Find(ctx, b, req.ID); !errors.Is(err, index.ErrBackupNotFound) {
		t.Fatalf("index of a failed backup: %v", err)
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }
