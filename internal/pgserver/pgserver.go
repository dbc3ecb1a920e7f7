// Package pgserver runs a private PostgreSQL server on scratch space:
// the temporary instance a point-in-time restore replays WAL in, and
// the servers tests start for themselves (replication allowed, free to
// be killed like a crash). When capsule runs as root, the server runs
// as the "postgres" user, which PostgreSQL insists on.
package pgserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one private server.
type Server struct {
	BinDir string
	Dir    string // the data directory
	Port   int
	// Socket is the directory of its Unix socket (inside Dir's parent).
	Socket string
	// Log is the server's log file.
	Log string
	// User is the role URL and Connect use (default postgres).
	User string
	// HBAFile, when set, replaces the data directory's pg_hba.conf.
	HBAFile string
	// SocketOnly makes the server listen on no TCP address, only on its
	// Unix socket in Socket, which must be private (PrivateSocket):
	// with trust authentication, whoever reaches the server is in. URL
	// and Connect then go through the socket.
	SocketOnly bool

	cred *syscall.Credential
	uid  int
	gid  int
	cmd  *exec.Cmd
	done chan error
}

// New prepares a server for data directory dir (which may not exist
// yet) on a free loopback port; its socket and log go to runDir.
func New(binDir, dir, runDir string) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{BinDir: binDir, Dir: dir, Port: port, Socket: runDir, Log: filepath.Join(runDir, "postgres.log"), User: "postgres", uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL needs a user to run as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		s.uid, s.gid = uid, gid
	}
	return s, nil
}

// FreePort returns a loopback port nobody listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Own gives path (recursively) to the server's user, when it runs as
// another one.
func (s *Server) Own(path string) error {
	if s.uid < 0 {
		return nil
	}
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, s.uid, s.gid)
	})
}

func (s *Server) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, prog), args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8", "TZ=UTC"}
	cmd.Dir = s.Socket
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true}
	return cmd
}

// Init runs initdb (trust authentication for local and loopback
// connections, replication included) and appends conf to
// postgresql.conf.
func (s *Server) Init(ctx context.Context, conf map[string]string) error {
	for _, d := range []string{filepath.Dir(s.Dir), s.Socket} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := s.Own(d); err != nil {
			return err
		}
	}
	out, err := s.command(ctx, "initdb", "-D", s.Dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w: %s", err, out)
	}
	hba := "local all all trust\nlocal replication all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(s.Dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return err
	}
	return s.Configure("postgresql.conf", conf)
}

// Configure appends settings to a configuration file of the data
// directory (postgresql.conf, postgresql.auto.conf).
func (s *Server) Configure(file string, conf map[string]string) error {
	var b strings.Builder
	for k, v := range conf {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(v, "'", "''"))
	}
	path := filepath.Join(s.Dir, file)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return s.Own(path)
}

// Start starts the server, listening on 127.0.0.1:Port and a socket in
// Socket, and waits until it accepts connections (recovery, when the
// data directory asks for it, comes first), or it exits.
func (s *Server) Start(ctx context.Context, wait time.Duration) error {
	logf, err := os.OpenFile(s.Log, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	listen := "127.0.0.1"
	if s.SocketOnly {
		if err := s.checkPrivate(); err != nil {
			return err
		}
		listen = ""
	}
	args := []string{"-D", s.Dir, "-p", strconv.Itoa(s.Port),
		"-c", "listen_addresses=" + listen, "-c", "unix_socket_directories=" + s.Socket}
	if s.SocketOnly {
		args = append(args, "-c", "unix_socket_permissions=0700")
	}
	if s.HBAFile != "" {
		args = append(args, "-c", "hba_file="+s.HBAFile)
	}
	s.cmd = s.command(context.WithoutCancel(ctx), "postgres", args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	s.done = make(chan error, 1)
	go func() { s.done <- s.cmd.Wait() }()
	deadline := time.Now().Add(wait)
	for {
		conn, err := s.Connect(ctx, "postgres")
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case werr := <-s.done:
			s.done <- werr
			return fmt.Errorf("postgres exited (%v): %s", werr, s.Tail(2000))
		case <-ctx.Done():
			s.Kill()
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("postgres did not accept connections within %s: %s", wait, s.Tail(2000))
		}
	}
}

// PrivateSocket makes dir the server's socket directory, private to the
// user the server runs as (mode 0700): nobody else on the host can
// reach the socket in it (root can).
func (s *Server) PrivateSocket(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil { // past the umask
		return err
	}
	s.Socket = dir
	if err := s.Own(dir); err != nil {
		return err
	}
	return s.checkPrivate()
}

// checkPrivate refuses a socket directory other users can enter.
func (s *Server) checkPrivate() error {
	fi, err := os.Lstat(s.Socket)
	if err != nil {
		return err
	}
	owner := os.Geteuid()
	if s.uid >= 0 {
		owner = s.uid
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 || !ok || int(st.Uid) != owner {
		return fmt.Errorf("socket directory %s is not private (mode %v): other users could reach a server that trusts every connection", s.Socket, fi.Mode())
	}
	return nil
}

// URL is a connection URL for database db as user postgres: through
// the socket when the server listens on no TCP address.
func (s *Server) URL(db string) string { return s.URLAs(s.User, db) }

// URLAs is a connection URL for database db as role user.
func (s *Server) URLAs(user, db string) string {
	if s.SocketOnly {
		q := url.Values{"host": {s.Socket}, "port": {strconv.Itoa(s.Port)}, "sslmode": {"disable"}}
		return fmt.Sprintf("postgres://%s@/%s?%s", url.PathEscape(user), url.PathEscape(db), q.Encode())
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", url.PathEscape(user), s.Port, url.PathEscape(db))
}

// Connect opens a connection to database db.
func (s *Server) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return pgx.Connect(cctx, s.URL(db))
}

// Tail is the end of the server's log.
func (s *Server) Tail(n int) string {
	data, _ := os.ReadFile(s.Log)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return strings.TrimSpace(string(data))
}

// Stop shuts the server down cleanly (a fast shutdown: a checkpoint,
// then exit) and waits.
func (s *Server) Stop() error {
	return s.signal(syscall.SIGINT, time.Minute)
}

// Kill kills the server like a crash (SIGKILL to its process group).
func (s *Server) Kill() {
	_ = s.signal(syscall.SIGKILL, 10*time.Second)
}

func (s *Server) signal(sig syscall.Signal, wait time.Duration) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	if sig == syscall.SIGKILL {
		_ = syscall.Kill(-s.cmd.Process.Pid, sig)
	} else {
		_ = s.cmd.Process.Signal(sig)
	}
	select {
	case <-s.done:
		s.cmd = nil
		return nil
	case <-time.After(wait):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		s.cmd = nil
		return errors.New("postgres did not stop in time; killed")
	}
}

// Exited reports whether the server's process ended, and how.
func (s *Server) Exited() (bool, error) {
	if s.done == nil {
		return true, nil
	}
	select {
	case err := <-s.done:
		s.done <- err
		return true, err
	default:
		return false, nil
	}
}

// ProgramVersion runs "<dir>/<prog> --version" with a minimal environment
// (never the worker's, which holds credentials) and returns its output.
func ProgramVersion(dir, prog string) (string, error) {
	cmd := exec.Command(filepath.Join(dir, prog), "--version")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8", "TZ=UTC"}
	out, err := cmd.Output()
	return string(out), err
}
