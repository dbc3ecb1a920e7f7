package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/jackc/pgx/v5"
)

// config is a postgres source's settings as they appear in YAML or JSON.
type config struct {
	// URL is postgres://USER@HOST:PORT/DB, without a password.
	URL string `json:"url"`
	// SSLMode is libpq's sslmode (disable, allow, prefer, require,
	// verify-ca, verify-full); it may also be given as ?sslmode= in url.
	// Default prefer, or verify-full when tls is set.
	SSLMode string `json:"sslmode,omitempty"`
	// TLS is the CA, server name and client certificate; with it the
	// default sslmode is verify-full (require with insecureSkipVerify).
	TLS *engines.TLS `json:"tls,omitempty"`
	// Databases is "all" to back up every database of the server plus
	// its roles; unset backs up the database named in url.
	Databases string `json:"databases,omitempty"`
	// PasswordEnv and PasswordFile are resolved by the worker into
	// Source.Password; accepted here so that strict decoding passes.
	PasswordEnv  string `json:"passwordEnv,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
	// RestoreJobs is how many server connections load a database at
	// once (COPY of the rows streamed from the bucket, then pg_restore
	// --jobs for the indexes); 1 streams the archive into one
	// pg_restore. Default defaultRestoreJobs.
	RestoreJobs int `json:"restoreJobs,omitempty"`
	// StagingDir is where a parallel restore writes the archive's table
	// of contents for pg_restore (or a copy of an archive it cannot
	// stream); default the system's temporary directory ($TMPDIR, else
	// /tmp).
	StagingDir string `json:"stagingDir,omitempty"`
	// AllowSuperuser lets a restore or a verification run as a role
	// that can reach beyond its databases (see restore.go, checkRole).
	AllowSuperuser bool `json:"allowSuperuser,omitempty"`
	// PITR turns on point-in-time recovery: a worker holds a continuous
	// job that streams the server's WAL into the bucket through a
	// physical replication slot (capsule_<source>), and the source's
	// backups are physical base backups (BASE_BACKUP) instead of
	// pg_dump archives. The role needs REPLICATION, the server wal_level
	// replica or logical and a free WAL sender and slot.
	PITR bool `json:"pitr,omitempty"`
	// SlotAlertBytes is the WAL the slot may hold back before capsule
	// reports it (metric capsule_pitr_slot_lag_bytes, alert
	// CapsulePITRSlotLag); default 1 GiB.
	SlotAlertBytes int64 `json:"slotAlertBytes,omitempty"`
	// SlotMaxBytes is the hard limit: past it capsule drops its slot, so
	// the server frees the WAL rather than fill its disk, and the stream
	// starts over with a gap that only a new base backup closes; default
	// 8 GiB.
	SlotMaxBytes int64 `json:"slotMaxBytes,omitempty"`
}

// defaultRestoreJobs is how many pg_restore jobs a restore runs unless
// the source says otherwise.
const defaultRestoreJobs = 2

// maxRestoreJobs bounds restoreJobs (each job is a server connection).
const maxRestoreJobs = 32

// conninfo is a validated source: where the server is and what to back up.
type conninfo struct {
	host     string
	port     string
	user     string
	database string // the database to back up; for all, the one to connect to
	sslmode  string
	// tls is the source's tls setting (nil without one); hostaddr is the
	// url's IP address when tls.serverName names the certificate's host
	// instead.
	tls      *engines.TLS
	hostaddr string
	all      bool
	// restoreJobs and stagingDir: see config.
	restoreJobs int
	stagingDir  string
	// allowSuperuser: see config.
	allowSuperuser bool
	// pitr, slotAlert and slotMax: see config.
	pitr               bool
	slotAlert, slotMax int64
}

var sslModes = map[string]bool{
	"disable": true, "allow": true, "prefer": true,
	"require": true, "verify-ca": true, "verify-full": true,
}

// parseSource decodes and validates a source's settings. Error messages
// name the setting and never repeat the URL (a careless operator may have
// put a password in it).
func parseSource(src engines.Source) (*conninfo, error) {
	var cfg config
	if err := src.Decode(&cfg); err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("source %s (engine postgres): %s", src.Name, fmt.Sprintf(format, args...))
	}
	if cfg.URL == "" {
		return nil, bad("url: required (postgres://USER@HOST:PORT/DB)")
	}
	if cfg.PasswordEnv != "" && cfg.PasswordFile != "" {
		return nil, bad("passwordEnv and passwordFile: set only one")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url's errors quote the URL or parts of it: say no more.
		return nil, bad("url: not a valid URL (postgres://USER@HOST:PORT/DB)")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, bad("url: scheme must be postgres:// (postgres://USER@HOST:PORT/DB)")
	}
	if u.User == nil || u.User.Username() == "" {
		return nil, bad("url: names no user (postgres://USER@HOST:PORT/DB)")
	}
	if _, has := u.User.Password(); has {
		return nil, bad("url: must not contain a password: use passwordEnv or passwordFile")
	}
	ci := &conninfo{host: u.Hostname(), port: u.Port(), user: u.User.Username()}
	q := u.Query()
	if sock := q["host"]; len(sock) > 0 {
		// A Unix socket's directory, as libpq takes it:
		// postgres://USER@/DB?host=/DIR&port=N.
		if ci.host != "" || ci.port != "" {
			return nil, bad("url: names a host twice (before the path and in ?host=)")
		}
		if len(sock) > 1 || !filepath.IsAbs(sock[0]) {
			return nil, bad("url: ?host= must name one socket directory, an absolute path (postgres://USER@/DB?host=/DIR&port=N)")
		}
		if cfg.TLS != nil {
			return nil, bad("tls: a Unix socket (?host=%s) carries no TLS; remove tls", sock[0])
		}
		ci.host, ci.port = filepath.Clean(sock[0]), q.Get("port")
		delete(q, "host")
		delete(q, "port")
	}
	if ci.host == "" {
		return nil, bad("url: names no host (postgres://USER@HOST:PORT/DB)")
	}
	if ci.port == "" {
		ci.port = "5432"
	}
	if p, err := strconv.Atoi(ci.port); err != nil || p < 1 || p > 65535 {
		return nil, bad("url: port %q is not a port number", ci.port)
	}
	if u.Fragment != "" {
		return nil, bad("url: must not have a #fragment")
	}
	ci.database = strings.TrimPrefix(u.Path, "/")
	if strings.Contains(ci.database, "/") {
		return nil, bad("url: database name %q contains a slash", ci.database)
	}
	ci.sslmode = cfg.SSLMode
	for k, vs := range q {
		if k != "sslmode" {
			return nil, bad("url: parameter %q is not supported (only sslmode, and host and port for a Unix socket)", k)
		}
		if ci.sslmode != "" && ci.sslmode != vs[0] {
			return nil, bad("sslmode: %q conflicts with sslmode=%s in url", ci.sslmode, vs[0])
		}
		ci.sslmode = vs[0]
	}
	if !sslModes[ci.sslmode] && ci.sslmode != "" {
		return nil, bad("sslmode: %q is not one of disable, allow, prefer, require, verify-ca, verify-full", ci.sslmode)
	}
	if err := ci.setTLS(cfg.TLS); err != nil {
		return nil, bad("%v", err)
	}
	switch cfg.Databases {
	case "":
		if ci.database == "" {
			return nil, bad("url: names no database (postgres://USER@HOST:PORT/DB), and databases is not \"all\"")
		}
	case "all":
		ci.all = true
		if ci.database == "" {
			ci.database = "postgres"
		}
	default:
		return nil, bad("databases: %q is not supported (\"all\", or unset for the database in url)", cfg.Databases)
	}
	switch {
	case cfg.RestoreJobs == 0:
		ci.restoreJobs = defaultRestoreJobs
	case cfg.RestoreJobs < 1 || cfg.RestoreJobs > maxRestoreJobs:
		return nil, bad("restoreJobs: %d is not between 1 and %d", cfg.RestoreJobs, maxRestoreJobs)
	default:
		ci.restoreJobs = cfg.RestoreJobs
	}
	ci.stagingDir = cfg.StagingDir
	ci.allowSuperuser = cfg.AllowSuperuser
	ci.pitr = cfg.PITR
	ci.slotAlert, ci.slotMax = cfg.SlotAlertBytes, cfg.SlotMaxBytes
	if ci.slotAlert == 0 {
		ci.slotAlert = defaultSlotAlert
	}
	if ci.slotMax == 0 {
		ci.slotMax = defaultSlotMax
	}
	switch {
	case ci.slotAlert < 0 || ci.slotMax < 0:
		return nil, bad("slotAlertBytes and slotMaxBytes: must not be negative")
	case ci.slotAlert >= ci.slotMax:
		return nil, bad("slotAlertBytes (%d) must be below slotMaxBytes (%d): the alert comes before the slot is dropped", ci.slotAlert, ci.slotMax)
	}
	if ci.stagingDir != "" && !filepath.IsAbs(ci.stagingDir) {
		return nil, bad("stagingDir: %q is not an absolute path", ci.stagingDir)
	}
	return ci, nil
}

// setTLS settles the sslmode and the tls setting together: with tls the
// server is checked (verify-full by default), and the sslmodes that
// never check it are refused.
func (ci *conninfo) setTLS(t *engines.TLS) error {
	if t == nil {
		if ci.sslmode == "" {
			ci.sslmode = "prefer"
		}
		return nil
	}
	if err := t.Validate(); err != nil {
		return err
	}
	ci.tls = t
	switch {
	case ci.sslmode == "" && t.InsecureSkipVerify:
		ci.sslmode = "require"
	case ci.sslmode == "":
		ci.sslmode = "verify-full"
	case t.InsecureSkipVerify && ci.sslmode != "require":
		return fmt.Errorf("sslmode: %q with tls.insecureSkipVerify; use require (or remove sslmode)", ci.sslmode)
	case !t.InsecureSkipVerify && ci.sslmode != "verify-ca" && ci.sslmode != "verify-full":
		return fmt.Errorf("sslmode: %q does not check the server's certificate, which tls asks for; use verify-full (or remove sslmode)", ci.sslmode)
	}
	if t.ServerName != "" {
		if ci.sslmode != "verify-full" {
			return fmt.Errorf("tls.serverName: checked only with sslmode verify-full, not %q", ci.sslmode)
		}
		// libpq checks the certificate against host and connects to
		// hostaddr, which must be an IP address.
		if net.ParseIP(ci.host) == nil {
			return errors.New("tls.serverName: needs an IP address as the url's host (the PostgreSQL tools check the name they connect to); or put the certificate's name in url")
		}
		ci.hostaddr = ci.host
	}
	return nil
}

// verifies reports whether the connection checks the server's
// certificate.
func (ci *conninfo) verifies() bool { return ci.sslmode == "verify-ca" || ci.sslmode == "verify-full" }

// sslFiles are libpq's sslrootcert, sslcert and sslkey for the source:
// the tls setting's files, with the system's CAs when it names none and
// the server is checked (libpq before PostgreSQL 16 looks only in
// ~/.postgresql/root.crt, and a tool's HOME is private).
func (ci *conninfo) sslFiles() (rootcert, cert, key string) {
	if ci.tls != nil {
		rootcert, cert, key = ci.tls.CAFile, ci.tls.CertFile, ci.tls.KeyFile
	}
	if rootcert == "" && ci.verifies() {
		rootcert = engines.SystemCAFile()
	}
	return rootcert, cert, key
}

// connString is a libpq keyword/value connection string for database db,
// without a password.
func (ci *conninfo) connString(db string) string {
	kv := []string{
		"host=" + quoteConnValue(ci.host),
		"port=" + quoteConnValue(ci.port),
		"user=" + quoteConnValue(ci.user),
		"dbname=" + quoteConnValue(db),
		"sslmode=" + quoteConnValue(ci.sslmode),
		"application_name=capsule",
		"connect_timeout=30",
	}
	rootcert, cert, key := ci.sslFiles()
	for _, f := range [][2]string{{"sslrootcert", rootcert}, {"sslcert", cert}, {"sslkey", key}} {
		if f[1] != "" {
			kv = append(kv, f[0]+"="+quoteConnValue(f[1]))
		}
	}
	return strings.Join(kv, " ")
}

// dbArg is the value of a tool's -d option naming database db. It is a
// connection string so that a database name containing "=" is never read
// as one; the tools take the rest of the connection from the environment.
func dbArg(db string) string {
	return "dbname=" + quoteConnValue(db)
}

func quoteConnValue(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `'`, `\'`)
	return "'" + s + "'"
}

// connect opens a control connection to database db. The password goes
// into the connection's configuration, never into the string.
func connect(ctx context.Context, ci *conninfo, password, db string) (*pgx.Conn, error) {
	cc, err := connConfig(ci, password, db)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", db, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to database %s on %s:%s as %s: %w", db, ci.host, ci.port, ci.user, scrub(err, password))
	}
	return conn, nil
}

// connConfig is the configuration of a connection to database db: the
// source's string, the password set apart from it, and the TLS server
// name.
func connConfig(ci *conninfo, password, db string) (*pgx.ConnConfig, error) {
	cc, err := pgx.ParseConfig(ci.connString(db))
	if err != nil {
		return nil, err
	}
	if password != "" {
		cc.Password = password
	}
	if ci.tls != nil && ci.tls.ServerName != "" && cc.TLSConfig != nil {
		cc.TLSConfig.ServerName = ci.tls.ServerName
	}
	return cc, nil
}

// scrub replaces the password in an error's text, should a driver ever
// echo it.
func scrub(err error, password string) error {
	if err == nil || password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "********"))
}

// toolEnv is what pg_dump, pg_restore and pg_dumpall get besides the
// minimal environment of every child (childproc): the source's
// connection, its TLS files and its password in PGPASSWORD. None of the
// worker's own PG* variables reach them: the source alone decides which
// server, database and user they reach. A child's environment is
// readable only by its own user (and root), unlike its argv, and it dies
// with the child, unlike a password file.
func toolEnv(ci *conninfo, password string) ([]string, error) {
	if strings.ContainsRune(password, 0) {
		return nil, errors.New("password contains a NUL byte, which no PostgreSQL tool accepts")
	}
	env := []string{
		"PGHOST=" + ci.host,
		"PGPORT=" + ci.port,
		"PGUSER=" + ci.user,
		"PGSSLMODE=" + ci.sslmode,
		"PGAPPNAME=capsule",
		"PGCONNECT_TIMEOUT=30",
	}
	if ci.hostaddr != "" {
		env[0] = "PGHOST=" + ci.tls.ServerName
		env = append(env, "PGHOSTADDR="+ci.hostaddr)
	}
	rootcert, cert, key := ci.sslFiles()
	for _, f := range [][2]string{{"PGSSLROOTCERT", rootcert}, {"PGSSLCERT", cert}, {"PGSSLKEY", key}} {
		if f[1] != "" {
			env = append(env, f[0]+"="+f[1])
		}
	}
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	return env, nil
}
