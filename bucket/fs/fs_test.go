package fs_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/buckettest"
	"github.com/cnvrg/capsule/bucket/fs"
)

func newBucket(t *testing.T) *fs.Bucket {
	t.Helper()
	b, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	buckettest.Run(t, func(t *testing.T) bucket.Bucket { return newBucket(t) })
}

// TestConformanceSharedDir runs the suite against two Bucket values on one
// directory, as two processes would see it.
func TestConformanceSharedDir(t *testing.T) {
	dir := t.TempDir()
	buckettest.Run(t, func(t *testing.T) bucket.Bucket {
		return alternating{must(fs.New(dir)), must(fs.New(dir))}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// alternating sends writes to one Bucket and reads to another.
type alternating struct {
	*fs.Bucket
	reader *fs.Bucket
}

func (a alternating) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	return a.reader.Get(ctx, key)
}

func (a alternating) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	return a.reader.List(ctx, prefix, opts)
}

func TestInvalidKeys(t *testing.T) {
	b := newBucket(t)
	for _, key := range []string{"", "/abs", "a//b", "a/", "../up", "a/../b", "a/./b", ".", ".capsule-fs", ".capsule-fs/tmp/x", "nul\x00"} {
		if _, err := bucket.PutBytes(t.Context(), b, key, []byte("x"), bucket.PutOptions{}); err == nil {
			t.Errorf("put %q: no error", key)
		}
		if _, err := b.Head(t.Context(), key); err == nil || errors.Is(err, bucket.ErrNotFound) {
			t.Errorf("head %q: %v, want an invalid-key error", key, err)
		}
	}
	// Keys that merely look similar are fine.
	for _, key := range []string{"a..b", ".capsule-fsx", "x/.capsule-fs", "...", ".hidden"} {
		if _, err := bucket.PutBytes(t.Context(), b, key, []byte("x"), bucket.PutOptions{}); err != nil {
			t.Errorf("put %q: %v", key, err)
		}
	}
	// A prefix that escapes the directory lists nothing.
	page, err := b.List(t.Context(), "../", bucket.ListOptions{})
	if err != nil || len(page.Objects) != 0 {
		t.Errorf("list ../: %v %v", page.Objects, err)
	}
}

func TestInternalStateHidden(t *testing.T) {
	b := newBucket(t)
	u, err := b.Upload(t.Context(), "pending", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Abort()
	u.Write([]byte("in progress"))
	bucket.PutBytes(t.Context(), b, "a/b", []byte("x"), bucket.PutOptions{IfNoneMatch: true})
	page, err := b.List(t.Context(), "", bucket.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(page); !slices.Equal(got, []string{"a/b"}) {
		t.Fatalf("list: %q, want [a/b]", got)
	}
}

func TestDeleteRemovesEmptyDirs(t *testing.T) {
	b := newBucket(t)
	bucket.PutBytes(t.Context(), b, "a/b/c/d", []byte("x"), bucket.PutOptions{})
	bucket.PutBytes(t.Context(), b, "a/e", []byte("x"), bucket.PutOptions{})
	if err := b.Delete(t.Context(), "a/b/c/d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(b.Dir(), "a", "b")); !os.IsNotExist(err) {
		t.Errorf("a/b still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(b.Dir(), "a", "e")); err != nil {
		t.Errorf("a/e: %v", err)
	}
	// A directory is not an object: deleting its name is a no-op.
	if err := b.Delete(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(b.Dir(), "a", "e")); err != nil {
		t.Errorf("a/e after delete of a: %v", err)
	}
}

func TestForeignFile(t *testing.T) {
	b := newBucket(t)
	p := filepath.Join(b.Dir(), "synced", "obj")
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte("from elsewhere"), 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := b.Head(t.Context(), "synced/obj")
	if err != nil || info.Size != 14 || info.ETag == "" {
		t.Fatalf("head foreign file: %+v %v", info, err)
	}
	if _, err := bucket.PutBytes(t.Context(), b, "synced/obj", []byte("mine"), bucket.PutOptions{IfMatch: info.ETag}); err != nil {
		t.Fatalf("if-match on foreign file's etag: %v", err)
	}
}

func TestRetainUntilRefused(t *testing.T) {
	b := newBucket(t)
	opts := bucket.PutOptions{RetainUntil: time.Now().Add(time.Hour)}
	if _, err := bucket.PutBytes(t.Context(), b, "k", nil, opts); !errors.Is(err, fs.ErrRetentionUnsupported) {
		t.Errorf("put with RetainUntil: %v", err)
	}
	if _, err := b.Upload(t.Context(), "k", opts); !errors.Is(err, fs.ErrRetentionUnsupported) {
		t.Errorf("upload with RetainUntil: %v", err)
	}
}

func keysOf(page bucket.ListPage) []string {
	var out []string
	for _, o := range page.Objects {
		out = append(out, o.Key)
	}
	return out
}

// The test binary re-executes itself as a racer when this is set.
const childEnv = "CAPSULE_FS_RACER"

// TestProcessRace races create-only and If-Match writes from several OS
// processes on one directory and counts the winners of each round.
func TestProcessRace(t *testing.T) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(racer(dir))
	}
	const procs = 8
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := newBucket(t)
	var racers []*child
	for i := 0; i < procs; i++ {
		racers = append(racers, startChild(t, exe, b.Dir()))
	}
	for round := 0; round < buckettest.Rounds; round++ {
		key := fmt.Sprintf("leases/%d.json", round)
		if w := raceRound(t, racers, "create "+key); w != 1 {
			t.Fatalf("create-only round %d: %d winners of %d processes, want 1", round, w, procs)
		}
		info, err := b.Head(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if w := raceRound(t, racers, "cas "+key+" "+info.ETag); w != 1 {
			t.Fatalf("if-match round %d: %d winners of %d processes, want 1", round, w, procs)
		}
	}
}

type child struct {
	stdin io.WriteCloser
	out   *bufio.Scanner
}

func startChild(t *testing.T, exe, dir string) *child {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^TestProcessRace$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the child exits at the end of its input
		cmd.Wait()
	})
	return &child{stdin: stdin, out: bufio.NewScanner(stdout)}
}

// raceRound sends one command to every child (they all wait on their
// input, so they start together) and counts the children that won.
func raceRound(t *testing.T, racers []*child, command string) int {
	t.Helper()
	for _, c := range racers {
		if _, err := fmt.Fprintln(c.stdin, command); err != nil {
			t.Fatal(err)
		}
	}
	winners := 0
	for _, c := range racers {
		if !c.out.Scan() {
			t.Fatalf("racer ended: %v", c.out.Err())
		}
		switch line := c.out.Text(); line {
		case "won":
			winners++
		case "lost":
		default:
			t.Fatalf("racer: %s", line)
		}
	}
	return winners
}

// racer is the child's side: for each line "create KEY" or "cas KEY ETAG"
// on stdin it writes KEY and answers "won", "lost" or an error.
func racer(dir string) int {
	b, err := fs.New(dir)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	in := bufio.NewScanner(os.Stdin)
	for n := 0; in.Scan(); n++ {
		f := strings.Fields(in.Text())
		opts := bucket.PutOptions{IfNoneMatch: f[0] == "create"}
		if f[0] == "cas" {
			opts.IfMatch = f[2]
		}
		body := fmt.Sprintf("%s by process %d, command %d", f[0], os.Getpid(), n)
		_, err = bucket.PutBytes(context.Background(), b, f[1], []byte(body), opts)
		switch {
		case err == nil:
			fmt.Println("won")
		case errors.Is(err, bucket.ErrPreconditionFailed):
			fmt.Println("lost")
		default:
			fmt.Println(strings.ReplaceAll(err.Error(), "\n", " "))
		}
	}
	return 0
}
