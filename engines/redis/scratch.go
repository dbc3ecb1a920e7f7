package redis

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/internal/childproc"
)

// scratchStartTimeout bounds how long a scratch server may take to
// answer.
const scratchStartTimeout = 30 * time.Second

// scratch is a redis-server a verification started for itself: in a
// private 0700 directory (childproc), listening on a unix socket there
// only (no TCP port), with a random password from its 0600 config file
// (never argv), no persistence, and killed with the worker (Pdeathsig).
type scratch struct {
	dir     *childproc.Dir
	cmd     *exec.Cmd
	done    chan struct{}
	logFile *os.File
	ep      *endpoint
	version string
}

// startScratch starts bin with room for databases databases and waits
// until it answers.
func startScratch(ctx context.Context, bin string, databases int) (*scratch, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("a redis verification restores into a scratch redis-server, and %q is not on the worker's PATH: install redis-server (Debian: apt-get install redis-server) or name the binary in the source's redisServer setting", bin)
	}
	d, err := childproc.New("")
	if err != nil {
		return nil, fmt.Errorf("scratch redis-server: %w", err)
	}
	s := &scratch{dir: d, done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			s.stop()
		}
	}()
	sock := filepath.Join(d.Path(), "redis.sock")
	if len(sock) > 100 {
		return nil, fmt.Errorf("scratch redis-server: socket path %s is too long for a unix socket: set TMPDIR to a shorter directory", sock)
	}
	pw := make([]byte, 24)
	_, _ = rand.Read(pw)
	password := hex.EncodeToString(pw)
	conf := []string{
		"port 0",
		"unixsocket " + sock,
		"unixsocketperm 700",
		"dir " + d.Path(),
		`save ""`,
		"appendonly no",
		"daemonize no",
		`logfile ""`,
		"databases " + strconv.Itoa(max(16, databases)),
		"requirepass " + password,
	}
	confPath, err := d.WriteFile("redis.conf", []byte(strings.Join(conf, "\n")+"\n"))
	if err != nil {
		return nil, err
	}
	s.logFile, err = os.OpenFile(filepath.Join(d.Path(), "server.log"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("scratch redis-server: %w", err)
	}
	s.cmd = d.Command(ctx, path, []string{confPath})
	s.cmd.Stdout, s.cmd.Stderr = s.logFile, s.logFile
	s.cmd.SysProcAttr = scratchProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start scratch %s: %w", path, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	s.ep = &endpoint{network: "unix", addr: sock, host: "scratch", password: password}
	cl := s.ep.newClient()
	defer cl.Close()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(scratchStartTimeout)
	defer deadline.Stop()
	for {
		select {
		case <-s.done:
			return nil, fmt.Errorf("scratch %s exited at start: %s", path, s.logTail())
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-deadline.C:
			return nil, fmt.Errorf("scratch %s did not answer within %s: %s", path, scratchStartTimeout, s.logTail())
		case <-tick.C:
		}
		if _, err := os.Stat(sock); err != nil {
			continue
		}
		if s.version, err = serverVersion(ctx, cl); err == nil {
			ok = true
			return s, nil
		}
	}
}

// logTail is the end of the server's log, for an error.
func (s *scratch) logTail() string {
	data, _ := os.ReadFile(filepath.Join(s.dir.Path(), "server.log"))
	data = bytes.TrimSpace(data)
	if len(data) > 600 {
		data = data[len(data)-600:]
	}
	if len(data) == 0 {
		return "no output"
	}
	return strings.ReplaceAll(string(data), "\n", " | ")
}

// stop kills the server and removes its directory, whatever state it is
// in.
func (s *scratch) stop() error {
	var errs []error
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	if s.logFile != nil {
		_ = s.logFile.Close()
	}
	if err := s.dir.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
