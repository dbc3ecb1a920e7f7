package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// procField reads one "Name: value kB" (or "name: value") field of a
// /proc file of pid, in bytes for kB fields.
func procField(pid int, file, name string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		v, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			break
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, err
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n <<= 10
		}
		return n, nil
	}
	return 0, fmt.Errorf("/proc/%d/%s has no %s", pid, file, name)
}

// memWatch samples the resident memory of worker processes while a test
// runs. Its peak is each process's VmHWM (the kernel's own high-water
// mark), so nothing between samples is missed; the samples are there to
// stop every worker at once when one crosses the limit, before it can
// take the machine's memory.
type memWatch struct {
	t       *testing.T
	workers []*workerProc
	limit   int64
	stop    chan struct{}
	done    chan struct{}

	mu   sync.Mutex
	peak map[string]int64
}

func watchMemory(t *testing.T, workers []*workerProc, limit int64) *memWatch {
	m := &memWatch{t: t, workers: workers, limit: limit, stop: make(chan struct{}), done: make(chan struct{}), peak: map[string]int64{}}
	go m.run()
	return m
}

func (m *memWatch) sample() (over string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range m.workers {
		hwm, err := procField(w.cmd.Process.Pid, "status", "VmHWM")
		if err != nil {
			continue // exited: the test sees that
		}
		m.peak[w.name] = max(m.peak[w.name], hwm)
		if hwm > m.limit && over == "" {
			over = w.name
		}
	}
	return over
}

func (m *memWatch) run() {
	defer close(m.done)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if over := m.sample(); over != "" {
			for _, w := range m.workers {
				_ = w.cmd.Process.Signal(syscall.SIGKILL)
			}
			m.t.Errorf("worker %s reached %d MiB of resident memory, over the %d MiB limit: every worker was killed", over, m.peakOf(over)>>20, m.limit>>20)
			return
		}
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
	}
}

func (m *memWatch) peakOf(name string) int64 {
	// Called with m.mu released by sample.
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak[name]
}

// finish stops sampling, takes a last sample, and returns the peaks.
func (m *memWatch) finish() map[string]int64 {
	close(m.stop)
	<-m.done
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int64{}
	for k, v := range m.peak {
		out[k] = v
	}
	return out
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// waitOwnResult waits for results/<id>.json without reading the request
// (a poison request must not hurt the test either), through the limit.
func (c *cluster) waitOwnResult(id string, timeout time.Duration, each func()) *requests.Result {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if each != nil {
			each()
		}
		data, _, err := bucket.GetBytesLimit(context.Background(), c.b, requests.ResultKey(id), requests.DefaultMaxControlObject)
		if err == nil {
			var r requests.Result
			mustDo(c.t, json.Unmarshal(data, &r))
			return &r
		}
		if !errors.Is(err, bucket.ErrNotFound) {
			c.t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("no result for %s after %s", id, timeout)
	return nil
}

// A 1 GiB object under requests/ (zeros, written as a stream) with three
// workers running: it ends rejected within maxAttempts, naming the size
// limit; no worker's resident memory passes 300 MiB; the lease's attempt
// never passes maxAttempts; and the workers go on to run a normal request.
func TestPoisonRequestCannotKillTheWorkers(t *testing.T) {
	const (
		poisonSize  = 1 << 30
		memLimit    = 300 << 20
		maxAttempts = 3 // the configuration's default
	)
	c := newCluster(t, 64<<10)
	var ws []*workerProc
	for i := range 3 {
		ws = append(ws, c.startWorker(fmt.Sprintf("w%d", i+1)))
	}
	mem := watchMemory(t, ws, memLimit)
	ctx := context.Background()
	const id = "poison"

	u, err := c.b.Upload(ctx, requests.RequestKey(id), bucket.PutOptions{ContentType: "application/json"})
	mustDo(t, err)
	if _, err := io.Copy(u, io.LimitReader(zeros{}, poisonSize)); err != nil {
		_ = u.Abort()
		t.Fatal(err)
	}
	_, err = u.Commit()
	mustDo(t, err)

	maxAttempt := 0
	lookAtLease := func() {
		for _, w := range ws {
			select {
			case <-w.done:
				t.Fatalf("worker %s exited before the poison request ended", w.name)
			default:
			}
		}
		data, _, err := bucket.GetBytesLimit(ctx, c.b, requests.LeaseKey(id), requests.DefaultMaxControlObject)
		var l requests.Lease
		if err == nil && json.Unmarshal(data, &l) == nil {
			maxAttempt = max(maxAttempt, l.Attempt)
		}
	}
	r := c.waitOwnResult(id, 3*time.Minute, lookAtLease)
	t.Logf("result: %s after %d attempt(s): %s", r.Status, r.Attempts, r.Error)
	want := fmt.Sprintf("is %d bytes, over the 1 MiB limit", poisonSize)
	if (r.Status != requests.StatusRejected && r.Status != requests.StatusFailed) || !strings.Contains(r.Error, want) {
		t.Errorf("the poison request ended %s %q, want rejected naming %q", r.Status, r.Error, want)
	}
	if r.Attempts < 1 || r.Attempts > maxAttempts || maxAttempt > maxAttempts {
		t.Errorf("the poison request took %d attempts (a lease showed attempt %d), want at most %d", r.Attempts, maxAttempt, maxAttempts)
	}
	if _, err := c.b.Head(ctx, requests.RequestKey(id)); !errors.Is(err, bucket.ErrNotFound) {
		t.Errorf("the poison request is still in the bucket: %v", err)
	}
	for _, w := range ws {
		select {
		case <-w.done:
			t.Errorf("worker %s exited", w.name)
		default:
		}
	}

	// The workers go on.
	ids := c.submitBackups(1)
	results := c.waitResults(ids, time.Minute)
	c.checkBackups(ids, results, false)

	peaks := mem.finish()
	for _, w := range ws {
		t.Logf("worker %s: peak resident memory (VmHWM) %.1f MiB", w.name, float64(peaks[w.name])/(1<<20))
		if peaks[w.name] == 0 || peaks[w.name] > memLimit {
			t.Errorf("worker %s peaked at %d bytes of resident memory, want 0 < peak <= %d", w.name, peaks[w.name], int64(memLimit))
		}
	}
	// The log of a took-over lease names its attempt: none past the limit.
	for _, w := range ws {
		data, err := os.ReadFile(w.log)
		mustDo(t, err)
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			var l struct {
				Msg       string `json:"msg"`
				RequestID string `json:"request_id"`
				Attempt   int    `json:"attempt"`
			}
			if json.Unmarshal(line, &l) == nil && l.RequestID == id && l.Attempt > maxAttempts {
				t.Errorf("worker %s logged attempt %d of the poison request: %s", w.name, l.Attempt, line)
			}
		}
	}
}

// bombTar is a files-engine archive (the root directory and one file of
// size zeros, size a multiple of 512) as one zstd frame of RLE blocks: a
// few KiB per 100 MiB, as a hostile artifact would be.
func bombTar(t *testing.T, size int64) []byte {
	t.Helper()
	var headers bytes.Buffer
	tw := tar.NewWriter(&headers)
	now := time.Now()
	mustDo(t, tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: now}))
	mustDo(t, tw.WriteHeader(&tar.Header{Name: "./bomb.bin", Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: now}))
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

// wideFrame is one zstd frame whose header asks for a window of
// 1<<windowLog bytes, holding payload in raw blocks.
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

// smallTar is a valid files-engine archive of one small file.
func smallTar(t *testing.T) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	now := time.Now()
	mustDo(t, tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: now}))
	body := []byte("restored through a wide window\n")
	mustDo(t, tw.WriteHeader(&tar.Header{Name: "./wide.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: now}))
	_, err := tw.Write(body)
	mustDo(t, err)
	mustDo(t, tw.Close())
	return out.Bytes()
}

// forge replaces a backup's only artifact in the bucket by stored and
// rewrites its index so that the sha256 and stored size match: the
// checksum passes; the recorded size is whatever idx says.
func (c *cluster) forge(idx *index.BackupIndex, stored []byte) index.Artifact {
	c.t.Helper()
	ctx := context.Background()
	a := &idx.Artifacts[0]
	_, err := bucket.PutBytes(ctx, c.b, a.Key, stored, bucket.PutOptions{})
	mustDo(c.t, err)
	sum := sha256.Sum256(stored)
	a.SHA256, a.StoredSize = hex.EncodeToString(sum[:]), int64(len(stored))
	idx.StoredBytes = a.StoredSize
	data, err := json.MarshalIndent(idx, "", "  ")
	mustDo(c.t, err)
	_, err = bucket.PutBytes(ctx, c.b, idx.Key(), data, bucket.PutOptions{})
	mustDo(c.t, err)
	return *a
}

// run submits one request and waits for its result.
func (c *cluster) run(req *requests.Request) *requests.Result {
	c.t.Helper()
	mustDo(c.t, client.Submit(context.Background(), c.b, req))
	return c.waitResults([]string{req.ID}, 2*time.Minute)[req.ID]
}

// A real files backup whose artifact is replaced by a 1 GiB bomb (a few
// KiB of zstd) with a forged index (sha256 and stored size match, the
// recorded size is the real backup's): the restore stops after the
// recorded size plus the margin, the target is unchanged, and the worker
// wrote no more than that. A verify fails the same way, and a frame whose
// window is over the cap is refused.
func TestDecompressionBombInAFilesBackup(t *testing.T) {
	const (
		bombSize = 1 << 30
		margin   = 1 << 20 // executor.DecodeMargin
	)
	c := newCluster(t, 64<<10)
	w := c.startWorker("w1")
	ctx := context.Background()
	backup := c.run(&requests.Request{Kind: requests.KindBackup, Cluster: "e2e", Source: "data"})
	if backup.Status != requests.StatusSucceeded {
		t.Fatalf("backup: %s %s", backup.Status, backup.Error)
	}
	e, err := index.Find(ctx, c.b, backup.ID)
	mustDo(t, err)
	idx := e.BackupIndex

	target := filepath.Join(c.dir, "copy")
	mustDo(t, os.MkdirAll(target, 0o755))
	mustDo(t, os.WriteFile(filepath.Join(target, "precious"), []byte("live data"), 0o644))
	before := treeDigest(t, target)
	unchanged := func(what string) {
		t.Helper()
		if treeDigest(t, target) != before {
			t.Errorf("%s: the target changed", what)
		}
		entries, err := os.ReadDir(c.dir)
		mustDo(t, err)
		for _, en := range entries {
			if strings.Contains(en.Name(), ".capsule-") {
				t.Errorf("%s: left beside the target: %s", what, en.Name())
			}
		}
	}

	bomb := bombTar(t, bombSize)
	a := c.forge(idx, bomb)
	limit := a.Size + margin
	t.Logf("bomb: %d stored bytes decode to %d; the index records %d bytes, limit %d", len(bomb), int64(bombSize)+2048, a.Size, limit)
	pid := w.cmd.Process.Pid
	w0, err := procField(pid, "io", "wchar")
	mustDo(t, err)
	r := c.run(&requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"})
	w1, err := procField(pid, "io", "wchar")
	mustDo(t, err)
	t.Logf("restore: %s: %s; the worker wrote %d bytes meanwhile", r.Status, r.Error, w1-w0)
	if r.Status != requests.StatusFailed {
		t.Errorf("restore of the bomb ended %s, want failed", r.Status)
	}
	for _, want := range []string{"artifact " + a.Name, strconv.FormatInt(a.Size, 10), strconv.FormatInt(limit, 10)} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("restore error %q does not name %q", r.Error, want)
		}
	}
	// Everything the worker wrote (the staged file, its log, leases and
	// the result) stays within the limit plus 1 MiB for the rest.
	if w1-w0 > limit+1<<20 {
		t.Errorf("the worker wrote %d bytes during the restore, over the limit %d plus 1 MiB", w1-w0, limit)
	}
	unchanged("bomb restore")

	r = c.run(&requests.Request{Kind: requests.KindVerify, BackupID: idx.BackupID})
	details, _ := json.Marshal(r.Details)
	t.Logf("verify: %s: %s %s", r.Status, r.Error, details)
	if r.Status != requests.StatusFailed || !strings.Contains(string(details), "artifact "+a.Name+" decodes to more than") {
		t.Errorf("verify of the bomb ended %s %q %s, want failed naming the artifact's size", r.Status, r.Error, details)
	}

	// A frame asking for a 64 MiB window, with an honest recorded size.
	payload := smallTar(t)
	idx.Artifacts[0].Size, idx.Bytes = int64(len(payload)), int64(len(payload))
	c.forge(idx, wideFrame(payload, 26))
	r = c.run(&requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"})
	t.Logf("wide window: %s: %s", r.Status, r.Error)
	if r.Status != requests.StatusFailed || !strings.Contains(r.Error, "artifact "+a.Name) || !strings.Contains(r.Error, "window") {
		t.Errorf("restore of a 64 MiB-window frame ended %s %q, want failed naming the artifact and the window", r.Status, r.Error)
	}
	unchanged("wide-window restore")

	select {
	case <-w.done:
		t.Fatal("the worker exited")
	default:
	}
}
