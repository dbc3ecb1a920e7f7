package files

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// TestEngine runs the suite. A restore never sets the setuid, setgid and
// sticky bits the seeded tree has, so snapshots are compared without them
// (TestSpecialBitsDropped checks they are gone).
func TestEngine(t *testing.T) {
	enginetest.Run(t, New(), newTree(t), enginetest.Options{Compare: compareRestored})
}

// TestEngineInPlace runs the suite with the swap a mount point needs
// (staging inside the target, entries renamed one by one): no mount can
// be made here, so the engine is told to act as if. The previous tree is
// dropped: kept, it would stay inside the target (TestKeepPrevious).
func TestEngineInPlace(t *testing.T) {
	e := New()
	e.inPlace = true
	enginetest.Run(t, e, newTree(t), enginetest.Options{Compare: compareRestored, Restore: engines.RestoreOptions{DropPrevious: true}})
}

// compareRestored compares two snapshots without the setuid, setgid and
// sticky bits.
func compareRestored(want, got any) string {
	return enginetest.DeepCompare(restored(want.([]node)), restored(got.([]node)))
}

// restored is what a restore of a snapshot's tree gives: the same tree
// without setuid, setgid and sticky bits.
func restored(nodes []node) []node {
	out := slices.Clone(nodes)
	for i := range out {
		out[i].mode &^= specialBits
		out[i].Mode = out[i].mode.String()
	}
	return out
}

const specialBits = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// tree is an enginetest.Service: a directory of its own under the test's
// temp directory.
type tree struct {
	dir string
}

func newTree(t *testing.T) *tree {
	return &tree{dir: filepath.Join(t.TempDir(), "data-"+randomName(t))}
}

func randomName(t testing.TB) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func (s *tree) Source(t *testing.T) engines.Source {
	return source(s.dir)
}

func source(dir string) engines.Source {
	return engines.Source{Name: "test/files", Engine: "files", Config: map[string]any{"path": dir}}
}

// The names the seeded tree uses; Damage and the tests refer to them.
var (
	unicodeName = "ünïcødé-文件 with spaces.txt"
	longName    = strings.Repeat("a-very-long-file-name-", 6) + "end.txt" // > 100 bytes
	longDirs    = filepath.Join(strings.Repeat("d", 90), strings.Repeat("e", 90), strings.Repeat("f", 90))
)

func (s *tree) Seed(ctx context.Context, t *testing.T) {
	t.Helper()
	if err := removeTree(s.dir); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 5<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	files := []struct {
		name string
		data []byte
		mode fs.FileMode
	}{
		{"a/file.txt", []byte("hello\n"), 0o644},
		{"a/b/c/deep.txt", []byte("deep\n"), 0o644},
		{"empty-file", nil, 0o600},
		{"big.bin", big, 0o644},
		{"private.txt", []byte("private\n"), 0o600},
		{"script.sh", []byte("#!/bin/sh\necho hi\n"), 0o755},
		{"setuid-tool", []byte("tool"), 0o755 | fs.ModeSetuid},
		{"secret-dir/inner.txt", []byte("inner"), 0o640},
		{"shared/group.txt", []byte("group"), 0o664},
		{unicodeName, []byte("unicode"), 0o644},
		{longName, []byte("long"), 0o644},
		{filepath.Join(longDirs, longName), []byte("long path"), 0o644},
	}
	dirs := []struct {
		name string
		mode fs.FileMode
	}{
		{"", 0o751},
		{"a", 0o755}, {"a/b", 0o755}, {"a/b/c", 0o755},
		{"empty-dir", 0o755},
		{"secret-dir", 0o700},
		{"shared", 0o775 | fs.ModeSetgid},
		{"sticky", 0o777 | fs.ModeSticky},
	}
	links := []struct{ name, target string }{
		{"link-to-file", "a/file.txt"},
		{"dangling", "does/not/exist"},
		{"dirlink", "a/b"},
		{"a/b/up", "../.."},
		{"abslink", "/etc/hostname"},
	}
	p := func(name string) string { return filepath.Join(s.dir, name) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dirs {
		must(os.MkdirAll(p(d.name), 0o755))
	}
	must(os.MkdirAll(p(longDirs), 0o755))
	for _, f := range files {
		must(os.WriteFile(p(f.name), f.data, 0o600))
		must(os.Chmod(p(f.name), f.mode))
	}
	for _, l := range links {
		must(os.Symlink(l.target, p(l.name)))
	}
	for _, d := range dirs {
		must(os.Chmod(p(d.name), d.mode))
	}
	// Distinct nanosecond mtimes on everything, directories last and
	// deepest first, so creating children does not disturb them.
	var all []string
	must(filepath.WalkDir(s.dir, func(q string, d fs.DirEntry, err error) error {
		all = append(all, q)
		return err
	}))
	slices.SortStableFunc(all, func(a, b string) int {
		da, _ := os.Lstat(a)
		db, _ := os.Lstat(b)
		if da.IsDir() != db.IsDir() {
			if da.IsDir() {
				return 1
			}
			return -1
		}
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	base := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	for i, q := range all {
		must(lutimes(q, base.Add(time.Duration(i)*time.Hour+time.Duration(123456789+i))))
	}
}

// node is one path of a snapshot.
type node struct {
	Path   string
	Mode   string // type and permission bits, with setuid, setgid, sticky
	mode   fs.FileMode
	UID    uint32
	GID    uint32
	Size   int64 // regular files
	SHA256 string
	Link   string
	Mtime  int64 // ns
}

func (s *tree) Snapshot(ctx context.Context, t *testing.T) any {
	t.Helper()
	return snapshot(t, s.dir)
}

func snapshot(t testing.TB, dir string) []node {
	t.Helper()
	var nodes []node
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := fi.Sys().(*syscall.Stat_t)
		n := node{Path: rel, Mode: fi.Mode().String(), mode: fi.Mode(), UID: st.Uid, GID: st.Gid, Mtime: fi.ModTime().UnixNano()}
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			n.Size, n.SHA256 = fi.Size(), hex.EncodeToString(h.Sum(nil))
		case fi.Mode()&fs.ModeSymlink != 0:
			if n.Link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		nodes = append(nodes, n)
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return nodes
}

func (s *tree) Damage(ctx context.Context, t *testing.T) {
	t.Helper()
	p := func(name string) string { return filepath.Join(s.dir, name) }
	for _, err := range []error{
		os.Remove(p("a/file.txt")),
		os.Remove(p("big.bin")),
		os.RemoveAll(p("a/b/c")),
		os.WriteFile(p("private.txt"), []byte("changed\n"), 0o600),
		os.Chmod(p("script.sh"), 0o600),
		os.WriteFile(p("stray.txt"), []byte("stray"), 0o644),
	} {
		if err != nil {
			t.Fatalf("damage: %v", err)
		}
	}
}

// listDir names a directory's entries.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

func mustBackup(t *testing.T, e *Engine, dir string) (*enginetest.Store, engines.BackupInfo) {
	t.Helper()
	return enginetest.Backup(context.Background(), t, e, source(dir))
}

func restoreJob(t *testing.T, store *enginetest.Store, dir string, info engines.BackupInfo, extra map[string]string) *engines.RestoreJob {
	return store.RestoreJob(t, "r", source(dir), info, engines.RestoreOptions{Extra: extra})
}

func TestBackupInfo(t *testing.T) {
	ctx := context.Background()
	svc := newTree(t)
	svc.Seed(ctx, t)
	_, info := mustBackup(t, New(), svc.dir)
	host, _ := os.Hostname()
	if info.Format != "tar/v1" || info.SourceInfo["path"] != svc.dir || info.SourceInfo["host"] != host {
		t.Errorf("info = %+v", info)
	}
	var want counts
	for _, n := range snapshot(t, svc.dir)[1:] {
		switch n.Mode[0] {
		case 'd':
			want.Dirs++
		case 'L':
			want.Symlinks++
		default:
			want.Files++
			want.Bytes += n.Size
		}
	}
	got := counts{info.Details["files"].(int64), info.Details["dirs"].(int64), info.Details["symlinks"].(int64), info.Details["bytes"].(int64)}
	if got != want {
		t.Errorf("details count %+v, the tree has %+v", got, want)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  map[string]any
		want string // in the error
	}{
		{"no path", map[string]any{}, "path is required"},
		{"relative path", map[string]any{"path": "data/x"}, "path \"data/x\" must be absolute"},
		{"root", map[string]any{"path": "/"}, "path must not be the root"},
		{"bad pattern", map[string]any{"path": "/x", "exclude": []string{"ok", "[a-"}}, "exclude[1]"},
		{"absolute pattern", map[string]any{"path": "/x", "exclude": []string{"/etc"}}, "exclude[0]"},
		{"unknown", map[string]any{"path": "/x", "pathz": "/y"}, "pathz"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := New().Validate(engines.Source{Name: "s", Engine: "files", Config: c.cfg})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, c.want)
			}
		})
	}
	ok := map[string]any{"path": "/x/", "exclude": []string{"*.log", "cache/*"}, "passwordEnv": "IGNORED"}
	if err := New().Validate(engines.Source{Name: "s", Engine: "files", Config: ok}); err != nil {
		t.Errorf("Validate(%v) = %v", ok, err)
	}
}

// TestRestoreIntoNewPath restores into a path whose parents do not exist
// (a different path from the backup's), and shows a failed restore there
// removes the parents it created.
func TestRestoreIntoNewPath(t *testing.T) {
	ctx := context.Background()
	svc := newTree(t)
	svc.Seed(ctx, t)
	want := snapshot(t, svc.dir)
	store, info := mustBackup(t, New(), svc.dir)

	base := t.TempDir()
	target := filepath.Join(base, "new", "deeper", "target")
	rinfo, err := New().Restore(ctx, restoreJob(t, store, target, info, nil))
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if rinfo.Previous != "" {
		t.Errorf("Previous = %q for a target that did not exist", rinfo.Previous)
	}
	if diff := enginetest.DeepCompare(restored(want), snapshot(t, target)); diff != "" {
		t.Fatalf("restored tree differs: %s", diff)
	}
	if got := listDir(t, filepath.Dir(target)); !slices.Equal(got, []string{"target"}) {
		t.Errorf("parent holds %q, want only target", got)
	}

	corrupt := store.Clone()
	corrupt.Flip(t, ArtifactName)
	_, err = New().Restore(ctx, restoreJob(t, corrupt, filepath.Join(base, "other", "x", "target"), info, nil))
	var ce *engines.ChecksumError
	if !errors.As(err, &ce) {
		t.Fatalf("Restore of a corrupt backup: %v, want a ChecksumError", err)
	}
	if got := listDir(t, base); !slices.Equal(got, []string{"new"}) {
		t.Errorf("after a failed restore into a new path, %s holds %q, want only new", base, got)
	}
}

// TestFailedRestoreLeavesNoStaging checks the target's parent directory,
// not just the target, after a corrupt and a canceled restore.
func TestFailedRestoreLeavesNoStaging(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		t.Run(fmt.Sprintf("inPlace=%v", inPlace), func(t *testing.T) {
			ctx := context.Background()
			e := New()
			e.inPlace = inPlace
			svc := newTree(t)
			svc.Seed(ctx, t)
			store, info := mustBackup(t, e, svc.dir)
			svc.Damage(ctx, t)
			parent := filepath.Dir(svc.dir)
			beforeParent := listDir(t, parent)
			before := snapshot(t, svc.dir)

			corrupt := store.Clone()
			corrupt.Flip(t, ArtifactName)
			if _, err := e.Restore(ctx, restoreJob(t, corrupt, svc.dir, info, nil)); err == nil {
				t.Fatal("Restore of a corrupt backup succeeded")
			}
			if got := listDir(t, parent); !slices.Equal(got, beforeParent) {
				t.Errorf("after a corrupt restore the parent holds %q, before %q", got, beforeParent)
			}
			if diff := enginetest.DeepCompare(before, snapshot(t, svc.dir)); diff != "" {
				t.Errorf("target changed: %s", diff)
			}

			cctx, cancel := context.WithCancel(ctx)
			job := restoreJob(t, store, svc.dir, info, nil)
			job.Progress = func(phase string, done, total int64) {
				if phase == "extract" && done > 0 {
					cancel()
				}
			}
			_, err := e.Restore(cctx, job)
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("canceled Restore: %v, want context.Canceled", err)
			}
			if got := listDir(t, parent); !slices.Equal(got, beforeParent) {
				t.Errorf("after a canceled restore the parent holds %q, before %q", got, beforeParent)
			}
			if diff := enginetest.DeepCompare(before, snapshot(t, svc.dir)); diff != "" {
				t.Errorf("target changed: %s", diff)
			}
		})
	}
}

// TestKeepPrevious: by default the replaced tree is kept beside the target
// (inside it when the target must be swapped in place), named like the
// staging directory, and reported in RestoreInfo.Previous. keepPrevious
// "true", the option's old spelling, means the same.
func TestKeepPrevious(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		for _, extra := range []map[string]string{nil, {"keepPrevious": "true"}} {
			t.Run(fmt.Sprintf("inPlace=%v/extra=%v", inPlace, extra), func(t *testing.T) {
				ctx := context.Background()
				e := New()
				e.inPlace = inPlace
				svc := newTree(t)
				svc.Seed(ctx, t)
				want := restored(snapshot(t, svc.dir))
				store, info := mustBackup(t, e, svc.dir)
				svc.Damage(ctx, t)
				damaged := snapshot(t, svc.dir)

				job := restoreJob(t, store, svc.dir, info, extra)
				rinfo, err := e.Restore(ctx, job)
				if err != nil {
					t.Fatalf("Restore: %v", err)
				}
				wantPrev := filepath.Join(filepath.Dir(svc.dir), "."+filepath.Base(svc.dir)+".capsule-prev-"+job.ID+".a1")
				if inPlace {
					wantPrev = filepath.Join(svc.dir, ".capsule-prev-"+job.ID+".a1")
				}
				if rinfo.Previous != wantPrev {
					t.Fatalf("RestoreInfo.Previous = %q, want %q", rinfo.Previous, wantPrev)
				}
				got := snapshot(t, svc.dir)
				if inPlace {
					// The kept tree lives inside the target: leave it out.
					prefix := filepath.Base(rinfo.Previous)
					got = slices.DeleteFunc(got, func(n node) bool { return strings.HasPrefix(n.Path, prefix) })
					// Its removal would have changed the root's mtime.
					got[0].Mtime, want[0].Mtime = 0, 0
				}
				if diff := enginetest.DeepCompare(want, got); diff != "" {
					t.Errorf("restored tree differs: %s", diff)
				}
				prev := snapshot(t, rinfo.Previous)
				// The old root's mode and mtime are not kept in place mode.
				prev[0], damaged[0] = node{}, node{}
				if diff := enginetest.DeepCompare(damaged, prev); diff != "" {
					t.Errorf("kept previous tree differs from the replaced one: %s", diff)
				}
			})
		}
	}
}

// TestDropPrevious: dropPrevious removes the replaced tree; keepPrevious
// other than "true" (or with dropPrevious) is refused before anything.
func TestDropPrevious(t *testing.T) {
	ctx := context.Background()
	svc := newTree(t)
	svc.Seed(ctx, t)
	store, info := mustBackup(t, New(), svc.dir)
	svc.Damage(ctx, t)
	parent := filepath.Dir(svc.dir)
	damaged := snapshot(t, svc.dir)
	for _, opts := range []engines.RestoreOptions{
		{Extra: map[string]string{"keepPrevious": "false"}},
		{DropPrevious: true, Extra: map[string]string{"keepPrevious": "true"}},
	} {
		_, err := New().Restore(ctx, store.RestoreJob(t, "r", source(svc.dir), info, opts))
		if err == nil || !strings.Contains(err.Error(), "dropPrevious") {
			t.Errorf("Restore with %+v = %v, want an error naming dropPrevious", opts, err)
		}
		if diff := enginetest.DeepCompare(damaged, snapshot(t, svc.dir)); diff != "" {
			t.Errorf("a refused restore changed the target: %s", diff)
		}
	}
	rinfo, err := New().Restore(ctx, store.RestoreJob(t, "r", source(svc.dir), info, engines.RestoreOptions{DropPrevious: true}))
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if rinfo.Previous != "" {
		t.Errorf("Previous = %q with dropPrevious", rinfo.Previous)
	}
	if got := listDir(t, parent); !slices.Equal(got, []string{filepath.Base(svc.dir)}) {
		t.Errorf("parent holds %q after a restore with dropPrevious, want only the target", got)
	}
	if rinfo.Downtime <= 0 || rinfo.Downtime > time.Second {
		t.Errorf("Downtime = %v for two renames", rinfo.Downtime)
	}
}

// hostile builds a tar from headers (regular files get a few bytes).
func hostile(t *testing.T, hs ...*tar.Header) *enginetest.Store {
	t.Helper()
	store := enginetest.NewStore()
	w, err := store.Create(ArtifactName)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(w)
	for _, h := range hs {
		if h.Typeflag == tar.TypeReg {
			h.Size = 4
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte("evil")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return store
}

// TestRestoreRefusesEscapes restores forged archives (a real backup's
// index, its tree.tar replaced by a crafted one whose checksum the forger
// recorded) that try to write outside the target, in place and by
// rename: each is refused, the target is unchanged, and nothing appears
// beside it, in a sibling canary directory or under /tmp.
func TestRestoreRefusesEscapes(t *testing.T) {
	ctx := context.Background()
	svc := newTree(t)
	svc.Seed(ctx, t)
	_, info := mustBackup(t, New(), svc.dir)
	tmpCanary := filepath.Join(os.TempDir(), "capsule-canary-"+randomName(t))
	tmpEscape := filepath.Join(os.TempDir(), "capsule-escape-"+randomName(t))
	if err := os.Mkdir(tmpCanary, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(tmpCanary); _ = os.RemoveAll(tmpEscape) })
	for _, inPlace := range []bool{false, true} {
		base := t.TempDir()
		target := filepath.Join(base, "target")
		outside := filepath.Join(base, "outside")
		canary := filepath.Join(base, "canary")
		canaryFile := filepath.Join(canary, "canary.txt")
		if err := os.MkdirAll(canary, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(canaryFile, []byte("canary"), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := func(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755} }
		file := func(name string) *tar.Header { return &tar.Header{Name: name, Typeflag: tar.TypeReg} }
		link := func(name, to string) *tar.Header {
			return &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: to, Mode: 0o777}
		}
		hardlink := func(name, to string) *tar.Header {
			return &tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: to}
		}
		up := strings.Repeat("../", 20)
		for _, c := range []struct {
			name    string
			entries []*tar.Header
			escapes []string // must not exist afterwards
		}{
			{"dotdot", []*tar.Header{dir("./"), file("./ok"), file("../escape")}, []string{"escape", "target/ok"}},
			{"nested dotdot", []*tar.Header{file("a/../../escape")}, []string{"escape"}},
			{"deep dotdot", []*tar.Header{file("../../escape")}, []string{"../escape"}},
			{"dotdot to tmp", []*tar.Header{file(up + tmpEscape[1:])}, []string{tmpEscape}},
			{"absolute", []*tar.Header{file(filepath.Join(outside, "abs"))}, []string{"outside/abs"}},
			{"absolute in tmp", []*tar.Header{file(tmpEscape)}, []string{tmpEscape}},
			{"through symlink", []*tar.Header{link("ln", outside), file("ln/evil")}, []string{"outside/evil"}},
			{"through symlink to tmp", []*tar.Header{link("ln", tmpCanary), file("ln/evil")}, []string{filepath.Join(tmpCanary, "evil")}},
			{"dir through symlink to tmp", []*tar.Header{link("ln", tmpCanary), dir("ln/sub/")}, []string{filepath.Join(tmpCanary, "sub")}},
			{"through symlink to parent", []*tar.Header{link("up", ".."), file("up/escape")}, []string{"escape"}},
			{"through relative dir symlink", []*tar.Header{dir("d/"), link("d/x", "../.."), dir("d/x/y/")}, []string{"y"}},
			{"symlink replaces dir", []*tar.Header{dir("d/"), link("d", outside), file("d/evil")}, []string{"outside/evil"}},
			{"file replaces symlink", []*tar.Header{link("f", filepath.Join(outside, "victim")), file("f")}, []string{"outside/victim"}},
			{"hard link", []*tar.Header{hardlink("hl", "/etc/hostname")}, nil},
			{"hard link to sibling", []*tar.Header{hardlink("hl", canaryFile)}, nil},
			{"relative hard link to sibling", []*tar.Header{hardlink("hl", "../canary/canary.txt")}, nil},
			{"device", []*tar.Header{{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}, nil},
			{"block device", []*tar.Header{{Name: "blk", Typeflag: tar.TypeBlock, Devmajor: 7, Devminor: 0}}, nil},
			{"fifo", []*tar.Header{{Name: "fifo", Typeflag: tar.TypeFifo}}, nil},
		} {
			t.Run(fmt.Sprintf("%s/inPlace=%v", c.name, inPlace), func(t *testing.T) {
				for _, d := range []string{target, outside} {
					if err := os.MkdirAll(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.WriteFile(filepath.Join(target, "keep.txt"), []byte("keep"), 0o644); err != nil {
					t.Fatal(err)
				}
				beforeTarget := snapshot(t, target)
				beforeBase := listDir(t, base)
				beforeCanary := snapshot(t, canary)
				e := New()
				e.inPlace = inPlace
				store := hostile(t, c.entries...)
				_, err := e.Restore(ctx, restoreJob(t, store, target, info, nil))
				if err == nil || !strings.Contains(err.Error(), "refusing archive entry") {
					t.Fatalf("Restore = %v, want a refused entry", err)
				}
				for _, p := range c.escapes {
					if !filepath.IsAbs(p) {
						p = filepath.Join(base, p)
					}
					if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("%s was written (lstat: %v)", p, err)
					}
				}
				if got := listDir(t, outside); len(got) != 0 {
					t.Errorf("outside holds %q", got)
				}
				if got := listDir(t, tmpCanary); len(got) != 0 {
					t.Errorf("%s holds %q", tmpCanary, got)
				}
				if got := listDir(t, base); !slices.Equal(got, beforeBase) {
					t.Errorf("%s holds %q, before %q", base, got, beforeBase)
				}
				if diff := enginetest.DeepCompare(beforeCanary, snapshot(t, canary)); diff != "" {
					t.Errorf("the sibling canary changed: %s", diff)
				}
				if diff := enginetest.DeepCompare(beforeTarget, snapshot(t, target)); diff != "" {
					t.Errorf("target changed: %s", diff)
				}
			})
		}
	}
}

// logs returns a logger that writes to t.Log and keeps its entries.
func logs(t *testing.T) (logrus.FieldLogger, *logtest.Hook) {
	l := enginetest.TestLog(t).(*logrus.Logger)
	return l, logtest.NewLocal(l)
}

func warned(hook *logtest.Hook, file, msg string) bool {
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && e.Data["file"] == file && strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}

// TestFileChangesSizeDuringBackup shrinks one file and grows another
// between the moment the backup takes their size and the copy: the
// archive stays well-formed, each file is stored with its size at open,
// and a warning names it.
func TestFileChangesSizeDuringBackup(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shrink := bytes.Repeat([]byte("s"), 100_000)
	grow := bytes.Repeat([]byte("g"), 1000)
	for name, data := range map[string][]byte{"shrinks": shrink, "grows": grow, "after": []byte("after")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := New()
	e.beforeCopy = func(p string) {
		var err error
		switch filepath.Base(p) {
		case "shrinks":
			err = os.Truncate(p, 10)
		case "grows":
			var f *os.File
			if f, err = os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0); err == nil {
				_, err = f.Write(bytes.Repeat([]byte("x"), 50_000))
				f.Close()
			}
		}
		if err != nil {
			t.Error(err)
		}
	}
	log, hook := logs(t)
	store := enginetest.NewStore()
	info, err := e.Backup(ctx, &engines.BackupJob{ID: "b1", Source: source(dir), Artifacts: store, Log: log})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if !warned(hook, "shrinks", "shrank") || !warned(hook, "grows", "grew") {
		t.Errorf("no warning naming the changed files")
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := New().Restore(ctx, restoreJob(t, store, out, *info, nil)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for name, want := range map[string][]byte{
		"shrinks": append(shrink[:10:10], make([]byte, len(shrink)-10)...),
		"grows":   grow,
		"after":   []byte("after"),
	} {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s restored as %d bytes (%v), want %d", name, len(got), err, len(want))
		}
	}
}

func TestBackupSkipsSpecialFiles(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	log, hook := logs(t)
	store := enginetest.NewStore()
	info, err := New().Backup(ctx, &engines.BackupJob{ID: "b1", Source: source(dir), Artifacts: store, Log: log})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if !warned(hook, "fifo", "skipped") {
		t.Errorf("no warning naming the fifo")
	}
	if info.Details["skipped"] != int64(1) || info.Details["files"] != int64(1) {
		t.Errorf("details = %v", info.Details)
	}
	if got := archiveNames(t, store); !slices.Equal(got, []string{"./", "./file"}) {
		t.Errorf("archive holds %q", got)
	}
}

func archiveNames(t *testing.T, store *enginetest.Store) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(store.Bytes(ArtifactName)))
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

func TestExclude(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "src")
	for _, name := range []string{"x.log", "sub/y.log", "cache/z", "sub/cache/w", "a/b/c", "a/keep", "sub/keep.txt"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := source(dir)
	src.Config["exclude"] = []string{"*.log", "cache", "a/b"}
	store, info := enginetest.Backup(ctx, t, New(), src)
	want := []string{"./", "./a/", "./a/keep", "./sub/", "./sub/keep.txt"}
	if got := archiveNames(t, store); !slices.Equal(got, want) {
		t.Errorf("archive holds %q, want %q", got, want)
	}
	if info.Details["files"] != int64(2) {
		t.Errorf("details = %v", info.Details)
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	svc := newTree(t)
	svc.Seed(ctx, t)
	store, info := mustBackup(t, New(), svc.dir)
	parent := filepath.Dir(svc.dir)
	before := listDir(t, parent)

	rep, err := New().Verify(ctx, restoreJob(t, store, svc.dir, info, nil))
	if err != nil || !rep.OK {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
	}
	if want := []string{"archive", "entries", "files", "dirs", "symlinks", "bytes"}; !slices.Equal(names, want) {
		t.Errorf("checks %q, want %q", names, want)
	}

	// A backup whose recorded counts do not match what it holds.
	info.Details["files"] = info.Details["files"].(int64) + 1
	rep, err = New().Verify(ctx, restoreJob(t, store, svc.dir, info, nil))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.OK || rep.Checks[2].Name != "files" || rep.Checks[2].OK {
		t.Errorf("Verify with a wrong file count: %+v", rep)
	}

	// A corrupt one is a failed check, not an error.
	corrupt := store.Clone()
	corrupt.Flip(t, ArtifactName)
	rep, err = New().Verify(ctx, restoreJob(t, corrupt, svc.dir, info, nil))
	if err != nil || rep.OK || rep.Checks[0].Name != "archive" || !strings.Contains(rep.Checks[0].Detail, "corrupt") {
		t.Errorf("Verify of a corrupt backup = %+v, %v", rep, err)
	}

	if got := listDir(t, parent); !slices.Equal(got, before) {
		t.Errorf("scratch left behind: parent holds %q, before %q", got, before)
	}

	// Into a target whose parent does not exist: the system temp dir.
	rep, err = New().Verify(ctx, restoreJob(t, store, filepath.Join(parent, "no", "such", "dir"), info, nil))
	if err != nil || rep.OK || !rep.Checks[0].OK {
		t.Errorf("Verify into a missing parent = %+v, %v", rep, err)
	}
}

func TestEntryName(t *testing.T) {
	for name, want := range map[string]string{
		"./": ".", ".": ".", "./a/b/": "a/b", "a//b": "a/b", "./a/./b": "a/b", "a": "a",
		"../x": "", "/etc/passwd": "", "a/../b": "", "a/..": "", "": "",
	} {
		got, err := entryName(name)
		if want == "" {
			if err == nil {
				t.Errorf("entryName(%q) = %q, want refused", name, got)
			}
		} else if got != want || err != nil {
			t.Errorf("entryName(%q) = %q, %v, want %q", name, got, err, want)
		}
	}
}

// TestLeftoverOfCrashedAttempt: attempt 1 of a restore crashed between
// its two renames (target gone, its previous tree beside it) or after
// them (both there), leaving its staging directory too. Attempt 2
// finishes the job under its own names: it removes attempt 1's staging,
// never touches the tree attempt 1 kept as previous (it holds what the
// target held before the restore, whatever dropPrevious says) and
// reports it.
func TestLeftoverOfCrashedAttempt(t *testing.T) {
	ctx := context.Background()
	for _, targetExists := range []bool{false, true} {
		for _, drop := range []bool{false, true} {
			t.Run(fmt.Sprintf("targetExists=%v/dropPrevious=%v", targetExists, drop), func(t *testing.T) {
				svc := newTree(t)
				svc.Seed(ctx, t)
				want := restored(snapshot(t, svc.dir))
				store, info := mustBackup(t, New(), svc.dir)
				parent := filepath.Dir(svc.dir)
				job := store.RestoreJob(t, "r", source(svc.dir), info, engines.RestoreOptions{DropPrevious: drop})
				job.ID, job.Attempt = "crashed", 2
				prev1 := filepath.Join(parent, "."+filepath.Base(svc.dir)+".capsule-prev-crashed.a1")
				staging1 := filepath.Join(parent, "."+filepath.Base(svc.dir)+".capsule-restore-crashed.a1")
				prev2 := filepath.Join(parent, "."+filepath.Base(svc.dir)+".capsule-prev-crashed.a2")
				if err := os.Rename(svc.dir, prev1); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Join(staging1, "half"), 0o755); err != nil {
					t.Fatal(err)
				}
				if targetExists {
					if err := os.MkdirAll(svc.dir, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				prevBefore := snapshot(t, prev1)
				rinfo, err := New().Restore(ctx, job)
				if err != nil {
					t.Fatalf("Restore: %v", err)
				}
				if diff := enginetest.DeepCompare(want, snapshot(t, svc.dir)); diff != "" {
					t.Errorf("restored tree differs: %s", diff)
				}
				if diff := enginetest.DeepCompare(prevBefore, snapshot(t, prev1)); diff != "" {
					t.Errorf("the tree attempt 1 kept as previous changed: %s", diff)
				}
				if got, _ := rinfo.Details["previousOfEarlierAttempts"].([]string); !slices.Equal(got, []string{prev1}) {
					t.Errorf("Details[previousOfEarlierAttempts] = %v, want [%s]", rinfo.Details["previousOfEarlierAttempts"], prev1)
				}
				wantNames := []string{filepath.Base(svc.dir), filepath.Base(prev1)}
				wantPrev := ""
				if targetExists && !drop {
					wantPrev = prev2
					wantNames = append(wantNames, filepath.Base(prev2))
				}
				if rinfo.Previous != wantPrev {
					t.Errorf("Previous = %q, want %q", rinfo.Previous, wantPrev)
				}
				got := listDir(t, parent)
				slices.Sort(got)
				slices.Sort(wantNames)
				if !slices.Equal(got, wantNames) {
					t.Errorf("parent holds %q, want %q", got, wantNames)
				}
			})
		}
	}
}

// TestRestoreThroughSymlinkedTarget: a target path that is a symlink to a
// directory keeps the symlink; the directory it names is replaced.
func TestRestoreThroughSymlinkedTarget(t *testing.T) {
	ctx := context.Background()
	svc := newTree(t)
	svc.Seed(ctx, t)
	want := snapshot(t, svc.dir)
	store, info := mustBackup(t, New(), svc.dir)
	svc.Damage(ctx, t)
	link := filepath.Join(t.TempDir(), "current")
	if err := os.Symlink(svc.dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := New().Restore(ctx, restoreJob(t, store, link, info, nil)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got, err := os.Readlink(link); err != nil || got != svc.dir {
		t.Errorf("the target symlink now reads %q, %v", got, err)
	}
	if diff := enginetest.DeepCompare(restored(want), snapshot(t, svc.dir)); diff != "" {
		t.Errorf("restored tree differs: %s", diff)
	}
}

// Staging lists the restore and verify directories beside the tree and
// inside it (enginetest.StagingLister).
func (s *tree) Staging(ctx context.Context, t *testing.T) []string {
	t.Helper()
	var left []string
	for _, dir := range []string{filepath.Dir(s.dir), s.dir} {
		des, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, d := range des {
			if strings.Contains(d.Name(), ".capsule-restore-") || strings.Contains(d.Name(), ".capsule-verify-") || strings.HasPrefix(d.Name(), ".capsule-restore-") {
				left = append(left, filepath.Join(dir, d.Name()))
			}
		}
	}
	return left
}

// SnapshotPrevious snapshots a kept previous tree
// (enginetest.PreviousSnapshotter).
func (s *tree) SnapshotPrevious(ctx context.Context, t *testing.T, previous string) any {
	t.Helper()
	return snapshot(t, previous)
}
