package mysql

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// tlsServer is a private mariadbd on a free loopback port that accepts
// only TLS connections over TCP (require_secure_transport), with the
// test PKI's server certificate.
type tlsServer struct {
	port   int
	socket string
	admin  *sql.DB
}

func startTLSServer(t *testing.T, p *enginetest.PKI) *tlsServer {
	t.Helper()
	mariadbd, err := exec.LookPath("mariadbd")
	if err != nil {
		if mariadbd, err = exec.LookPath("/usr/sbin/mariadbd"); err != nil {
			t.Skip("mariadbd is not installed")
		}
	}
	install, err := exec.LookPath("mariadb-install-db")
	if err != nil {
		t.Skip("mariadb-install-db is not installed")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	small := []string{"--innodb-log-file-size=8M", "--innodb-buffer-pool-size=16M"}
	out, err := exec.Command(install, append([]string{"--no-defaults", "--datadir=" + data, "--user=" + userName(), "--auth-root-authentication-method=normal", "--skip-test-db"}, small...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &tlsServer{port: port, socket: filepath.Join(dir, "mysqld.sock")}
	args := append([]string{"--no-defaults", "--datadir=" + data, "--user=" + userName(),
		"--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1", "--socket=" + s.socket,
		"--pid-file=" + filepath.Join(dir, "mysqld.pid"), "--skip-name-resolve",
		"--ssl-ca=" + p.CA, "--ssl-cert=" + p.ServerCert, "--ssl-key=" + p.ServerKey,
		"--require-secure-transport=ON"}, small...)
	cmd := exec.Command(mariadbd, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	ready := make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "ready for connections") {
				close(ready)
				break
			}
		}
		for sc.Scan() { // keep draining so the server never blocks on stderr
		}
	}()
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("mariadbd exited:\n%s", log.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("mariadbd not ready after 2 minutes:\n%s", log.String())
	}
	c := driver.NewConfig()
	c.User, c.Net, c.Addr = "root", "unix", s.socket
	conn, err := driver.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	s.admin = sql.OpenDB(conn)
	t.Cleanup(func() { s.admin.Close() })
	if err := s.admin.Ping(); err != nil {
		t.Fatalf("connect to the private mariadbd over its socket: %v", err)
	}
	return s
}

func userName() string {
	if os.Getuid() == 0 {
		return "root" // mariadbd refuses to run as root unless told to
	}
	return strconv.Itoa(os.Getuid())
}

// TestTLS backs up and restores through a MariaDB server that accepts
// TLS only, with the server's certificate checked by the driver and the
// tools alike; a wrong CA, a wrong name and a missing client certificate
// fail.
func TestTLS(t *testing.T) {
	if _, err := findTool("", "mariadb-dump", "mysqldump"); err != nil {
		t.Skip(err)
	}
	p := enginetest.NewPKI(t)
	srv := startTLSServer(t, p)
	ctx := context.Background()
	password := "Tls!" + randHex(8)
	for _, q := range []string{
		"CREATE USER 'capsule'@'%' IDENTIFIED BY '" + password + "' REQUIRE SSL",
		"CREATE USER 'certuser'@'%' IDENTIFIED BY '" + password + "' REQUIRE X509",
		"GRANT ALL PRIVILEGES ON *.* TO 'capsule'@'%' WITH GRANT OPTION",
		"GRANT ALL PRIVILEGES ON *.* TO 'certuser'@'%' WITH GRANT OPTION",
		"CREATE DATABASE app",
		"CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40))",
		"INSERT INTO app.t VALUES (1, 'one'), (2, 'two'), (3, 'three')",
	} {
		mustExec(t, srv.admin, q)
	}
	source := func(user, host string, tlsSetting map[string]any) engines.Source {
		cfg := map[string]any{"url": fmt.Sprintf("mysql://%s@%s:%d/app", user, host, srv.port)}
		if tlsSetting != nil {
			cfg["tls"] = tlsSetting
		}
		return engines.Source{Name: "tls/mysql", Engine: "mysql", Config: cfg,
			Password: func(context.Context) (string, error) { return password, nil }}
	}
	count := func() int {
		var n int
		if err := srv.admin.QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("verified backup and restore", func(t *testing.T) {
		src := source("capsule", "127.0.0.1", map[string]any{"caFile": p.CA})
		store := enginetest.NewStore()
		info, err := New().Backup(ctx, &engines.BackupJob{ID: "tls", Source: src, Artifacts: store})
		if err != nil {
			t.Fatalf("backup over verified TLS: %v", err)
		}
		mustExec(t, srv.admin, "DELETE FROM app.t WHERE id > 1")
		if _, err := New().Restore(ctx, store.RestoreJob(t, "tls", src, *info, engines.RestoreOptions{DropPrevious: true})); err != nil {
			t.Fatalf("restore over verified TLS: %v", err)
		}
		if n := count(); n != 3 {
			t.Errorf("after the restore: %d rows, want 3", n)
		}
	})
	t.Run("the server takes nothing but TLS", func(t *testing.T) {
		// So that the success above proves both the driver and the tools
		// spoke TLS. MariaDB refuses a plaintext login with the right
		// password as "Access denied".
		_, err := New().Backup(ctx, &engines.BackupJob{ID: "plain", Source: source("capsule", "127.0.0.1", nil), Artifacts: enginetest.NewStore()})
		if err == nil || !strings.Contains(err.Error(), "Access denied") {
			t.Errorf("backup without tls: %v, want the server's refusal", err)
		}
	})
	t.Run("client certificate", func(t *testing.T) {
		withCert := map[string]any{"caFile": p.CA, "certFile": p.ClientCert, "keyFile": p.ClientKey}
		store := enginetest.NewStore()
		info, err := New().Backup(ctx, &engines.BackupJob{ID: "x509", Source: source("certuser", "127.0.0.1", withCert), Artifacts: store})
		if err != nil {
			t.Fatalf("backup with a client certificate: %v", err)
		}
		if _, err := New().Restore(ctx, store.RestoreJob(t, "x509", source("certuser", "127.0.0.1", withCert), *info, engines.RestoreOptions{DropPrevious: true})); err != nil {
			t.Fatalf("restore with a client certificate: %v", err)
		}
		_, err = New().Backup(ctx, &engines.BackupJob{ID: "nocert", Source: source("certuser", "127.0.0.1", map[string]any{"caFile": p.CA}), Artifacts: enginetest.NewStore()})
		if err == nil || !strings.Contains(err.Error(), "Access denied") {
			t.Errorf("backup as a REQUIRE X509 user without a client certificate: %v, want access denied", err)
		}
	})

	// Each failure, once for the driver (the engine) and once for each
	// tool with the engine's own option file.
	bad := []struct {
		name, host string
		tls        map[string]any
		want       string
	}{
		{"wrong CA", "127.0.0.1", map[string]any{"caFile": p.OtherCA}, "certificate"},
		{"wrong name", "localhost", map[string]any{"caFile": p.CA}, "certificate"},
	}
	for _, b := range bad {
		t.Run(b.name+"/driver", func(t *testing.T) {
			_, err := New().Backup(ctx, &engines.BackupJob{ID: "bad", Source: source("capsule", b.host, b.tls), Artifacts: enginetest.NewStore()})
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Errorf("backup: %v, want a %s error", err, b.want)
			}
		})
		for _, tool := range []string{"mariadb-dump", "mariadb"} {
			t.Run(b.name+"/"+tool, func(t *testing.T) {
				path, err := findTool("", tool)
				if err != nil {
					t.Skip(err)
				}
				for _, c := range []struct {
					host string
					tls  map[string]any
					ok   bool
				}{{"127.0.0.1", map[string]any{"caFile": p.CA}, true}, {b.host, b.tls, false}} {
					cfg, err := decodeConfig(source("capsule", c.host, c.tls))
					if err != nil {
						t.Fatal(err)
					}
					tg, _ := cfg.target()
					s := &session{cfg: cfg, t: tg, password: password}
					run, err := s.newToolRun(ctx, path)
					if err != nil {
						t.Fatal(err)
					}
					args := []string{"--no-data", "app"}
					if tool == "mariadb" {
						args = []string{"-e", "SELECT 1"}
					}
					out, err := run.command(ctx, args...).CombinedOutput()
					run.close()
					switch {
					case c.ok && err != nil:
						t.Fatalf("%s with the right CA and name failed: %v\n%s", tool, err, out)
					case !c.ok && err == nil:
						t.Errorf("%s connected with %s to %s", tool, b.name, c.host)
					case !c.ok && !strings.Contains(strings.ToLower(string(out)), "certificate") && !strings.Contains(string(out), "SSL"):
						t.Errorf("%s failed for another reason than the certificate: %s", tool, out)
					}
				}
			})
		}
	}

	t.Run("insecureSkipVerify encrypts without checking", func(t *testing.T) {
		src := source("capsule", "localhost", map[string]any{"insecureSkipVerify": true})
		if _, err := New().Backup(ctx, &engines.BackupJob{ID: "skip", Source: src, Artifacts: enginetest.NewStore()}); err != nil {
			t.Errorf("backup with insecureSkipVerify: %v", err)
		}
	})
}

func TestTLSSettings(t *testing.T) {
	for _, c := range []struct {
		tls  map[string]any
		want string
	}{
		{map[string]any{"caFile": "ca.pem"}, "not an absolute path"},
		{map[string]any{"certFile": "/c.pem"}, "set both or neither"},
		{map[string]any{"insecureSkipVerify": true, "caFile": "/ca.pem"}, "insecureSkipVerify"},
		{map[string]any{"serverName": "db.example"}, "tls.serverName"},
		{map[string]any{"serverName": "H"}, ""},
		{map[string]any{"caFlie": "/ca.pem"}, "unknown field"},
	} {
		_, err := decodeConfig(engines.Source{Name: "s", Engine: "mysql", Config: map[string]any{"url": "mysql://u@h:3306/db", "tls": c.tls}})
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("tls %v: %v, want %q", c.tls, err, c.want)
		}
	}
	text, err := optionFile(&target{user: "u", host: "h", port: 3306}, "pw", &engines.TLS{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"}, "mysql")
	if err != nil || !strings.Contains(text, "ssl-mode=VERIFY_IDENTITY") || strings.Contains(text, "ssl-verify-server-cert") || !strings.Contains(text, `ssl-key="/k.pem"`) {
		t.Errorf("MySQL client option file:\n%s\n%v", text, err)
	}
}
