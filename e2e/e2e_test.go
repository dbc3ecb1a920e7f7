// Package e2e runs the real capsule binary against a real S3 server
// (versitygw): several worker processes sharing one bucket, requests
// written by the CLI and by clients, a worker killed with SIGKILL, and
// restores checked byte for byte.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/schemas"
	"github.com/sirupsen/logrus"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "capsule-e2e-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "capsule")
	build := exec.Command("go", "build", "-o", binary, "../cmd/capsule")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building capsule:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster is one test's world: an S3 bucket, a data directory, a config
// file, and the worker processes started on them.
type cluster struct {
	t       *testing.T
	srv     *s3test.Server
	url     string
	b       bucket.Bucket
	dir     string
	config  string
	env     []string
	mu      sync.Mutex
	workers []*workerProc
}

type workerProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func newCluster(t *testing.T, dataSize int) *cluster {
	t.Helper()
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	c := newClusterAt(t, dataSize, srv.URL(name, "capsule-"+randHex(4)+"/"), srv.Env())
	c.srv = srv
	return c
}

// newClusterAt is newCluster on the bucket url names, which the
// environment env reaches (for the workers, the CLI and this process).
func newClusterAt(t *testing.T, dataSize int, url string, env []string) *cluster {
	t.Helper()
	c := &cluster{t: t, url: url, dir: t.TempDir()}
	c.env = append(os.Environ(), env...)
	c.env = append(c.env, "CAPSULE_BUCKET="+c.url)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	data := filepath.Join(c.dir, "data")
	mustDo(t, os.MkdirAll(filepath.Join(data, "nested", "deeper"), 0o750))
	blob := make([]byte, dataSize)
	_, _ = rand.Read(blob)
	mustDo(t, os.WriteFile(filepath.Join(data, "blob.bin"), blob, 0o640))
	mustDo(t, os.WriteFile(filepath.Join(data, "nested", "deeper", "notes.txt"), bytes.Repeat([]byte("capsule\n"), 10000), 0o600))
	mustDo(t, os.Symlink("nested/deeper/notes.txt", filepath.Join(data, "link")))
	old := time.Date(2020, 2, 29, 12, 0, 0, 123456789, time.UTC)
	mustDo(t, os.Chtimes(filepath.Join(data, "blob.bin"), old, old))
	c.config = filepath.Join(c.dir, "capsule.yaml")
	cfg := fmt.Sprintf(`cluster: e2e
worker:
  poll: 200ms
  lease: 3s
  grace: 2s
sources:
  data:
    engine: files
    path: %s
  copy:
    engine: files
    path: %s
`, data, filepath.Join(c.dir, "copy"))
	mustDo(t, os.WriteFile(c.config, []byte(cfg), 0o600))
	b, _, err := bucketurl.Open(context.Background(), c.url, logrus.New())
	if err != nil {
		t.Fatal(err)
	}
	c.b = b
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) startWorker(name string, extra ...string) *workerProc {
	c.t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	args := append([]string{"--config", c.config, "--log-format", "json", "worker", "--name", name, "--concurrency", "2"}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	w := &workerProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(w.done) }()
	c.mu.Lock()
	c.workers = append(c.workers, w)
	c.mu.Unlock()
	return w
}

func (c *cluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.workers {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, w := range c.workers {
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			_ = w.cmd.Process.Kill()
			<-w.done
		}
		if c.t.Failed() {
			data, _ := os.ReadFile(w.log)
			c.t.Logf("log of %s (last 4000 bytes):\n%s", w.name, tail(data, 4000))
		}
	}
	c.workers = nil
}

// capsule runs the CLI and returns its stdout; it fails the test unless
// the exit code is want.
func (c *cluster) capsule(want int, args ...string) string {
	c.t.Helper()
	cmd := exec.Command(binary, append([]string{"--config", c.config}, args...)...)
	cmd.Env = c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	if code != want {
		c.t.Fatalf("capsule %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out.String(), errb.String())
	}
	return out.String()
}

func (c *cluster) submitBackups(n int) []string {
	c.t.Helper()
	ids := make([]string, n)
	for i := range ids {
		req := &requests.Request{Kind: requests.KindBackup, Cluster: "e2e", Source: "data", Labels: map[string]string{"n": fmt.Sprint(i)}}
		if err := client.Submit(context.Background(), c.b, req); err != nil {
			c.t.Fatal(err)
		}
		ids[i] = req.ID
	}
	return ids
}

// waitResults waits until every id has a result.
func (c *cluster) waitResults(ids []string, timeout time.Duration) map[string]*requests.Result {
	c.t.Helper()
	ctx := context.Background()
	got := map[string]*requests.Result{}
	deadline := time.Now().Add(timeout)
	for len(got) < len(ids) {
		if time.Now().After(deadline) {
			c.t.Fatalf("%d of %d results after %s", len(got), len(ids), timeout)
		}
		for _, id := range ids {
			if got[id] != nil {
				continue
			}
			st, err := client.GetStatus(ctx, c.b, id)
			if err != nil {
				c.t.Fatal(err)
			}
			if st.Result != nil {
				got[id] = st.Result
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return got
}

// finishes counts, per request id, the "request finished" log lines of
// every worker: how many times a worker completed it.
func (c *cluster) finishes() map[string]int {
	c.t.Helper()
	n := map[string]int{}
	for _, w := range c.workers {
		f, err := os.Open(w.log)
		if err != nil {
			c.t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line["msg"] == "request finished" {
				n[fmt.Sprint(line["request_id"])]++
			}
		}
		f.Close()
	}
	return n
}

// checkBackups checks every succeeded request's index and artifacts.
// With killed set, a worker may have died between writing a result and
// logging it, so a request may show no completion in the logs; it must
// never show two.
func (c *cluster) checkBackups(ids []string, results map[string]*requests.Result, killed bool) {
	c.t.Helper()
	ctx := context.Background()
	var v schemas.Validator
	entries, err := index.List(ctx, c.b, index.Filter{Cluster: "e2e", Source: "data"})
	if err != nil {
		c.t.Fatal(err)
	}
	if len(entries) != len(ids) {
		c.t.Errorf("%d indexes, want %d", len(entries), len(ids))
	}
	byID := map[string]index.Entry{}
	for _, e := range entries {
		byID[e.BackupID] = e
	}
	finishes := c.finishes()
	for _, id := range ids {
		r := results[id]
		if r.Status != requests.StatusSucceeded {
			c.t.Errorf("request %s ended %s: %s", id, r.Status, r.Error)
			continue
		}
		if finishes[id] > 1 || (!killed && finishes[id] != 1) {
			c.t.Errorf("request %s was completed %d times by the workers", id, finishes[id])
		}
		e, ok := byID[id]
		if !ok {
			c.t.Errorf("request %s succeeded without an index", id)
			continue
		}
		raw, _, err := bucket.GetBytes(ctx, c.b, e.Key())
		if err != nil {
			c.t.Fatal(err)
		}
		if err := v.Validate("backupIndex", raw); err != nil {
			c.t.Error(err)
		}
		if e.RequestID != id || e.Attempt < 1 {
			c.t.Errorf("index of %s names request %s attempt %d", id, e.RequestID, e.Attempt)
		}
		for _, a := range e.Artifacts {
			if !strings.Contains(a.Key, fmt.Sprintf("/%s/%d/", id, e.Attempt)) {
				c.t.Errorf("index of %s (attempt %d) names artifact %s of another attempt", id, e.Attempt, a.Key)
			}
			data, _, err := bucket.GetBytes(ctx, c.b, a.Key)
			if err != nil {
				c.t.Errorf("artifact %s: %v", a.Key, err)
				continue
			}
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != a.SHA256 || int64(len(data)) != a.StoredSize {
				c.t.Errorf("artifact %s: sha256/size do not match the index", a.Key)
			}
		}
	}
}

func TestThreeWorkersHundredBackups(t *testing.T) {
	c := newCluster(t, 256<<10)
	for i := range 3 {
		c.startWorker(fmt.Sprintf("w%d", i+1))
	}
	ids := c.submitBackups(100)
	results := c.waitResults(ids, 3*time.Minute)
	c.checkBackups(ids, results, false)
}

func TestKilledWorkerIsTakenOver(t *testing.T) {
	// Backups big enough that a worker is mid-run when it dies.
	killedWorkerIsTakenOver(t, newCluster(t, 8<<20), 100)
}

// killedWorkerIsTakenOver starts three workers on c, submits n backups,
// SIGKILLs one worker while it holds a lease, and checks that every
// request succeeded once, some of them in a second attempt. It returns
// the ids and how many were taken over.
func killedWorkerIsTakenOver(t *testing.T, c *cluster, n int) (ids []string, retried int) {
	victim := c.startWorker("victim")
	c.startWorker("w2")
	c.startWorker("w3")
	ids = c.submitBackups(n)
	c.killWhileHolding(t, victim)
	<-victim.done
	results := c.waitResults(ids, 4*time.Minute)
	c.checkBackups(ids, results, true)
	// The victim's leases were taken over: some request needed a 2nd attempt.
	for _, r := range results {
		if r.Attempts > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Errorf("no request needed a second attempt: the kill proved nothing")
	}
	t.Logf("%d requests were taken over from the killed worker", retried)
	return ids, retried
}

// killWhileHolding SIGKILLs victim while it holds a lease: it waits (up
// to a minute) for a lease of the victim's, freezes the victim, and kills
// it only if the lease is still there and its request has no result yet
// (the job may have finished since the read: a run takes 0.2 s on a quiet
// machine, and a kill then proves nothing); otherwise it resumes the
// victim and looks again.
func (c *cluster) killWhileHolding(t *testing.T, victim *workerProc) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	killed := false
	for !killed && time.Now().Before(deadline) {
		_ = bucket.Walk(ctx, c.b, requests.LeasesPrefix, func(o bucket.ObjectInfo) error {
			data, _, err := bucket.GetBytes(ctx, c.b, o.Key)
			if err != nil || killed {
				return nil
			}
			var l requests.Lease
			if json.Unmarshal(data, &l) != nil || l.Holder != "victim" {
				return nil
			}
			_ = victim.cmd.Process.Signal(syscall.SIGSTOP)
			// Frozen, it must still hold the lease of a request it has
			// not finished: a lease whose result is written is one the
			// victim was about to delete, and its successor has nothing
			// left to take over.
			id, _ := requests.IDFromKey(requests.LeasesPrefix, o.Key)
			_, resErr := c.b.Head(ctx, requests.ResultKey(id))
			unfinished := errors.Is(resErr, bucket.ErrNotFound)
			if again, _, err := bucket.GetBytes(ctx, c.b, o.Key); unfinished && err == nil && json.Unmarshal(again, &l) == nil && l.Holder == "victim" {
				_ = victim.cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			} else {
				_ = victim.cmd.Process.Signal(syscall.SIGCONT)
			}
			return nil
		})
		time.Sleep(20 * time.Millisecond)
	}
	if !killed {
		t.Fatal("the victim never held a lease")
	}
}

func TestMalformedRequestsAndTheCLI(t *testing.T) {
	c := newCluster(t, 64<<10)
	c.startWorker("w1")
	ctx := context.Background()
	bad := map[string]string{
		"bad-json":    `{"apiVersion":"capsule/v1","kind":`,
		"bad-kind":    `{"apiVersion":"capsule/v1","kind":"Explode","id":"bad-kind","source":"data"}`,
		"bad-source":  `{"apiVersion":"capsule/v1","kind":"Backup","id":"bad-source","source":"nope"}`,
		"bad-id-json": `{"apiVersion":"capsule/v1","kind":"Backup","id":"BAD ID","source":"data"}`,
	}
	ids := []string{}
	for id, body := range bad {
		if _, err := bucket.PutBytes(ctx, c.b, requests.RequestKey(id), []byte(body), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	results := c.waitResults(ids, time.Minute)
	for id, r := range results {
		if r.Status != requests.StatusRejected || r.Error == "" {
			t.Errorf("%s: %s %q, want rejected with a message", id, r.Status, r.Error)
		}
	}
	if !strings.Contains(results["bad-source"].Error, `unknown source "nope"`) || !strings.Contains(results["bad-kind"].Error, "kind") {
		t.Errorf("rejections do not name the problem: %q / %q", results["bad-source"].Error, results["bad-kind"].Error)
	}

	// The worker goes on: a backup and a restore through the CLI.
	out := c.capsule(0, "backup", "data", "--label", "via=cli", "--wait")
	if !strings.Contains(out, "succeeded") {
		t.Fatalf("backup --wait printed %q", out)
	}
	var entries []index.Entry
	mustDo(t, json.Unmarshal([]byte(c.capsule(0, "ls", "-o", "json")), &entries))
	if len(entries) != 1 || entries[0].Labels["via"] != "cli" {
		t.Fatalf("ls: %+v", entries)
	}
	id := entries[0].BackupID
	c.capsule(0, "restore", id, "--to", "copy", "--wait")
	if a, b := treeDigest(t, filepath.Join(c.dir, "data")), treeDigest(t, filepath.Join(c.dir, "copy")); a != b {
		t.Fatalf("restored tree differs from the original")
	}
	if !strings.Contains(c.capsule(0, "ls"), id) {
		t.Errorf("ls table does not show %s", id)
	}
	var desc index.Entry
	mustDo(t, json.Unmarshal([]byte(c.capsule(0, "describe", id, "-o", "json")), &desc))
	if desc.BackupID != id || len(desc.Artifacts) == 0 {
		t.Errorf("describe: %+v", desc)
	}
	c.capsule(0, "verify", id, "--wait")
	mustDo(t, json.Unmarshal([]byte(c.capsule(0, "describe", id, "-o", "json")), &desc))
	if desc.Verification == nil || !desc.Verification.OK {
		t.Errorf("describe after verify shows no good verification: %+v", desc.Verification)
	}
	var st client.Status
	mustDo(t, json.Unmarshal([]byte(c.capsule(0, "status", id, "-o", "json")), &st))
	if st.Status != requests.StatusSucceeded {
		t.Errorf("status %s", st.Status)
	}
	// bad-source names no cluster, so it is the worker's cluster (e2e,
	// the CLI's too): tail shows it without --all-clusters.
	tailOut := c.capsule(0, "tail", "--all-clusters")
	if r := results["bad-source"]; r.Cluster != "e2e" {
		t.Errorf("a request without cluster got cluster %q, want the worker's (e2e)", r.Cluster)
	}
	if !strings.Contains(c.capsule(0, "tail"), "bad-source") {
		t.Errorf("tail does not show the worker's cluster's result")
	}
	for _, want := range []string{"rejected", "succeeded", "bad-source"} {
		if !strings.Contains(tailOut, want) {
			t.Errorf("tail output lacks %q:\n%s", want, tailOut)
		}
	}
	// A restore of a backup that does not exist is refused at the
	// prompt (exit 4); submitted anyway, it ends rejected, and --wait
	// exits 2.
	c.capsule(4, "restore", "no-such-backup", "--wait")
	c.capsule(2, "restore", "no-such-backup", "--wait", "--no-check")
	c.capsule(4, "backup", "Bad Source!")
}

func treeDigest(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s %v %d\n", rel, fi.Mode(), fi.Size())
		if !fi.IsDir() {
			fmt.Fprintf(h, "%d\n", fi.ModTime().UnixNano())
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			fmt.Fprintln(h, target)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(h, f)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
