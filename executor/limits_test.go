package executor_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/klauspost/compress/zstd"
)

// bombTar is a files-engine archive (the root directory and one file of
// size zero bytes, size a multiple of 512) as one zstd frame of RLE
// blocks: a few KiB per 100 MiB, as a hostile artifact would be.
func bombTar(t *testing.T, size int64) []byte {
	t.Helper()
	var headers bytes.Buffer
	tw := tar.NewWriter(&headers)
	now := time.Now()
	must(t, tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: now}))
	must(t, tw.WriteHeader(&tar.Header{Name: "./bomb.bin", Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: now}))
	// The file's zeros, then the two zero blocks that end an archive.
	return rleFrame(headers.Bytes(), size+1024)
}

// rleFrame is a zstd frame (1 MiB window) of head in a raw block, then n
// zero bytes in RLE blocks of 128 KiB.
func rleFrame(head []byte, n int64) []byte {
	const block = 128 << 10
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (20 - 10) << 3}
	h := len(head) << 3 // raw block, not the last
	f = append(f, byte(h), byte(h>>8), byte(h>>16))
	f = append(f, head...)
	for n > 0 {
		size := min(n, block)
		n -= size
		h := int(size)<<3 | 1<<1 // RLE block
		if n == 0 {
			h |= 1 // the last
		}
		f = append(f, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return f
}

// smallTar is a valid files-engine archive holding one small file.
func smallTar(t *testing.T) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	now := time.Now()
	must(t, tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: now}))
	body := []byte("restored through a wide window\n")
	must(t, tw.WriteHeader(&tar.Header{Name: "./wide.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: now}))
	_, err := tw.Write(body)
	must(t, err)
	must(t, tw.Close())
	return out.Bytes()
}

// wideFrame is one zstd frame whose header asks for a window of
// 1<<windowLog bytes, holding payload in raw blocks: valid zstd, cheap to
// make, and only a decoder that accepts such a window reads it.
func wideFrame(payload []byte, windowLog uint) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte(windowLog-10) << 3}
	for len(payload) > 0 {
		n := min(len(payload), 128<<10)
		last := 0
		if n == len(payload) {
			last = 1
		}
		h := n<<3 | last // raw block
		f = append(f, byte(h), byte(h>>8), byte(h>>16))
		f = append(f, payload[:n]...)
		payload = payload[n:]
	}
	return f
}

// forge replaces the backup's only artifact by stored and edits the index
// so that its checksum and stored size match: the checksum passes, and
// only the recorded size (kept) tells the truth.
func (f *fixture) forge(idx *index.BackupIndex, stored []byte) index.Artifact {
	f.t.Helper()
	ctx := context.Background()
	a := &idx.Artifacts[0]
	_, err := bucket.PutBytes(ctx, f.b, a.Key, stored, bucket.PutOptions{})
	must(f.t, err)
	sum := sha256.Sum256(stored)
	a.SHA256, a.StoredSize = hex.EncodeToString(sum[:]), int64(len(stored))
	idx.StoredBytes = a.StoredSize
	data, err := json.MarshalIndent(idx, "", "  ")
	must(f.t, err)
	_, err = bucket.PutBytes(ctx, f.b, idx.Key(), data, bucket.PutOptions{})
	must(f.t, err)
	return *a
}

// written returns the bytes this process has passed to write(2) so far.
func written(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io here: %v", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			must(t, err)
			return n
		}
	}
	t.Fatalf("no wchar in /proc/self/io: %s", data)
	return 0
}

// runTracked runs a request like fixture.run and returns the bytes the
// engine was given.
func (f *fixture) runTracked(req requests.Request) (*executor.Outcome, int64) {
	f.t.Helper()
	req.APIVersion, req.ID = requests.APIVersion, requests.NewID()
	tr := executor.NewTracker()
	out := f.x.Run(context.Background(), &req, 1, tr)
	must(f.t, f.x.Commit(context.Background(), out))
	return out, tr.Snapshot().Bytes
}

// leftovers lists what a restore may have left beside the target.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(dir))
	must(t, err)
	var names []string
	for _, e := range entries {
		if strings.Contains(e.Name(), ".capsule-") {
			names = append(names, e.Name())
		}
	}
	return names
}

// A decompression bomb with a forged checksum: the artifact decodes to
// 256 MiB where the index records a few MiB. The restore and the verify
// stop at the recorded size plus the margin, and the target is untouched.
func TestDecompressionBombStopsAtTheRecordedSize(t *testing.T) {
	f := newFixture(t, "zstd")
	idx := f.backup()
	must(t, os.MkdirAll(f.copy, 0o755))
	must(t, os.WriteFile(filepath.Join(f.copy, "precious"), []byte("live data"), 0o644))
	before := treeDigest(t, f.copy)
	const bombSize = 256 << 20
	bomb := bombTar(t, bombSize)
	a := f.forge(idx, bomb)
	limit := a.Size + executor.DecodeMargin
	t.Logf("bomb: %d stored bytes decode to %d; the index records %d, limit %d", len(bomb), bombSize, a.Size, limit)

	w0 := written(t)
	out, given := f.runTracked(requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"})
	wrote := written(t) - w0
	t.Logf("restore: %s: %s; %d bytes given to the engine, %d written by this process", out.Result.Status, out.Result.Error, given, wrote)
	if out.Result.Status != requests.StatusFailed {
		t.Errorf("restore of the bomb ended %s %q, want failed", out.Result.Status, out.Result.Error)
	}
	for _, want := range []string{"artifact " + a.Name, strconv.FormatInt(a.Size, 10), strconv.FormatInt(limit, 10)} {
		if !strings.Contains(out.Result.Error, want) {
			t.Errorf("error %q does not name %q", out.Result.Error, want)
		}
	}
	if given > limit {
		t.Errorf("the engine was given %d bytes, over the limit %d", given, limit)
	}
	if wrote > limit+1<<20 {
		t.Errorf("the restore wrote %d bytes, over the limit %d (+1 MiB for everything else)", wrote, limit)
	}
	if treeDigest(t, f.copy) != before {
		t.Errorf("the target changed")
	}
	if l := leftovers(t, f.copy); len(l) != 0 {
		t.Errorf("left beside the target: %v", l)
	}

	out, given = f.runTracked(requests.Request{Kind: requests.KindVerify, BackupID: idx.BackupID})
	var detail string
	if out.Verification != nil {
		for _, c := range out.Verification.Checks {
			if !c.OK {
				detail += c.Detail
			}
		}
	}
	if out.Result.Status != requests.StatusFailed || !strings.Contains(detail, "artifact "+a.Name+" decodes to more than") {
		t.Errorf("verify of the bomb ended %s %q (failed checks: %q), want failed naming the artifact's size", out.Result.Status, out.Result.Error, detail)
	}
	if given > limit {
		t.Errorf("verify was given %d bytes, over the limit %d", given, limit)
	}
}

// An artifact that decodes to exactly its recorded size plus the margin
// is restored; one byte more is refused.
func TestDecodeLimitBoundary(t *testing.T) {
	f := newFixture(t, "none")
	idx := f.backup()
	a := idx.Artifacts[0]
	orig, _, err := bucket.GetBytes(context.Background(), f.b, a.Key)
	must(t, err)
	for _, c := range []struct {
		extra int64
		ok    bool
	}{{executor.DecodeMargin, true}, {executor.DecodeMargin + 1, false}} {
		t.Run(fmt.Sprint(c.extra), func(t *testing.T) {
			// The same archive, padded with zeros after its end: the
			// files engine reads the stream to its end.
			padded := append(bytes.Clone(orig), make([]byte, c.extra)...)
			idx := *idx
			idx.Artifacts = []index.Artifact{a}
			enc, err := zstd.NewWriter(nil)
			must(t, err)
			stored := enc.EncodeAll(padded, nil)
			idx.Artifacts[0].Compression = "zstd"
			f.forge(&idx, stored)
			must(t, os.RemoveAll(f.copy))
			out, given := f.runTracked(requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"})
			if ok := out.Result.Status == requests.StatusSucceeded; ok != c.ok || (!ok && !strings.Contains(out.Result.Error, "decodes to more than")) {
				t.Fatalf("decoding to recorded+%d bytes: %s %q, want success %v (or the size error)", c.extra, out.Result.Status, out.Result.Error, c.ok)
			}
			if limit := a.Size + executor.DecodeMargin; given > limit {
				t.Errorf("the engine was given %d bytes, over the limit %d", given, limit)
			}
		})
	}
}

// A zstd frame that asks for a 64 MiB window (the library's default
// accepts 512 MiB) is refused before anything reaches the target.
func TestWideZstdWindowIsRefused(t *testing.T) {
	f := newFixture(t, "zstd")
	idx := f.backup()
	must(t, os.MkdirAll(f.copy, 0o755))
	must(t, os.WriteFile(filepath.Join(f.copy, "precious"), []byte("live data"), 0o644))
	before := treeDigest(t, f.copy)
	payload := smallTar(t)
	// The recorded size is honest: only the window is wrong.
	idx.Artifacts[0].Size, idx.Bytes = int64(len(payload)), int64(len(payload))
	a := f.forge(idx, wideFrame(payload, 26))
	out, _ := f.runTracked(requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"})
	t.Logf("restore: %s: %s", out.Result.Status, out.Result.Error)
	if out.Result.Status != requests.StatusFailed || !strings.Contains(out.Result.Error, "artifact "+a.Name) || !strings.Contains(out.Result.Error, "window") {
		t.Errorf("restore of a 64 MiB-window frame ended %s %q, want failed naming the artifact and the window", out.Result.Status, out.Result.Error)
	}
	if treeDigest(t, f.copy) != before {
		t.Errorf("the target changed")
	}
	// The same bytes in a frame with an 8 MiB window restore: the cap,
	// not the frame format, refused it.
	f.forge(idx, wideFrame(payload, 23))
	out, _ = f.runTracked(requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"})
	if out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("restore of an 8 MiB-window frame: %s %q", out.Result.Status, out.Result.Error)
	}
	if got, err := os.ReadFile(filepath.Join(f.copy, "wide.txt")); err != nil || !bytes.Contains(got, []byte("wide window")) {
		t.Errorf("restored wide.txt: %q %v", got, err)
	}
}
