package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// RepoRoot is the nearest directory above the working directory that
// holds go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from the capsule checkout")
		}
		dir = parent
	}
}

// Build compiles ./cmd/capsule of this checkout into dir and returns the
// binary's path.
func Build(ctx context.Context, dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "capsule")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/capsule")
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/capsule: %w\n%s", err, msg)
	}
	return out, nil
}

// Capsule runs requests through real worker processes on one bucket.
type Capsule struct {
	// Bin is the capsule binary.
	Bin string
	// Dir receives the worker's configuration files and logs.
	Dir string
	S3  *S3
	// BucketName is the bucket on S3; Bucket is a client for it (under
	// capsule/) to submit requests and read results.
	BucketName string
	Bucket     bucket.Bucket
	// Sources is the config file's sources section.
	Sources map[string]map[string]any
	// Encryption, when set, is the worker configuration's
	// worker.encryption section for the next runs (recipients,
	// identityFile).
	Encryption map[string]any
	// SigningKey, when set, is the private key file the worker signs
	// with (signatures.signingKeyFile); its restores then check the
	// backup's signature.
	SigningKey string

	runs int
}

// Run is one request run by one worker process.
type Run struct {
	// Wall is the worker process's lifetime: start-up, listing, claim,
	// the work, the commit of index and result, exit.
	Wall time.Duration
	// PeakRSS is the worker process's own VmHWM in bytes (its children,
	// pg_dump or pg_restore, are not counted).
	PeakRSS int64
	// PeakAnon is the highest RssAnon sampled (every 10 ms): PeakRSS
	// less the worker binary's own pages (about 65 MiB of a 150 MB
	// binary are resident once it runs).
	PeakAnon int64
	// CPU is the worker's user and system time with its children's
	// (pg_dump, pg_restore); S3CPU is the S3 server's during the run.
	CPU, S3CPU time.Duration
	// Result is the request's result.
	Result requests.Result
}

// Work is the time the executor spent on the request (from its result).
func (r *Run) Work() time.Duration { return r.Result.FinishedAt.Sub(r.Result.StartedAt) }

// Run submits req, runs `capsule worker --once` with the given
// compression until it exits, and returns the request's result, which
// must be succeeded.
func (c *Capsule) Run(ctx context.Context, req *requests.Request, compression string) (*Run, error) {
	c.runs++
	name := fmt.Sprintf("worker-%02d-%s-%s", c.runs, strings.ToLower(string(req.Kind)), compression)
	worker := map[string]any{
		"concurrency": 1, "poll": "1s", "lease": "60s", "maxAttempts": 1,
		"compression": compression,
	}
	if c.Encryption != nil {
		worker["encryption"] = c.Encryption
		name += "-age"
	}
	cfg := map[string]any{
		"bucket":  c.S3.URL(c.BucketName),
		"cluster": "bench",
		"worker":  worker,
		"sources": c.Sources,
	}
	if c.SigningKey != "" {
		cfg["signatures"] = map[string]any{"signingKeyFile": c.SigningKey}
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(c.Dir, name+".yaml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return nil, err
	}
	if req.Cluster == "" {
		req.Cluster = "bench"
	}
	if err := client.Submit(ctx, c.Bucket, req); err != nil {
		return nil, err
	}
	logPath := filepath.Join(c.Dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, c.Bin, "worker", "--once", "--config", cfgPath, "--name", name)
	cmd.Env = append(cleanEnv(), c.S3.Env()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	run := &Run{}
	s3Before, _ := c.S3.CPU()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var peak, peakAnon atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := VmHWM(cmd.Process.Pid); err == nil {
				peak.Store(max(peak.Load(), v))
			}
			if v, err := RssAnon(cmd.Process.Pid); err == nil {
				peakAnon.Store(max(peakAnon.Load(), v))
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	werr := cmd.Wait()
	run.Wall = time.Since(start)
	if s3After, err := c.S3.CPU(); err == nil {
		run.S3CPU = s3After - s3Before
	}
	if cmd.ProcessState != nil {
		run.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	close(stop)
	<-sampled
	run.PeakRSS = peak.Load()
	run.PeakAnon = peakAnon.Load()
	if werr != nil {
		return nil, fmt.Errorf("%s: %w (log %s)", name, werr, logPath)
	}
	st, err := client.GetStatus(ctx, c.Bucket, req.ID)
	if err != nil {
		return nil, err
	}
	if st.Result == nil {
		return nil, fmt.Errorf("%s: request %s has no result after the worker exited (log %s)", name, req.ID, logPath)
	}
	run.Result = *st.Result
	if st.Result.Status != requests.StatusSucceeded {
		return run, fmt.Errorf("%s: request %s ended %s: %s (log %s)", name, req.ID, st.Result.Status, st.Result.Error, logPath)
	}
	return run, nil
}

// cleanEnv is this process's environment without what could point the
// worker elsewhere (AWS credentials, libpq's connection variables, a
// capsule configuration).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "CAPSULE_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// VmHWM is a process's peak resident set size in bytes, from
// /proc/<pid>/status. The kernel keeps it for the process alone, not its
// children.
func VmHWM(pid int) (int64, error) { return procStatus(pid, "VmHWM") }

// RssAnon returns the process's anonymous resident memory (heap, stacks:
// RSS less the pages of its binary and other files) now, in bytes.
func RssAnon(pid int) (int64, error) { return procStatus(pid, "RssAnon") }

// procStatus reads one kB field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		line := s.Text()
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("%s: unexpected %q", field, line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no " + field + " in /proc/" + strconv.Itoa(pid) + "/status")
}

// workMarker marks a directory as a benchmark's own, so that only such a
// directory is ever emptied.
const workMarker = ".capsule-bench"

// PrepareWorkDir empties dir for a run, creating it when missing. A
// directory that is not empty and was not made by PrepareWorkDir is left
// alone, with an error.
func PrepareWorkDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, workMarker)); err != nil {
			return fmt.Errorf("work directory %s is not empty and not a benchmark's: choose another with -work", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, workMarker), nil, 0o644)
}

// SigningKey writes a fresh ed25519 private key (OpenSSH format) into dir
// for workers that sign their indexes, and returns its path.
func SigningKey(dir string) (string, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	block, err := ssh.MarshalPrivateKey(key, "capsule-bench")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "signing_key")
	return path, os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
}
