package postgres

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// envMap turns a /proc/<pid>/environ list into a map.
func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// TestToolsSeeNoWorkerSecrets puts secrets in the worker's environment
// (this test process's) and reads the environment of the running
// pg_dump and pg_restore: they have the source's PG* variables, a
// private HOME and TMPDIR, and none of the worker's secrets; the private
// directories are gone after the run.
func TestToolsSeeNoWorkerSecrets(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", `CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g`)
	canary := "canary-" + randHex(8)
	t.Setenv("AWS_SECRET_ACCESS_KEY", canary)
	t.Setenv("CAPSULE_OTHER_SOURCE_PASSWORD", canary)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	private := filepath.Join(tmp, fmt.Sprintf("capsule-%d", os.Getuid()))

	w := watchProcs(db.password)
	e := New()
	e.started = w.started
	store := enginetest.NewStore()
	info, err := e.Backup(ctx, &engines.BackupJob{ID: "env", Source: db.source(), Artifacts: store})
	if err != nil {
		w.finish()
		t.Fatalf("Backup: %v", err)
	}
	_, err = e.Restore(ctx, store.RestoreJob(t, "env", db.source(), *info, engines.RestoreOptions{DropPrevious: true}))
	w.finish()
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		raw, ok := w.envOf[tool]
		if !ok {
			t.Errorf("%s never started", tool)
			continue
		}
		env := envMap(raw)
		for k, v := range env {
			if strings.Contains(v, canary) {
				t.Errorf("%s sees the worker's %s", tool, k)
			}
		}
		if env["PGPASSWORD"] != db.password || env["PGUSER"] != db.name || env["PGHOST"] != testHost {
			t.Errorf("%s lacks the source's connection: PGUSER=%q PGHOST=%q, PGPASSWORD set: %v", tool, env["PGUSER"], env["PGHOST"], env["PGPASSWORD"] != "")
		}
		if home := env["HOME"]; filepath.Dir(home) != private || !strings.HasPrefix(filepath.Base(home), "run-") || env["TMPDIR"] != home {
			t.Errorf("%s: HOME=%q TMPDIR=%q, want a run directory in %s", tool, home, env["TMPDIR"], private)
		}
		if env["LC_ALL"] != "C" || env["TZ"] != "UTC" {
			t.Errorf("%s: LC_ALL=%q TZ=%q", tool, env["LC_ALL"], env["TZ"])
		}
	}
	if left, _ := filepath.Glob(filepath.Join(private, "*")); len(left) != 0 {
		t.Errorf("private directories left after the run: %v", left)
	}
}

// TestVerifiedTLS backs up and restores over TLS with the server's
// certificate checked, by pgx and by pg_dump/pg_restore alike, against
// the test server's own certificate (Debian's snakeoil one, for
// localhost): through tls.serverName when the url names 127.0.0.1. A
// wrong CA and a wrong name fail.
func TestVerifiedTLS(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	admin := adminConnect(ctx, t, "postgres")
	var ssl, certFile string
	err := admin.QueryRow(ctx, "SELECT current_setting('ssl'), current_setting('ssl_cert_file')").Scan(&ssl, &certFile)
	admin.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ssl != "on" {
		t.Skip("the test server has ssl off")
	}
	if _, err := os.ReadFile(certFile); err != nil {
		t.Skipf("the server's certificate is not readable here: %v", err)
	}
	db.exec(ctx, t, "", `CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g`)
	src := func(tlsSetting map[string]any) engines.Source {
		s := db.source()
		delete(s.Config, "sslmode")
		s.Config["tls"] = tlsSetting
		return s
	}
	other := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(other, otherCAPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}

	w := watchProcs(db.password)
	e := New()
	e.started = w.started
	good := src(map[string]any{"caFile": certFile, "serverName": "localhost"})
	store := enginetest.NewStore()
	info, err := e.Backup(ctx, &engines.BackupJob{ID: "tls", Source: good, Artifacts: store})
	if err == nil {
		db.exec(ctx, t, "", `DELETE FROM t`)
		_, err = e.Restore(ctx, store.RestoreJob(t, "tls", good, *info, engines.RestoreOptions{DropPrevious: true}))
	}
	w.finish()
	if err != nil {
		t.Fatalf("backup and restore over verified TLS: %v", err)
	}
	if n := db.value(ctx, t, "", `SELECT count(*)::text FROM t`); n != "1000" {
		t.Errorf("after the restore: %s rows", n)
	}
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		env := envMap(w.envOf[tool])
		want := map[string]string{"PGSSLMODE": "verify-full", "PGSSLROOTCERT": certFile, "PGHOST": "localhost", "PGHOSTADDR": testHost}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s: %s=%q, want %q", tool, k, env[k], v)
			}
		}
	}

	for name, bad := range map[string]map[string]any{
		"wrong CA":   {"caFile": other, "serverName": "localhost"},
		"wrong name": {"caFile": certFile},                                       // the url says 127.0.0.1
		"named":      {"caFile": certFile, "serverName": "db.elsewhere.example"}, // not in the certificate
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New().Backup(ctx, &engines.BackupJob{ID: "bad", Source: src(bad), Artifacts: enginetest.NewStore()})
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("backup: %v, want a certificate error", err)
			}
		})
	}
	t.Run("pg_dump checks too", func(t *testing.T) {
		// The same wrong settings straight to the tool, past pgx.
		for name, bad := range map[string]map[string]any{"wrong CA": {"caFile": other, "serverName": "localhost"}, "wrong name": {"caFile": certFile}} {
			j, err := New().newJob(ctx, src(bad), nil)
			if err != nil {
				t.Fatal(err)
			}
			err = j.tools.run(ctx, "pg_dump", []string{"--schema-only", "-d", dbArg(db.name)})
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%s: pg_dump: %v, want a certificate error", name, err)
			}
		}
	})
}

// otherCAPEM is a CA certificate that signed nothing the server has.
func otherCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestTLSSettings(t *testing.T) {
	for _, c := range []struct {
		cfg      map[string]any
		want     string // error, or else the sslmode
		hostaddr string
	}{
		{map[string]any{"tls": map[string]any{"caFile": "/ca.pem"}}, "verify-full", ""},
		{map[string]any{"tls": map[string]any{"insecureSkipVerify": true}}, "require", ""},
		{map[string]any{"sslmode": "verify-ca", "tls": map[string]any{"caFile": "/ca.pem"}}, "verify-ca", ""},
		{map[string]any{"tls": map[string]any{"serverName": "db.internal"}}, "verify-full", "10.1.2.3"},
		{map[string]any{"sslmode": "prefer", "tls": map[string]any{"caFile": "/ca.pem"}}, "does not check", ""},
		{map[string]any{"sslmode": "verify-full", "tls": map[string]any{"insecureSkipVerify": true}}, "insecureSkipVerify", ""},
		{map[string]any{"sslmode": "verify-ca", "tls": map[string]any{"serverName": "db.internal"}}, "tls.serverName", ""},
		{map[string]any{"url": "postgres://u@db.example/x", "tls": map[string]any{"serverName": "db.internal"}}, "IP address", ""},
		{map[string]any{"tls": map[string]any{"certFile": "/c.pem"}}, "set both", ""},
		{map[string]any{}, "prefer", ""},
	} {
		cfg := map[string]any{"url": "postgres://u@10.1.2.3:5432/x"}
		for k, v := range c.cfg {
			cfg[k] = v
		}
		ci, err := parseSource(engines.Source{Name: "s", Engine: "postgres", Config: cfg})
		switch {
		case err != nil:
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v: %v, want %q", c.cfg, err, c.want)
			}
		case ci.sslmode != c.want || ci.hostaddr != c.hostaddr:
			t.Errorf("%v: sslmode %q hostaddr %q, want %q %q", c.cfg, ci.sslmode, ci.hostaddr, c.want, c.hostaddr)
		}
	}
}
