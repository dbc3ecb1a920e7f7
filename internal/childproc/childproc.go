// Package childproc starts the client tools capsule runs (pg_dump,
// pg_restore, mariadb-dump, mariadb, …) with the least they need: a
// minimal environment instead of the worker's (which in a cluster holds
// bucket keys, AWS_SECRET_ACCESS_KEY and other sources' passwords), and
// a private directory as their HOME and TMPDIR that also holds the
// option files with passwords.
//
// Each run of tools gets its own directory,
// $TMPDIR/capsule-<uid>/run-<pid>-<random>, mode 0700 under a 0700
// parent that capsule owns. The directory holds a lock file its process
// keeps locked (flock) while it uses it; Close removes it. A directory
// whose process died (SIGKILL, OOM) has a free lock: Sweep removes it,
// and a worker sweeps at start and whenever it makes a new directory.
package childproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	runPrefix = "run-"
	// newPrefix marks a run directory being made (not yet locked).
	newPrefix = ".new-"
	lockName  = ".lock"
	// defaultPath is the children's PATH when the worker has none.
	defaultPath = "/usr/local/bin:/usr/bin:/bin"
	// unlockedAge is how old a directory still being made (its process
	// died while making it) must be before Sweep removes it.
	unlockedAge = time.Hour
)

// Dir is a private directory for one run of child processes.
type Dir struct {
	path string
	lock *os.File
}

// Parent returns capsule's directory for run directories under base
// (os.TempDir() when base is ""): base/capsule-<uid>, created 0700. It
// refuses one that is a symlink, is not a directory or belongs to
// another user (someone else made it first in a shared /tmp), and makes
// one of ours private again.
func Parent(base string) (string, error) {
	if base == "" {
		base = os.TempDir()
	}
	p := filepath.Join(base, "capsule-"+strconv.Itoa(os.Getuid()))
	if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("private directory %s: %w", p, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return "", fmt.Errorf("private directory %s: %w", p, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir():
		return "", fmt.Errorf("private directory %s: not a directory (a symlink or a file is in its place)", p)
	case !ok || int(st.Uid) != os.Getuid():
		return "", fmt.Errorf("private directory %s: owned by another user", p)
	case fi.Mode().Perm() != 0o700:
		if err := os.Chmod(p, 0o700); err != nil {
			return "", fmt.Errorf("private directory %s: %w", p, err)
		}
	}
	return p, nil
}

// New makes a run directory under base (see Parent), locked, after
// sweeping the ones dead processes left. Close it when the run's tools
// have ended.
func New(base string) (*Dir, error) {
	parent, err := Parent(base)
	if err != nil {
		return nil, err
	}
	_, _ = sweep(parent)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := runPrefix + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(rnd[:])
	// The directory gets its name only once locked, so that a sweep
	// never sees it unlocked.
	tmp := filepath.Join(parent, newPrefix+name)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("private directory: %w", err)
	}
	p := filepath.Join(parent, name)
	lock, err := os.OpenFile(filepath.Join(tmp, lockName), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err == nil {
		if err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			err = os.Rename(tmp, p)
		}
		if err != nil {
			_ = lock.Close()
		}
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("lock private directory %s: %w", p, err)
	}
	return &Dir{path: p, lock: lock}, nil
}

// Path is the directory.
func (d *Dir) Path() string { return d.path }

// WriteFile creates name in the directory, readable by its owner only
// (0600), with data, and returns its path. It refuses a name that exists.
func (d *Dir) WriteFile(name string, data []byte) (string, error) {
	if name == "" || name == lockName || strings.ContainsRune(name, '/') {
		return "", fmt.Errorf("private file name %q", name)
	}
	p := filepath.Join(d.path, name)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("private file: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(p)
		return "", fmt.Errorf("private file %s: %w", p, err)
	}
	return p, nil
}

// Env is a child's whole environment: PATH (the worker's), HOME and
// TMPDIR (the private directory, so no ~/.pgpass, ~/.my.cnf or
// ~/.postgresql of the worker's user is read), LANG and LC_ALL=C, TZ=UTC,
// then extra ("PGPASSWORD=…"), which wins over the above.
func (d *Dir) Env(extra ...string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	env := []string{"PATH=" + path, "HOME=" + d.path, "TMPDIR=" + d.path, "LANG=C", "LC_ALL=C", "TZ=UTC"}
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		env = slicesDeleteKey(env, k)
		env = append(env, kv)
	}
	return env
}

func slicesDeleteKey(env []string, key string) []string {
	out := env[:0]
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != key {
			out = append(out, kv)
		}
	}
	return out
}

// Command is exec.CommandContext for name with Env(extra...) as its
// environment and the private directory as its working directory. A
// canceled context kills the child; Wait then gives up on pipes a
// grandchild holds after 10 seconds.
func (d *Dir) Command(ctx context.Context, name string, args []string, extra ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = d.Env(extra...)
	cmd.Dir = d.path
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// Close removes the directory and what it holds, and releases its lock.
func (d *Dir) Close() error {
	err := os.RemoveAll(d.path)
	_ = d.lock.Close()
	if err != nil {
		return fmt.Errorf("remove private directory: %w", err)
	}
	return nil
}

// Sweep removes the run directories under base (see Parent) that dead
// processes left, and returns them.
func Sweep(base string) ([]string, error) {
	parent, err := Parent(base)
	if err != nil {
		return nil, err
	}
	return sweep(parent)
}

func sweep(parent string) ([]string, error) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return nil, fmt.Errorf("sweep %s: %w", parent, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		p := filepath.Join(parent, e.Name())
		switch {
		case !e.IsDir():
			continue
		case strings.HasPrefix(e.Name(), runPrefix):
			if !abandoned(p) {
				continue
			}
		case strings.HasPrefix(e.Name(), newPrefix):
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < unlockedAge {
				continue
			}
		default:
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

// abandoned reports whether nobody holds dir's lock: its process is
// gone.
func abandoned(dir string) bool {
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR, 0)
	if err != nil {
		// Made locked, and locked until removed: a run directory without
		// its lock file is a removal that did not finish.
		return errors.Is(err, fs.ErrNotExist)
	}
	defer lock.Close()
	// Acquired: nobody holds it. Closing releases it again.
	return unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
}
