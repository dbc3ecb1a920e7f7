package childproc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestChildGetsOnlyWhatItNeeds sets secrets in the worker's (this test
// process's) environment and runs a child: it sees none of them, only
// the minimal environment and what the caller passed.
func TestChildGetsOnlyWhatItNeeds(t *testing.T) {
	canary := "canary-" + strconv.Itoa(os.Getpid())
	t.Setenv("AWS_SECRET_ACCESS_KEY", canary)
	t.Setenv("CAPSULE_OTHER_SOURCE_PASSWORD", canary)
	t.Setenv("PGPASSWORD", canary)
	t.Setenv("MYSQL_PWD", canary)
	d, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out, err := d.Command(context.Background(), "env", nil, "PGPASSWORD=for-this-tool", "LC_ALL=C.UTF-8").Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte(canary)) {
		t.Errorf("the child saw a secret of the worker's environment:\n%s", out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	want := map[string]string{
		"PATH": os.Getenv("PATH"), "HOME": d.Path(), "TMPDIR": d.Path(), "LANG": "C",
		"LC_ALL": "C.UTF-8", "TZ": "UTC", "PGPASSWORD": "for-this-tool",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("child's %s=%q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("child's environment has %d variables, want %d: %v", len(got), len(want), got)
	}
}

// TestPrivateFiles checks the modes of the directories and an option
// file, and that Close leaves nothing behind.
func TestPrivateFiles(t *testing.T) {
	base := t.TempDir()
	d, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.WriteFile("my.cnf", []byte("[client]\npassword=\"x\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(p) != d.Path() {
		t.Errorf("option file %s is not in the private directory %s", p, d.Path())
	}
	parent := filepath.Join(base, "capsule-"+strconv.Itoa(os.Getuid()))
	for path, want := range map[string]fs.FileMode{parent: 0o700, d.Path(): 0o700, p: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	if _, err := d.WriteFile("my.cnf", nil); err == nil {
		t.Errorf("WriteFile replaced an existing file")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close, %s: %v", d.Path(), err)
	}
}

// TestParentRefusesAnotherUsersDirectory: in a shared /tmp someone else
// may make capsule-<uid> first, as a directory of theirs or a symlink.
func TestParentRefusesAnotherUsersDirectory(t *testing.T) {
	name := "capsule-" + strconv.Itoa(os.Getuid())
	t.Run("symlink", func(t *testing.T) {
		base := t.TempDir()
		if err := os.Symlink(t.TempDir(), filepath.Join(base, name)); err != nil {
			t.Fatal(err)
		}
		if _, err := New(base); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("New over a symlink: %v", err)
		}
	})
	t.Run("other owner", func(t *testing.T) {
		if os.Getuid() != 0 {
			t.Skip("needs root to give a directory to another user")
		}
		base := t.TempDir()
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		if _, err := New(base); err == nil || !strings.Contains(err.Error(), "another user") {
			t.Errorf("New in another user's directory: %v", err)
		}
	})
	t.Run("too open", func(t *testing.T) {
		base := t.TempDir()
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
		d, err := New(base)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o700 {
			t.Errorf("parent left %v", fi.Mode().Perm())
		}
	})
}

// TestSweepRemovesWhatAKilledWorkerLeft starts a worker process that
// makes a run directory with an option file, kills it with SIGKILL, and
// sweeps: its directory goes, the live one of this process stays.
func TestSweepRemovesWhatAKilledWorkerLeft(t *testing.T) {
	base := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorker$")
	cmd.Env = append(os.Environ(), "CAPSULE_CHILDPROC_HELPER="+base)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("helper: %v", err)
	}
	stale := strings.TrimSpace(line)
	if !strings.HasPrefix(filepath.Base(stale), "run-"+strconv.Itoa(cmd.Process.Pid)+"-") {
		t.Fatalf("helper's directory %q is not named after its pid %d", stale, cmd.Process.Pid)
	}

	live, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	// While the helper runs, its directory is in use.
	if removed, err := Sweep(base); err != nil || len(removed) != 0 {
		t.Fatalf("sweep while the helper lives: removed %v, %v", removed, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if _, err := os.Stat(filepath.Join(stale, "my.cnf")); err != nil {
		t.Fatalf("the killed helper's option file is not there to sweep: %v", err)
	}
	removed, err := Sweep(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != stale {
		t.Errorf("sweep removed %v, want [%s]", removed, stale)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the killed helper's directory is still there: %v", err)
	}
	if _, err := os.Stat(live.Path()); err != nil {
		t.Errorf("sweep removed a directory in use: %v", err)
	}
}

// TestHelperWorker is the process TestSweepRemovesWhatAKilledWorkerLeft
// kills: it makes a run directory, says where, and waits to die.
func TestHelperWorker(t *testing.T) {
	base := os.Getenv("CAPSULE_CHILDPROC_HELPER")
	if base == "" {
		t.Skip("helper process only")
	}
	d, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteFile("my.cnf", []byte("password=x\n")); err != nil {
		t.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	os.Stdout.WriteString(d.Path() + "\n")
	<-stop // SIGKILL comes first
}

// TestEveryToolRunsThroughChildproc fails when capsule's own code (not
// tests, not the test servers' helpers, not the benchmarks, which run
// the developer's tools on purpose) starts a process some other way.
// internal/pgserver (the private PostgreSQL servers of point-in-time
// restores) gives each command an explicit minimal environment.
func TestEveryToolRunsThroughChildproc(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("%s is not the module root: %v", root, err)
	}
	allowed := []string{"internal/childproc/", "internal/s3test/", "internal/sqstest/", "internal/azuritetest/", "internal/gcstest/", "internal/testtool/", "internal/pgserver/", "bench/", "e2e/", ".tools/"}
	var offenders []string
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if e.IsDir() {
			if rel != "." && (strings.HasPrefix(e.Name(), ".") || e.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		for _, a := range allowed {
			if strings.HasPrefix(rel, a) {
				return nil
			}
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(src), "\n") {
			if strings.Contains(line, "exec.Command") || strings.Contains(line, "os.StartProcess") || strings.Contains(line, "syscall.Exec") {
				offenders = append(offenders, rel+":"+strconv.Itoa(i+1)+": "+strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(offenders) > 0 {
		t.Errorf("processes started without childproc (they would inherit the worker's environment):\n%s", strings.Join(offenders, "\n"))
	}
}
