package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
)

const (
	artifactDump = "dump.sql"
	formatDump   = "mysqldump-sql/1"
)

// Engine is the mysql/mariadb engine. It holds no state.
type Engine struct {
	// unchecked is a test hook: a restore loads the dump without the
	// checker, confined by the server alone.
	unchecked bool
}

var (
	_ engines.Engine   = (*Engine)(nil)
	_ engines.Verifier = (*Engine)(nil)
)

// New returns the mysql engine.
func New() *Engine { return &Engine{} }

// Name implements engines.Engine.
func (*Engine) Name() string { return "mysql" }

// Validate implements engines.Engine.
func (*Engine) Validate(src engines.Source) error {
	_, err := decodeConfig(src)
	return err
}

func decodeConfig(src engines.Source) (*Config, error) {
	var c Config
	if err := src.Decode(&c); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("source %s (engine mysql): %w", src.Name, err)
	}
	return &c, nil
}

func logger(l logrus.FieldLogger, src engines.Source) logrus.FieldLogger {
	if l == nil {
		l = engines.DiscardLog()
	}
	return l.WithFields(logrus.Fields{"engine": "mysql", "source": src.Name})
}

// session is a resolved source: its settings, where it is, its password.
type session struct {
	cfg      *Config
	t        *target
	password string
	db       *sql.DB
	// dc is the connection's driver configuration: a restore's loading
	// account connects the same way, as another user.
	dc *driver.Config
}

func open(ctx context.Context, src engines.Source) (*session, error) {
	cfg, err := decodeConfig(src)
	if err != nil {
		return nil, err
	}
	t, err := cfg.target()
	if err != nil {
		return nil, err
	}
	pw, err := src.Secret(ctx)
	if err != nil {
		return nil, err
	}
	dc := driver.NewConfig()
	dc.User = t.user
	dc.Passwd = pw
	dc.Net = "tcp"
	dc.Addr = t.addr
	dc.Timeout = 10 * time.Second
	dc.Collation = "utf8mb4_general_ci"
	dc.InterpolateParams = true
	if cfg.TLS != nil {
		if dc.TLS, err = cfg.TLS.Config(t.host); err != nil {
			return nil, fmt.Errorf("source %s (engine mysql): %w", src.Name, err)
		}
	}
	conn, err := driver.NewConnector(dc)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(4)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s as %s: %w", t.addr, t.user, err)
	}
	return &session{cfg: cfg, t: t, password: pw, db: db, dc: dc.Clone()}, nil
}

// databases resolves the databases setting against the server.
func (s *session) databases(ctx context.Context) ([]string, error) {
	var want []string
	switch {
	case s.cfg.Databases.All:
		rows, err := s.db.QueryContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")
		if err != nil {
			return nil, fmt.Errorf("list databases: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				return nil, err
			}
			if !slices.Contains(systemSchemas, strings.ToLower(n)) && !strings.Contains(n, "_capsule_") {
				want = append(want, n)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if len(want) == 0 {
			return nil, errors.New("the server has no database to back up")
		}
		return want, nil
	case s.cfg.Databases.List != nil:
		want = s.cfg.Databases.List
	default:
		want = []string{s.t.db}
	}
	for _, n := range want {
		var x string
		err := s.db.QueryRowContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", n).Scan(&x)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("database %s does not exist", n)
		}
		if err != nil {
			return nil, fmt.Errorf("database %s: %w", n, err)
		}
	}
	return want, nil
}

// Backup implements engines.Engine: one mariadb-dump (or mysqldump) run
// over every selected database in one consistent transaction, streamed
// into dump.sql.
func (e *Engine) Backup(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	s, err := open(ctx, job.Source)
	if err != nil {
		return nil, err
	}
	defer s.db.Close()
	log := logger(job.Log, job.Source)
	dbs, err := s.databases(ctx)
	if err != nil {
		return nil, err
	}
	var version string
	if err := s.db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return nil, fmt.Errorf("server version: %w", err)
	}
	tool, err := findTool(s.cfg.DumpTool, "mariadb-dump", "mysqldump")
	if err != nil {
		return nil, err
	}
	toolVer := toolVersion(ctx, tool)
	objects := map[string]any{}
	for _, db := range dbs {
		inv, err := inventory(ctx, s.db, db)
		if err != nil {
			return nil, err
		}
		objects[db] = inv
	}

	run, err := s.newToolRun(ctx, tool)
	if err != nil {
		return nil, err
	}
	defer run.close()
	args := []string{
		"--single-transaction", "--quick",
		"--routines", "--triggers", "--events",
		"--hex-blob", "--default-character-set=utf8mb4",
		"--no-create-db", "--no-tablespaces", "--databases",
	}
	args = append(args, dbs...)
	cmd := run.command(ctx, args...)
	stderr := &tailBuffer{max: 8 << 10}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	w, err := job.Artifacts.Create(artifactDump)
	if err != nil {
		return nil, err
	}
	log.WithFields(logrus.Fields{"databases": dbs, "tool": toolVer, "server_version": version}).Info("mysql dump starts")
	job.Progress.Report("dump", 0, int64(len(dbs)))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", tool, err)
	}
	cw := &countingWriter{w: w}
	_, copyErr := io.CopyBuffer(cw, stdout, make([]byte, 256<<10))
	if copyErr != nil {
		cmd.Process.Kill() // it would block writing to a pipe nobody reads
	}
	waitErr := cmd.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if waitErr != nil {
		return nil, fmt.Errorf("%s failed: %v: %s", tool, waitErr, stderr.text(s.password))
	}
	if copyErr != nil {
		return nil, fmt.Errorf("stream the dump: %w", copyErr)
	}
	if !cw.sawEnd() {
		return nil, fmt.Errorf("%s ended without its completion line", tool)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", artifactDump, err)
	}
	job.Progress.Report("dump", int64(len(dbs)), int64(len(dbs)))
	log.WithFields(logrus.Fields{"databases": dbs, "bytes": cw.n}).Info("mysql dump done")
	return &engines.BackupInfo{
		Format:        formatDump,
		ServerVersion: version,
		ToolVersion:   toolVer,
		SourceInfo: map[string]string{
			"host":      s.t.addr,
			"user":      s.t.user,
			"databases": strings.Join(dbs, ","),
			"flavor":    flavor(version),
		},
		Details: map[string]any{"objects": objects, "dumpBytes": cw.n},
	}, nil
}

func flavor(version string) string {
	if strings.Contains(strings.ToLower(version), "mariadb") {
		return "mariadb"
	}
	return "mysql"
}

// completionLine ends every complete dump (comments are on by default).
const completionLine = "-- Dump completed"

// countingWriter counts bytes and keeps the tail, to see the dump's
// completion line.
type countingWriter struct {
	w    io.Writer
	n    int64
	tail []byte
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.tail = append(c.tail, p[:n]...)
	if len(c.tail) > 256 {
		c.tail = append(c.tail[:0], c.tail[len(c.tail)-256:]...)
	}
	return n, err
}

func (c *countingWriter) sawEnd() bool {
	return strings.Contains(string(c.tail), completionLine)
}
