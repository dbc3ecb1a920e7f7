package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"
)

// Format is the BackupInfo.Format of this engine's backups: pg_dump's
// custom format, uncompressed, one archive per database, plus globals.sql
// (pg_dumpall --globals-only) for databases: all.
const Format = "pg_dump-custom.v1"

// globalsArtifact is the artifact holding the server's roles.
const globalsArtifact = "globals.sql"

// Engine is the postgres engine. The zero value is not usable: call New.
type Engine struct {
	// Test hooks; nil in production.
	// include limits which databases and roles of a server
	// databases: all covers (tests share the server with others).
	include func(kind, name string) bool
	// started sees every client tool's pid as soon as it runs.
	started func(tool string, pid int)
	// beforeSwap is called after every side database is complete, just
	// before the first swap.
	beforeSwap func()
	// binGlobs replaces BinGlobs when set.
	binGlobs []string
	// staged makes a parallel restore stage the archive on local disk,
	// as it does for an archive it cannot stream.
	staged bool
}

// New returns the postgres engine.
func New() *Engine { return &Engine{} }

func (e *Engine) globs() []string {
	if e.binGlobs != nil {
		return e.binGlobs
	}
	return BinGlobs
}

var (
	_ engines.Engine   = (*Engine)(nil)
	_ engines.Verifier = (*Engine)(nil)
)

// Name implements engines.Engine.
func (e *Engine) Name() string { return "postgres" }

// Validate implements engines.Engine.
func (e *Engine) Validate(src engines.Source) error {
	_, err := parseSource(src)
	return err
}

// details is what BackupInfo.Details holds.
type details struct {
	// Mode is "database" (one database) or "all" (every database and
	// the roles).
	Mode string `json:"mode"`
	// Globals names the artifact with the roles (mode all).
	Globals     string     `json:"globals,omitempty"`
	Superuser   bool       `json:"superuser"`
	Databases   []dbBackup `json:"databases"`
	BackupStart time.Time  `json:"backupStart"`
	// tar is set for a FormatTar backup: one tar archive of one
	// database, restored streaming.
	tar bool
}

// dbBackup describes one database's archive.
type dbBackup struct {
	Name     string `json:"name"`
	Artifact string `json:"artifact"`
	Encoding string `json:"encoding"`
	Collate  string `json:"collate"`
	Ctype    string `json:"ctype"`
	Owner    string `json:"owner"`
	// SizeBytes is pg_database_size when the dump began; DumpBytes the
	// archive's (uncompressed) size.
	SizeBytes int64       `json:"sizeBytes"`
	DumpBytes int64       `json:"dumpBytes"`
	Tables    []tableInfo `json:"tables"`
	// RowsFrom says where the exact row counts came from: "archive"
	// (counted in the archive as it streamed), "count" (count(*) in the
	// dump's snapshot) or "archive+count" (some of each).
	RowsFrom string `json:"rowsFrom,omitempty"`
}

// tableInfo is one table's row counts: exact inside the dump's snapshot,
// and the planner's estimate.
type tableInfo struct {
	Schema   string `json:"schema"`
	Name     string `json:"name"`
	Rows     int64  `json:"rows"`
	Estimate int64  `json:"estimate"`
	// kind is pg_class.relkind: r or p (partitioned).
	kind string
}

func (t tableInfo) qualified() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// job is what Backup, Restore and Verify share: the parsed source, its
// password, the tools' environment.
type job struct {
	source   string // the source's name
	ci       *conninfo
	password string
	tools    *tools
	log      logrus.FieldLogger
}

func (e *Engine) newJob(ctx context.Context, src engines.Source, log logrus.FieldLogger) (*job, error) {
	ci, err := parseSource(src)
	if err != nil {
		return nil, err
	}
	pw, err := src.Secret(ctx)
	if err != nil {
		return nil, err
	}
	env, err := toolEnv(ci, pw)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", src.Name, err)
	}
	if log == nil {
		log = engines.DiscardLog()
	}
	log = log.WithFields(logrus.Fields{"engine": "postgres", "host": ci.host, "port": ci.port})
	return &job{source: src.Name, ci: ci, password: pw, tools: &tools{env: env, log: log, started: e.started, globs: e.globs()}, log: log}, nil
}

func (j *job) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return connect(ctx, j.ci, j.password, db)
}

// server is what Backup and Restore learn about a server first.
type server struct {
	versionNum int
	version    string
	role       string // current_user
	superuser  bool
	createrole bool
	// hostRoles are the predefined roles whose privileges the role has
	// that reach the server's host: running programs, reading and
	// writing its files.
	hostRoles []string
}

func serverFacts(ctx context.Context, conn *pgx.Conn) (server, error) {
	var s server
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('server_version'),
		current_user::text, r.rolsuper, r.rolcreaterole,
		ARRAY(SELECT p FROM unnest(ARRAY['pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files']) p
		      WHERE CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p) THEN pg_has_role(current_user, p, 'USAGE') ELSE false END)
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&s.versionNum, &s.version, &s.role, &s.superuser, &s.createrole, &s.hostRoles)
	if err != nil {
		return s, fmt.Errorf("read server version: %w", err)
	}
	return s, nil
}

// Backup implements engines.Engine.
func (e *Engine) Backup(ctx context.Context, bj *engines.BackupJob) (*engines.BackupInfo, error) {
	j, err := e.newJob(ctx, bj.Source, bj.Log)
	if err != nil {
		return nil, err
	}
	if j.ci.pitr {
		return e.baseBackup(ctx, j, bj)
	}
	conn, err := j.connect(ctx, j.ci.database)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	srv, err := serverFacts(ctx, conn)
	if err != nil {
		return nil, err
	}
	j.tools.pick(srv.versionNum)
	dumpVersion, err := j.tools.version(ctx, "pg_dump")
	if err != nil {
		return nil, err
	}
	if err := checkToolVersion("pg_dump", dumpVersion, srv.versionNum); err != nil {
		return nil, err
	}
	d := details{Mode: "database", Superuser: srv.superuser, BackupStart: time.Now().UTC()}
	dbs := []string{j.ci.database}
	if j.ci.all {
		d.Mode = "all"
		if dbs, err = e.listDatabases(ctx, conn); err != nil {
			return nil, err
		}
		if err := e.dumpGlobals(ctx, j, bj, srv); err != nil {
			return nil, err
		}
		d.Globals = globalsArtifact
	}
	var size int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(pg_database_size(datname)), 0)::bigint FROM pg_database WHERE datname = ANY($1)`, dbs).Scan(&size); err == nil {
		// On-disk size, indexes included: more than the dump will be,
		// so the progress calls it an estimate.
		bj.Estimate(size)
	} else {
		j.log.WithError(err).Debug("no size estimate for the progress")
	}
	for i, db := range dbs {
		bj.Progress.Report("dump", int64(i), int64(len(dbs)))
		b, err := e.dumpDatabase(ctx, j, bj, db)
		if err != nil {
			return nil, err
		}
		d.Databases = append(d.Databases, *b)
	}
	bj.Progress.Report("dump", int64(len(dbs)), int64(len(dbs)))
	m, err := toMap(d)
	if err != nil {
		return nil, err
	}
	return &engines.BackupInfo{
		Format:        Format,
		ServerVersion: srv.version,
		ToolVersion:   dumpVersion,
		SourceInfo: map[string]string{
			"host":     j.ci.host,
			"port":     j.ci.port,
			"user":     j.ci.user,
			"database": strings.Join(dbs, ","),
			"mode":     d.Mode,
		},
		Details: m,
	}, nil
}

// capsuleDB matches capsule's own side, previous and scratch databases,
// which databases: all leaves out.
var capsuleDB = regexp.MustCompile(`_capsule_(restore|prev|verify)_`)

func (e *Engine) listDatabases(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname`)
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	var dbs []string
	for _, n := range names {
		if capsuleDB.MatchString(n) || (e.include != nil && !e.include("database", n)) {
			continue
		}
		dbs = append(dbs, n)
	}
	if len(dbs) == 0 {
		return nil, fmt.Errorf("list databases: the server has no database to back up")
	}
	return dbs, nil
}

// dumpGlobals writes the roles (and tablespaces) as globals.sql. Role
// password hashes need a superuser to read; others get the roles without
// them.
func (e *Engine) dumpGlobals(ctx context.Context, j *job, bj *engines.BackupJob, srv server) error {
	v, err := j.tools.version(ctx, "pg_dumpall")
	if err != nil {
		return err
	}
	if err := checkToolVersion("pg_dumpall", v, srv.versionNum); err != nil {
		return err
	}
	args := []string{"--globals-only", "--no-password", "-l", dbArg(j.ci.database)}
	if !srv.superuser {
		args = append(args, "--no-role-passwords")
		j.log.Warn("roles are backed up without their passwords: reading them needs a superuser")
	}
	w, err := bj.Artifacts.Create(globalsArtifact)
	if err != nil {
		return fmt.Errorf("create artifact %s: %w", globalsArtifact, err)
	}
	n, err := j.tools.dump(ctx, "pg_dumpall", args, w, nil)
	if err != nil {
		return fmt.Errorf("back up roles: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("store artifact %s: %w", globalsArtifact, err)
	}
	j.log.WithFields(logrus.Fields{"artifact": globalsArtifact, "bytes": n}).Info("backed up roles")
	return nil
}

// dumpDatabase streams one database through pg_dump into an artifact.
// A REPEATABLE READ transaction exports its snapshot to pg_dump, so the
// archive is that one snapshot. Every table's exact row count is read
// from the archive itself as it streams past (its COPY data has one line
// per row): no second scan of the tables. Tables the archive reader
// cannot account for are counted with count(*) in the same transaction,
// still open, so every count is exactly what the archive holds.
func (e *Engine) dumpDatabase(ctx context.Context, j *job, bj *engines.BackupJob, db string) (*dbBackup, error) {
	log := j.log.WithField("database", db)
	conn, err := j.connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("database %s: begin snapshot: %w", db, err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	var snapshot string
	if err := tx.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&snapshot); err != nil {
		return nil, fmt.Errorf("database %s: export snapshot: %w", db, err)
	}
	b := &dbBackup{Name: db, Artifact: artifactName(db)}
	err = tx.QueryRow(ctx, `SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba), pg_database_size(oid)
		FROM pg_database WHERE datname = current_database()`).Scan(&b.Encoding, &b.Collate, &b.Ctype, &b.Owner, &b.SizeBytes)
	if err != nil {
		return nil, fmt.Errorf("database %s: read its settings: %w", db, err)
	}
	if b.Tables, err = listTables(ctx, tx); err != nil {
		return nil, fmt.Errorf("database %s: %w", db, err)
	}

	w, err := bj.Artifacts.Create(b.Artifact)
	if err != nil {
		return nil, fmt.Errorf("create artifact %s: %w", b.Artifact, err)
	}
	scan := newArchiveTee()
	args := []string{"--format=custom", "--compress=0", "--no-password", "--snapshot=" + snapshot, "-d", dbArg(db)}
	n, err := j.tools.dump(ctx, "pg_dump", args, w, scan)
	archive, scanErr := scan.finish()
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", db, err)
	}
	b.DumpBytes = n
	uncounted := fillRowCounts(b.Tables, archive, scanErr)
	if scanErr != nil {
		log.WithField("error", scanErr.Error()).Warn("could not read row counts from the archive: counting every table in the dump's snapshot")
	} else if len(uncounted) > 0 {
		log.WithField("tables", len(uncounted)).Warn("the archive has no data for some tables: counting them in the dump's snapshot")
	}
	if err := countRows(ctx, tx, b.Tables, uncounted); err != nil {
		return nil, fmt.Errorf("database %s: count rows: %w", db, err)
	}
	b.RowsFrom = rowsFrom(scanErr, len(uncounted), len(b.Tables))
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("store artifact %s: %w", b.Artifact, err)
	}
	var rows int64
	for _, t := range b.Tables {
		rows += t.Rows
	}
	log.WithFields(logrus.Fields{"artifact": b.Artifact, "bytes": n, "tables": len(b.Tables), "rows": rows, "counted": len(uncounted)}).Info("backed up database")
	return b, nil
}

func rowsFrom(scanErr error, uncounted, tables int) string {
	switch {
	case scanErr != nil || uncounted == tables && tables > 0:
		return "count"
	case uncounted > 0:
		return "archive+count"
	}
	return "archive"
}

// fillRowCounts sets each table's row count from the archive, and
// returns the indexes of the tables it could not: all of them when the
// archive could not be read. A partitioned table holds no rows of its own
// (its partitions do): 0, as count(*) FROM ONLY says.
func fillRowCounts(tables []tableInfo, archive *archiveInfo, scanErr error) []int {
	var uncounted []int
	for i := range tables {
		t := &tables[i]
		switch {
		case t.kind == "p":
			t.Rows = 0
		case scanErr != nil:
			uncounted = append(uncounted, i)
		default:
			n, ok := archive.tableRows(t.Schema, t.Name)
			if !ok {
				uncounted = append(uncounted, i)
				continue
			}
			t.Rows = n
		}
	}
	return uncounted
}

// queryer is a connection or a transaction.
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// userRelations is the FROM and WHERE of a query over the relations
// pg_dump dumps, of the kinds given as $1 (a text[] of relkinds): not
// temporary, outside the system schemas, owned by no extension.
const userRelations = `
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind::text = ANY($1::text[]) AND c.relpersistence <> 't'
		  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
		  AND NOT EXISTS (SELECT 1 FROM pg_depend d
		                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`

// listTables lists the tables pg_dump dumps: ordinary and partitioned
// tables outside the system schemas that no extension owns.
func listTables(ctx context.Context, q queryer) ([]tableInfo, error) {
	rows, err := q.Query(ctx, `SELECT n.nspname, c.relname, c.reltuples::bigint, c.relkind::text`+userRelations+`
		ORDER BY 1, 2`, []string{"r", "p"})
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableInfo, error) {
		var t tableInfo
		err := r.Scan(&t.Schema, &t.Name, &t.Estimate, &t.kind)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return tables, nil
}

// countRows sets the exact row count of the tables at the indexes which
// (ONLY the table itself: a partitioned table counts 0, its partitions
// count their rows).
func countRows(ctx context.Context, q queryer, tables []tableInfo, which []int) error {
	for _, i := range which {
		if err := q.QueryRow(ctx, `SELECT count(*) FROM ONLY `+tables[i].qualified()).Scan(&tables[i].Rows); err != nil {
			return fmt.Errorf("%s.%s: %w", tables[i].Schema, tables[i].Name, err)
		}
	}
	return nil
}

var unsafeName = regexp.MustCompile(`[^a-z0-9._-]+`)

// artifactName is the artifact of database db: db-<name>.dump, where a
// name that is not already [a-z0-9._-] is made so and gets a hash
// suffix to stay unique.
func artifactName(db string) string {
	safe := unsafeName.ReplaceAllString(strings.ToLower(db), "-")
	if len(safe) > 100 {
		safe = safe[:100]
	}
	if safe != db {
		sum := sha256.Sum256([]byte(db))
		safe += "-" + hex.EncodeToString(sum[:4])
	}
	return "db-" + safe + ".dump"
}

func toMap(v any) (map[string]any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	err = json.Unmarshal(raw, &m)
	return m, err
}

// readDetails decodes a backup's Details.
func readDetails(info engines.BackupInfo) (*details, error) {
	if info.Format != Format && info.Format != FormatTar {
		return nil, fmt.Errorf("backup format %q is not %s or %s: this engine cannot restore it", info.Format, Format, FormatTar)
	}
	raw, err := json.Marshal(info.Details)
	if err != nil {
		return nil, fmt.Errorf("backup details: %w", err)
	}
	var d details
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("backup details: %w", err)
	}
	if len(d.Databases) == 0 {
		return nil, fmt.Errorf("backup details name no database")
	}
	if info.Format == FormatTar {
		if len(d.Databases) != 1 || d.Globals != "" {
			return nil, fmt.Errorf("backup details: a %s backup holds one database and no roles", FormatTar)
		}
		if d.Databases[0].Artifact == "" {
			return nil, fmt.Errorf("backup details name no artifact")
		}
		d.tar = true
	}
	return &d, nil
}
