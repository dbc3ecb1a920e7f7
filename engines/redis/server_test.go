package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/cnvrg/capsule/engines"
)

// testServer is a redis-server the test started on a free loopback port.
type testServer struct {
	port     int
	dir      string
	user     string // "" for the default user
	password string
	tls      bool
	caFile   string
	// clientCert and clientKey: with "tls-auth-clients yes" the test's
	// own clients present the server's certificate (it may serve both).
	clientCert, clientKey string
}

// randHex returns n random bytes in hex.
func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer starts redis-server with a password (from its config file,
// never argv) and the extra config lines, and stops it when the test
// ends.
func startServer(t testing.TB, extra ...string) *testServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	s := &testServer{dir: t.TempDir(), password: "pw-" + randHex(12)}
	conf := []string{
		"bind 127.0.0.1",
		"save \"\"",
		"appendonly no",
		"dir " + s.dir,
		"repl-diskless-sync-delay 0",
		"requirepass " + s.password,
	}
	for _, l := range extra {
		switch {
		case strings.HasPrefix(l, "tls-port "):
			s.tls = true
		case strings.HasPrefix(l, "tls-ca-cert-file "):
			s.caFile = strings.TrimPrefix(l, "tls-ca-cert-file ")
		}
	}
	if slices.Contains(extra, "tls-auth-clients yes") {
		for _, l := range extra {
			if f, ok := strings.CutPrefix(l, "tls-cert-file "); ok {
				s.clientCert = f
			}
			if f, ok := strings.CutPrefix(l, "tls-key-file "); ok {
				s.clientKey = f
			}
		}
	}
	for attempt := 0; ; attempt++ {
		s.port = freePort(t)
		lines := append(append([]string{}, conf...), extra...)
		if s.tls {
			lines = append(lines, "port 0", fmt.Sprintf("tls-port %d", s.port))
			var kept []string
			for _, l := range lines {
				if !strings.HasPrefix(l, "tls-port ") || l == fmt.Sprintf("tls-port %d", s.port) {
					kept = append(kept, l)
				}
			}
			lines = kept
		} else {
			lines = append(lines, fmt.Sprintf("port %d", s.port))
		}
		confFile := filepath.Join(s.dir, "redis.conf")
		if err := os.WriteFile(confFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("redis-server", confFile)
		logf, _ := os.Create(filepath.Join(s.dir, "server.log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			logf.Close()
		})
		if s.waitReady() {
			return s
		}
		cmd.Process.Kill()
		cmd.Wait()
		if attempt == 3 {
			out, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
			t.Fatalf("redis-server did not start: %s", out)
		}
	}
}

func (s *testServer) waitReady() bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			c.Close()
			cl := s.admin()
			err := cl.Ping(context.Background()).Err()
			cl.Close()
			if err == nil {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// admin returns a client as the default user, with every permission.
func (s *testServer) admin() *goredis.Client {
	ep := s.endpoint("", s.password)
	return ep.newClient()
}

func (s *testServer) endpoint(user, password string) *endpoint {
	cfg := s.config(user)
	ep, err := cfg.endpoint(password)
	if err != nil {
		panic(err)
	}
	return ep
}

func (s *testServer) url(user string) string {
	scheme := "redis"
	if s.tls {
		scheme = "rediss"
	}
	if user != "" {
		return fmt.Sprintf("%s://%s@127.0.0.1:%d", scheme, user, s.port)
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.port)
}

func (s *testServer) config(user string) *Config {
	c := &Config{URL: s.url(user), CAFile: s.caFile}
	if s.clientCert != "" {
		c.CAFile, c.TLS = "", &engines.TLS{CAFile: s.caFile, CertFile: s.clientCert, KeyFile: s.clientKey}
	}
	return c
}

// source returns a source for this server as user (with password) and
// the given extra settings.
func (s *testServer) source(user, password string, settings map[string]any) engines.Source {
	cfg := map[string]any{"url": s.url(user)}
	if s.caFile != "" {
		cfg["caFile"] = s.caFile
	}
	for k, v := range settings {
		cfg[k] = v
	}
	return engines.Source{
		Name:     "test/redis",
		Engine:   "redis",
		Config:   cfg,
		Password: func(context.Context) (string, error) { return password, nil },
	}
}

// addUser creates an ACL user with a fresh password and the given rules.
func (s *testServer) addUser(t testing.TB, name string, rules ...string) string {
	t.Helper()
	pw := "upw-" + randHex(12)
	cl := s.admin()
	defer cl.Close()
	args := []any{"ACL", "SETUSER", name, "reset", "on", ">" + pw}
	for _, r := range rules {
		args = append(args, r)
	}
	if err := cl.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("acl setuser: %v", err)
	}
	return pw
}

// rawClient is a plain go-redis client for test assertions.
func rawClient(s *testServer, db int) *goredis.Client {
	ep := s.endpoint("", s.password)
	return goredis.NewClient(&goredis.Options{
		Addr: ep.addr, Password: s.password, TLSConfig: ep.tls, DB: db, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}
