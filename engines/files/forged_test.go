package files

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// These tests restore forged backups: whoever can write backups/ can
// replace a real backup's tree.tar with a crafted archive and record its
// sha256 in the index, so the checksum verifies. Each takes the index of
// a real backup made by the engine, swaps in an archive built here with
// archive/tar, and restores it through the engine.

// entry is one member of a forged archive.
type entry struct {
	h    tar.Header
	data string
}

// forge makes a real backup of a seeded tree and returns its BackupInfo
// with a store whose tree.tar holds the given entries instead.
func forge(t *testing.T, entries ...entry) (*enginetest.Store, engines.BackupInfo) {
	t.Helper()
	svc := newTree(t)
	svc.Seed(context.Background(), t)
	_, info := mustBackup(t, New(), svc.dir)
	return forgedStore(t, entries...), info
}

// sparseKey stands for "GNU.sparse." in PAXRecords: archive/tar writes no
// GNU sparse records, so forgedStore writes this same-length stand-in and
// patches the bytes afterwards (a PAX header's records carry no checksum).
const sparseKey = "GNU_sparse."

func forgedStore(t *testing.T, entries ...entry) *enginetest.Store {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.h
		h.Format = tar.FormatPAX
		if h.ModTime.IsZero() {
			h.ModTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
		}
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if e.data != "" {
			if _, err := tw.Write([]byte(e.data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	store := enginetest.NewStore()
	w, err := store.Create(ArtifactName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(bytes.ReplaceAll(buf.Bytes(), []byte(sparseKey), []byte("GNU.sparse."))); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return store
}

// victim is a restore target with content, beside a sibling canary
// directory.
type victim struct {
	base, target, canary string
	canarySnap           []node
}

func newVictim(t *testing.T) *victim {
	t.Helper()
	base := t.TempDir()
	v := &victim{base: base, target: filepath.Join(base, "target"), canary: filepath.Join(base, "canary")}
	for _, f := range []string{filepath.Join(v.target, "keep.txt"), filepath.Join(v.canary, "canary.txt")} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v.canarySnap = snapshot(t, v.canary)
	return v
}

// checkCanary fails the test if the sibling canary changed.
func (v *victim) checkCanary(t *testing.T) {
	t.Helper()
	if diff := enginetest.DeepCompare(v.canarySnap, snapshot(t, v.canary)); diff != "" {
		t.Errorf("the sibling canary directory changed: %s", diff)
	}
}

// TestSpecialBitsDropped: neither a forged archive (a setuid-root shell, a
// setgid directory, a sticky one) nor a real backup of a tree that has
// such bits makes a restore set setuid, setgid or sticky.
func TestSpecialBitsDropped(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, root string) {
		t.Helper()
		for _, n := range snapshot(t, root) {
			if n.mode&specialBits != 0 {
				t.Errorf("%s has mode %s after the restore: setuid, setgid or sticky set", n.Path, n.Mode)
			}
		}
	}
	t.Run("forged", func(t *testing.T) {
		store, info := forge(t,
			entry{h: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
			entry{h: tar.Header{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o2755}},
			entry{h: tar.Header{Name: "./bin/rootshell", Typeflag: tar.TypeReg, Mode: 0o4755}, data: "#!/bin/sh\nexec /bin/sh -p\n"},
			entry{h: tar.Header{Name: "./bin/groupshell", Typeflag: tar.TypeReg, Mode: 0o6711}, data: "#!/bin/sh\n"},
			entry{h: tar.Header{Name: "./spool/", Typeflag: tar.TypeDir, Mode: 0o1777}},
		)
		for _, inPlace := range []bool{false, true} {
			t.Run("inPlace="+strconv.FormatBool(inPlace), func(t *testing.T) {
				v := newVictim(t)
				e := New()
				e.inPlace = inPlace
				if _, err := e.Restore(ctx, store.RestoreJob(t, "r", source(v.target), info, engines.RestoreOptions{DropPrevious: true})); err != nil {
					t.Fatalf("Restore: %v", err)
				}
				check(t, v.target)
				for name, want := range map[string]fs.FileMode{"bin/rootshell": 0o755, "bin/groupshell": 0o711, "bin": fs.ModeDir | 0o755, "spool": fs.ModeDir | 0o777} {
					fi, err := os.Lstat(filepath.Join(v.target, name))
					if err != nil {
						t.Fatal(err)
					}
					if fi.Mode() != want {
						t.Errorf("%s has mode %s, want %s", name, fi.Mode(), want)
					}
				}
				v.checkCanary(t)
			})
		}
	})
	t.Run("real backup", func(t *testing.T) {
		svc := newTree(t)
		svc.Seed(ctx, t) // setuid-tool, a setgid and a sticky directory
		store, info := mustBackup(t, New(), svc.dir)
		target := filepath.Join(t.TempDir(), "restored")
		if _, err := New().Restore(ctx, restoreJob(t, store, target, info, nil)); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		check(t, target)
		if diff := enginetest.DeepCompare(restored(snapshot(t, svc.dir)), snapshot(t, target)); diff != "" {
			t.Errorf("restored tree differs beyond the special bits: %s", diff)
		}
	})
}

// TestOwnershipOnlyWhenAsked: an archive's owners are applied only when
// the target source sets restoreOwnership; by default every restored
// entry belongs to the worker.
func TestOwnershipOnlyWhenAsked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can create files owned by another user: nothing to refuse")
	}
	ctx := context.Background()
	const uid, gid = 4242, 4243
	owned := func(h tar.Header) tar.Header { h.Uid, h.Gid = uid, gid; return h }
	store, info := forge(t,
		entry{h: owned(tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755})},
		entry{h: owned(tar.Header{Name: "./dir/", Typeflag: tar.TypeDir, Mode: 0o755})},
		entry{h: owned(tar.Header{Name: "./dir/file", Typeflag: tar.TypeReg, Mode: 0o644}), data: "data"},
		entry{h: owned(tar.Header{Name: "./link", Typeflag: tar.TypeSymlink, Linkname: "dir/file", Mode: 0o777})},
	)
	for _, inPlace := range []bool{false, true} {
		for _, ask := range []bool{false, true} {
			t.Run("inPlace="+strconv.FormatBool(inPlace)+"/restoreOwnership="+strconv.FormatBool(ask), func(t *testing.T) {
				v := newVictim(t)
				src := source(v.target)
				if ask {
					src.Config["restoreOwnership"] = true
				}
				e := New()
				e.inPlace = inPlace
				job := store.RestoreJob(t, "r", src, info, engines.RestoreOptions{DropPrevious: true})
				if _, err := e.Restore(ctx, job); err != nil {
					t.Fatalf("Restore: %v", err)
				}
				wantUID, wantGID := uint32(os.Geteuid()), uint32(os.Getegid())
				if ask {
					wantUID, wantGID = uid, gid
				}
				for _, n := range snapshot(t, v.target) {
					if n.UID != wantUID || n.GID != wantGID {
						t.Errorf("%s is owned by %d:%d, want %d:%d", n.Path, n.UID, n.GID, wantUID, wantGID)
					}
				}
				v.checkCanary(t)
			})
		}
	}
	// A real backup of a tree with another owner: the same.
	t.Run("real backup", func(t *testing.T) {
		svc := newTree(t)
		svc.Seed(ctx, t)
		if err := os.Lchown(filepath.Join(svc.dir, "a", "file.txt"), uid, gid); err != nil {
			t.Fatal(err)
		}
		store, info := mustBackup(t, New(), svc.dir)
		target := filepath.Join(t.TempDir(), "restored")
		if _, err := New().Restore(ctx, restoreJob(t, store, target, info, nil)); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(target, "a", "file.txt"), &st); err != nil {
			t.Fatal(err)
		}
		if int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() {
			t.Errorf("a/file.txt is owned by %d:%d, want the worker's %d:%d", st.Uid, st.Gid, os.Geteuid(), os.Getegid())
		}
	})
}

// TestForgedSparseFileIsRefused: a GNU sparse entry of a few bytes that
// the tar reader expands to hundreds of MiB of zeros (terabytes, for a
// real attacker) is refused before a byte is written.
func TestForgedSparseFileIsRefused(t *testing.T) {
	ctx := context.Background()
	// Small enough that the old code, which extracted it, did not fill the
	// disk of the machine that proved this test fails there.
	const logical = 512 << 20
	sparse := tar.Header{
		Name: "./huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4,
		PAXRecords: map[string]string{
			sparseKey + "major": "0", sparseKey + "minor": "1",
			sparseKey + "size":      strconv.Itoa(logical),
			sparseKey + "numblocks": "1", sparseKey + "map": "0,4",
		},
	}
	store, info := forge(t, entry{h: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}}, entry{h: sparse, data: "evil"})
	if n := len(store.Bytes(ArtifactName)); n > 8<<10 {
		t.Fatalf("the forged archive is %d bytes: not an amplification", n)
	}
	for _, inPlace := range []bool{false, true} {
		t.Run("inPlace="+strconv.FormatBool(inPlace), func(t *testing.T) {
			v := newVictim(t)
			before := snapshot(t, v.target)
			beforeBase := listDir(t, v.base)
			e := New()
			e.inPlace = inPlace
			_, err := e.Restore(ctx, restoreJob(t, store, v.target, info, nil))
			if err == nil || !strings.Contains(err.Error(), "refusing archive entry") || !strings.Contains(err.Error(), "sparse") {
				t.Fatalf("Restore = %v, want the sparse entry refused", err)
			}
			if diff := enginetest.DeepCompare(before, snapshot(t, v.target)); diff != "" {
				t.Errorf("target changed: %s", diff)
			}
			if got := listDir(t, v.base); !equalStrings(got, beforeBase) {
				t.Errorf("%s holds %q, before %q", v.base, got, beforeBase)
			}
			v.checkCanary(t)
		})
	}
}

func equalStrings(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }
