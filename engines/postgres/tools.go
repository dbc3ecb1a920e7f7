package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/cnvrg/capsule/internal/childproc"
	"github.com/cnvrg/capsule/internal/pipe"
	"github.com/sirupsen/logrus"
)

// tools runs the PostgreSQL client programs for one job, each in a
// private directory with a minimal environment (childproc) plus the
// source's PG* variables: nothing else of the worker's environment.
type tools struct {
	env []string // the source's PG* variables; PGPASSWORD among them: never log it
	log logrus.FieldLogger
	// started, when set, is called with each child's pid as soon as it
	// runs (tests inspect its argv and environment).
	started func(tool string, pid int)
	// globs are where each major's client programs are looked for
	// (BinGlobs); dir is the one chosen for the server at hand ("": PATH).
	globs []string
	dir   string
}

// pick chooses the client programs for a server (or an archive) of
// version number num (server_version_num form), and says whether the
// choice changed.
func (t *tools) pick(num int) bool {
	dir := pickBinDir(t.globs, "pg_dump", serverMajor(num))
	changed := dir != t.dir
	t.dir = dir
	if changed {
		t.log.WithField("dir", dir).Debug("chose the PostgreSQL client programs")
	}
	return changed
}

// path is the program to run for tool: in the chosen directory, else
// looked up in PATH.
func (t *tools) path(tool string) string {
	if t.dir == "" {
		return tool
	}
	return filepath.Join(t.dir, tool)
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+(?:\.\d+)*(?:(?:devel|alpha|beta|rc)\d*)?)`)

// version runs "tool --version" and returns the version it reports
// ("15.20").
func (t *tools) version(ctx context.Context, tool string) (string, error) {
	cmd, done, err := t.command(ctx, tool, []string{"--version"}, nil)
	if err != nil {
		return "", err
	}
	out, err := cmd.Output()
	done()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w (are the PostgreSQL client tools installed?)", tool, err)
	}
	return parseToolVersion(tool, string(out))
}

func parseToolVersion(tool, out string) (string, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("%s --version: cannot read a version in %q", tool, strings.TrimSpace(out))
	}
	return m[1], nil
}

var versionNumRE = regexp.MustCompile(`^(\d+)(?:\.(\d+))?(?:\.(\d+))?`)

// versionNum turns a version ("15.20", "9.6.24", "16beta1") into the
// server_version_num form (150020, 90624, 160000).
func versionNum(v string) (int, error) {
	m := versionNumRE.FindStringSubmatch(v)
	if m == nil {
		return 0, fmt.Errorf("cannot read PostgreSQL version %q", v)
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	c, _ := strconv.Atoi(m[3])
	if a >= 10 {
		return a*10000 + b, nil
	}
	return a*10000 + b*100 + c, nil
}

// major returns a version number's major version in a comparable form
// (9.6 → 906, 15 → 1500) and as text.
func major(num int) (int, string) {
	if num >= 100000 {
		return num / 10000 * 100, strconv.Itoa(num / 10000)
	}
	return num / 100, fmt.Sprintf("%d.%d", num/10000, num/100%100)
}

// checkToolVersion refuses a client tool older than the server's major
// version: pg_dump cannot dump (and pg_restore cannot restore) what a
// newer server has.
func checkToolVersion(tool, toolVersion string, serverNum int) error {
	tn, err := versionNum(toolVersion)
	if err != nil {
		return fmt.Errorf("%s: %w", tool, err)
	}
	tm, _ := major(tn)
	sm, sname := major(serverNum)
	if tm < sm {
		return fmt.Errorf("%s %s is older than the server (PostgreSQL %s): install the PostgreSQL %s client tools or newer", tool, toolVersion, sname, sname)
	}
	return nil
}

// checkArchiveVersion refuses a pg_restore older than the pg_dump that
// wrote the archive: it may not read the archive's format.
func checkArchiveVersion(restoreVersion, dumpVersion string) error {
	if dumpVersion == "" {
		return nil
	}
	dn, err := versionNum(dumpVersion)
	if err != nil {
		return fmt.Errorf("backup's pg_dump: %w", err)
	}
	rn, err := versionNum(restoreVersion)
	if err != nil {
		return fmt.Errorf("pg_restore: %w", err)
	}
	dm, dname := major(dn)
	if rm, _ := major(rn); rm < dm {
		return fmt.Errorf("pg_restore %s is older than the pg_dump %s that made the backup: install the PostgreSQL %s client tools or newer", restoreVersion, dumpVersion, dname)
	}
	return nil
}

// start starts cmd and reports its pid to the test hook.
func (t *tools) start(cmd *exec.Cmd, tool string) error {
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", tool, err)
	}
	if t.started != nil {
		t.started(tool, cmd.Process.Pid)
	}
	return nil
}

// command prepares tool in a fresh private directory, which done
// removes once the tool ended. After a kill, Wait does not wait forever
// for a grandchild holding a pipe.
func (t *tools) command(ctx context.Context, tool string, args []string, stderr io.Writer) (cmd *exec.Cmd, done func(), err error) {
	d, err := childproc.New("")
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", tool, err)
	}
	cmd = d.Command(ctx, t.path(tool), args, t.env...)
	if stderr != nil {
		cmd.Stderr = stderr
	}
	return cmd, func() {
		if err := d.Close(); err != nil {
			t.log.WithError(err).Warn("could not remove a tool's private directory")
		}
	}, nil
}

// dump runs tool and copies its standard output to w, returning the
// number of bytes copied. A failed write kills the tool. tee, when not
// nil, sees every byte too (and must not fail).
func (t *tools) dump(ctx context.Context, tool string, args []string, w, tee io.Writer) (int64, error) {
	stderr := &headBuffer{max: 16 << 10}
	cmd, done, err := t.command(ctx, tool, args, stderr)
	if err != nil {
		return 0, err
	}
	defer done()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", tool, err)
	}
	if err := t.start(cmd, tool); err != nil {
		return 0, err
	}
	var src io.Reader = out
	if tee != nil {
		// w cannot see the pipe behind the TeeReader to grow it.
		pipe.Grow(out, 1<<20)
		src = io.TeeReader(out, tee)
	}
	n, copyErr := io.Copy(w, src)
	if copyErr != nil {
		_ = cmd.Process.Kill()
	}
	waitErr := cmd.Wait()
	t.logStderr(tool, stderr, waitErr == nil && copyErr == nil)
	switch {
	case ctx.Err() != nil:
		return n, fmt.Errorf("%s: %w", tool, context.Cause(ctx))
	case copyErr != nil:
		return n, fmt.Errorf("%s: write: %w", tool, copyErr)
	case waitErr != nil:
		return n, toolError(tool, waitErr, stderr)
	}
	return n, nil
}

// run runs tool to its end with no input; env is added to its
// environment.
func (t *tools) run(ctx context.Context, tool string, args []string, env ...string) error {
	stderr := &headBuffer{max: 16 << 10}
	cmd, done, err := t.command(ctx, tool, args, stderr)
	if err != nil {
		return err
	}
	cmd.Env = append(cmd.Env, env...)
	defer done()
	if err := t.start(cmd, tool); err != nil {
		return err
	}
	err = cmd.Wait()
	t.logStderr(tool, stderr, err == nil)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", tool, context.Cause(ctx))
	case err != nil:
		return toolError(tool, err, stderr)
	}
	return nil
}

// restore runs tool with in as its standard input. in is an artifact
// stream whose final Read reports a checksum mismatch, so restore always
// reads it to its end, even when the tool stops reading early (it failed,
// or it finished without needing the rest): a corrupt artifact is
// reported as such, with the artifact's name, whatever the tool said.
func (t *tools) restore(ctx context.Context, tool string, args []string, in io.Reader) error {
	stderr := &headBuffer{max: 16 << 10}
	cmd, done, err := t.command(ctx, tool, args, stderr)
	if err != nil {
		return err
	}
	defer done()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("%s: %w", tool, err)
	}
	if err := t.start(cmd, tool); err != nil {
		return err
	}
	src := &trackingReader{r: in}
	_, copyErr := io.Copy(stdin, src)
	_ = stdin.Close()
	waitErr := cmd.Wait()
	if src.err == nil && !src.eof && ctx.Err() == nil {
		// The tool stopped reading: read the rest to learn whether the
		// artifact itself is intact.
		_, _ = io.Copy(io.Discard, src)
	}
	t.logStderr(tool, stderr, waitErr == nil && src.err == nil)
	switch {
	case src.err != nil && ctx.Err() == nil:
		if waitErr != nil {
			t.log.WithFields(logrus.Fields{"tool": tool, "error": waitErr.Error()}).Warn("tool failed on a damaged input")
		}
		return src.err
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", tool, context.Cause(ctx))
	case waitErr != nil:
		return toolError(tool, waitErr, stderr)
	case copyErr != nil:
		// The tool succeeded without reading everything, and the rest
		// of the artifact checked out: its verdict stands.
		t.log.WithFields(logrus.Fields{"tool": tool}).Debug("tool finished before the end of its input")
	}
	return nil
}

// trackingReader remembers whether its reader reached the end, and the
// error (other than io.EOF) it returned.
type trackingReader struct {
	r   io.Reader
	eof bool
	err error
}

func (r *trackingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.eof {
		return 0, io.EOF
	}
	n, err := r.r.Read(p)
	switch {
	case errors.Is(err, io.EOF):
		r.eof = true
	case err != nil:
		r.err = err
	}
	return n, err
}

func (t *tools) logStderr(tool string, stderr *headBuffer, ok bool) {
	text := strings.TrimSpace(stderr.String())
	if text == "" {
		return
	}
	log := t.log.WithFields(logrus.Fields{"tool": tool, "stderr": text})
	if ok {
		log.Debug("tool output")
	} else {
		log.Warn("tool output")
	}
}

func toolError(tool string, err error, stderr *headBuffer) error {
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	var msgs []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l != "" {
			msgs = append(msgs, l)
		}
	}
	if len(msgs) > 4 {
		// The last lines, and the server's first ERROR (after it come
		// CONTEXT, the command, "a worker process died": not the why).
		var first string
		for _, m := range msgs[:len(msgs)-4] {
			if strings.Contains(m, "ERROR:") {
				first = m
				break
			}
		}
		msgs = msgs[len(msgs)-4:]
		if first != "" {
			msgs = append([]string{first}, msgs...)
		}
	}
	if len(msgs) == 0 {
		return fmt.Errorf("%s: %w", tool, err)
	}
	return fmt.Errorf("%s: %w: %s", tool, err, strings.Join(msgs, "; "))
}

// headBuffer keeps the first max bytes written to it (a tool's first
// error is the telling one).
type headBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *headBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

func (b *headBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
