package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes this machine in one line: CPU model and count,
// memory, kernel, Go version.
func Machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(bytes.NewReader(data))
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for _, line := range strings.Split(string(data), "\n") {
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d CPU %s%s, Linux %s, %s", runtime.NumCPU(), model, mem, strings.TrimSpace(string(kernel)), runtime.Version())
}

// LoadAvg is /proc/loadavg's 1, 5 and 15 minute load averages.
func LoadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Command describes an external command to time.
type Command struct {
	Name string
	Args []string
	Env  []string // added to this process's environment
	// Stdout receives the command's output (nil: discarded).
	Stdout io.Writer
	// Shell runs Name as a bash -o pipefail -c script instead (for
	// pipelines); Args are then ignored.
	Shell bool
}

// Timing is what a timed command cost.
type Timing struct {
	Wall time.Duration
	// CPU is the user and system time of the command and every child it
	// waited for (the stages of a shell pipeline).
	CPU time.Duration
}

// Time runs c and returns its wall and CPU time. The command's standard
// error is part of the error when it fails.
func Time(ctx context.Context, c Command) (Timing, error) {
	var cmd *exec.Cmd
	if c.Shell {
		cmd = exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", c.Name)
	} else {
		cmd = exec.CommandContext(ctx, c.Name, c.Args...)
	}
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Stdout = c.Stdout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	t := Timing{Wall: time.Since(start)}
	if cmd.ProcessState != nil {
		t.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		what := c.Name
		if !c.Shell {
			what = strings.Join(append([]string{c.Name}, c.Args...), " ")
		}
		return t, fmt.Errorf("%s: %w: %s", what, err, strings.TrimSpace(stderr.String()))
	}
	return t, nil
}

// ProcCPU is the CPU time a running process has used, with that of the
// children it has reaped (a server's finished sessions or forks), from
// /proc/<pid>/stat.
func ProcCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing one. utime, stime, cutime and cstime are fields
	// 14 to 17 of the line, so 12 to 15 after the name.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 16 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// ShellQuote quotes s for bash.
func ShellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Output runs a command and returns its trimmed standard output.
func Output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		var msg string
		if ee, ok := err.(*exec.ExitError); ok {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(string(out)), nil
}
