package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cnvrg/capsule/engines"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sirupsen/logrus"
)

// Restore options (RestoreOptions.Extra).
const (
	// OptDatabase restores only the backed-up database of this name.
	OptDatabase = "database"
	// OptRoles is "create-missing" (default) or "skip": whether a
	// restore of a databases: all backup creates the roles the server
	// lacks.
	OptRoles = "roles"
	// OptNoOwner "true" restores every object as owned by the restoring
	// user (pg_restore --no-owner), as a restore by a non-superuser does
	// anyway.
	OptNoOwner = "noOwner"
)

// cleanupTimeout bounds the removal of side databases after a failed or
// canceled restore, and a swap once begun: both run on their own context.
const cleanupTimeout = 2 * time.Minute

// target is one database a restore or a verification stages.
type target struct {
	b      dbBackup
	live   string // the database it replaces or becomes
	side   string // where pg_restore writes
	prev   string // the name the replaced database keeps
	exists bool   // live existed before the restore
	staged bool   // side exists and is ours to drop
	kind   string // what side is: restore or verify
	tar    bool   // b is a tar archive (FormatTar): restored streaming
	// tablesFromArchive is set when b.Tables were counted in the archive
	// as it streamed (the backup recorded none); tablesUnknown says why
	// neither the backup nor the archive gave them.
	tablesFromArchive bool
	tablesUnknown     string
}

// chooseTargets picks the backed-up databases a request restores and the
// database each replaces: on a databases: all target its own name, on a
// one-database target that database.
func chooseTargets(d *details, ci *conninfo, extra map[string]string) ([]*target, error) {
	for k := range extra {
		if k != OptDatabase && k != OptRoles && k != OptNoOwner {
			return nil, fmt.Errorf("restore option %q is not known to the postgres engine (known: %s, %s, %s)", k, OptDatabase, OptRoles, OptNoOwner)
		}
	}
	if v := extra[OptRoles]; v != "" && v != "create-missing" && v != "skip" {
		return nil, fmt.Errorf("restore option %s: %q is not create-missing or skip", OptRoles, v)
	}
	if v := extra[OptNoOwner]; v != "" && v != "true" && v != "false" {
		return nil, fmt.Errorf("restore option %s: %q is not true or false", OptNoOwner, v)
	}
	var names []string
	find := func(name string) (dbBackup, bool) {
		for _, b := range d.Databases {
			if b.Name == name {
				return b, true
			}
		}
		return dbBackup{}, false
	}
	for _, b := range d.Databases {
		names = append(names, b.Name)
	}
	var sel []dbBackup
	want := extra[OptDatabase]
	switch {
	case want != "":
		b, ok := find(want)
		if !ok {
			return nil, fmt.Errorf("restore option %s: the backup holds no database %q (it holds %s)", OptDatabase, want, strings.Join(names, ", "))
		}
		sel = []dbBackup{b}
	case !ci.all && len(d.Databases) > 1:
		b, ok := find(ci.database)
		if !ok {
			return nil, fmt.Errorf("the backup holds databases %s and the target is database %s: choose one with restore option %s", strings.Join(names, ", "), ci.database, OptDatabase)
		}
		sel = []dbBackup{b}
	default:
		sel = d.Databases
	}
	var ts []*target
	for _, b := range sel {
		t := &target{b: b, live: b.Name, tar: d.tar}
		if !ci.all {
			t.live = ci.database
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// sideName is the name of a database beside db for attempt attempt of
// request id: kind is restore (the side database), prev (the replaced
// one) or verify (a scratch database). It fits PostgreSQL's 63-byte
// names: an id longer than 24 bytes is shortened with a hash, and db is
// cut, never the suffix. Request ids have no "_", so the attempt
// (_a<n>) cannot be mistaken for part of the id.
func sideName(db, kind, id string, attempt int) string {
	suffix := sideSuffix(kind, id, attempt)
	limit := 63 - len(suffix)
	for len(db) > limit {
		_, size := utf8.DecodeLastRuneInString(db)
		db = db[:len(db)-size]
	}
	return db + suffix
}

// sideSuffix is the part of a sideName after the database's name.
func sideSuffix(kind, id string, attempt int) string {
	if len(id) > 24 {
		sum := sha256.Sum256([]byte(id))
		id = id[:11] + "-" + hex.EncodeToString(sum[:6])
	}
	return "_capsule_" + kind + "_" + id + "_a" + strconv.Itoa(attempt)
}

// run is one restore's or verification's work on a server: a control
// connection to a database it does not replace, and what it staged.
type run struct {
	e       *Engine
	j       *job
	rj      *engines.RestoreJob
	conn    *pgx.Conn
	srv     server
	targets []*target
	roles   []string // roles this run created
	// ended counts, per live database, the sessions the swap ended.
	ended map[string]int64
}

func (e *Engine) openRun(ctx context.Context, j *job, rj *engines.RestoreJob, targets []*target) (*run, error) {
	busy := map[string]bool{}
	for _, t := range targets {
		busy[t.live] = true
	}
	var lastErr error
	for _, db := range []string{j.ci.database, "postgres", "template1"} {
		if busy[db] {
			continue
		}
		conn, err := j.connect(ctx, db)
		if err != nil {
			lastErr = err
			continue
		}
		srv, err := serverFacts(ctx, conn)
		if err != nil {
			_ = conn.Close(context.Background())
			return nil, err
		}
		j.log.WithField("database", db).Debug("control connection")
		return &run{e: e, j: j, rj: rj, conn: conn, srv: srv, targets: targets}, nil
	}
	return nil, fmt.Errorf("no database to run the restore from (tried %s, postgres, template1): %w", j.ci.database, lastErr)
}

func (r *run) close() { _ = r.conn.Close(context.Background()) }

func (r *run) exists(ctx context.Context, db string) (bool, error) {
	var n int
	if err := r.conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, db).Scan(&n); err != nil {
		return false, fmt.Errorf("look up database %s: %w", db, err)
	}
	return n > 0, nil
}

// dropDatabase drops db, ending its sessions first.
func (r *run) dropDatabase(ctx context.Context, db string) error {
	if r.srv.versionNum >= 130000 {
		if _, err := r.conn.Exec(ctx, `DROP DATABASE IF EXISTS `+ident(db)+` WITH (FORCE)`); err != nil {
			return fmt.Errorf("drop database %s: %w", db, err)
		}
		return nil
	}
	var err error
	for range 5 {
		if err = r.terminate(ctx, db); err != nil {
			continue
		}
		if _, err = r.conn.Exec(ctx, `DROP DATABASE IF EXISTS `+ident(db)); err == nil {
			return nil
		}
	}
	return fmt.Errorf("drop database %s: %w", db, err)
}

func (r *run) terminate(ctx context.Context, db string) error {
	_, err := r.endSessions(ctx, db)
	return err
}

// endSessions ends every other session on database db and says how many
// it ended.
func (r *run) endSessions(ctx context.Context, db string) (int64, error) {
	var n int64
	err := r.conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, db).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("end sessions of database %s: %w", db, err)
	}
	return n, nil
}

// cleanup drops what the run staged and the roles it created. It runs
// on its own context: the job's may be canceled.
func (r *run) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for _, t := range r.targets {
		if !t.staged {
			continue
		}
		if err := r.dropDatabase(ctx, t.side); err != nil {
			r.j.log.WithFields(logrus.Fields{"database": t.side, "error": err.Error()}).Error("could not remove side database")
			continue
		}
		t.staged = false
		r.j.log.WithField("database", t.side).Info("removed side database")
	}
	for i := len(r.roles) - 1; i >= 0; i-- {
		if _, err := r.conn.Exec(ctx, `DROP ROLE IF EXISTS `+ident(r.roles[i])); err != nil {
			r.j.log.WithFields(logrus.Fields{"role": r.roles[i], "error": err.Error()}).Error("could not remove a role this restore created")
			continue
		}
		r.j.log.WithField("role", r.roles[i]).Info("removed a role this restore created")
	}
	r.roles = nil
}

// checkRole refuses to restore or verify as a role whose privileges
// reach beyond the databases it restores, unless the source allows it
// (allowSuperuser): pg_restore runs the archive's SQL as this role, and
// an archive is data that anyone who can write the bucket can forge.
// What reaches beyond: superuser; CREATEROLE before PostgreSQL 16 (it
// may grant itself pg_execute_server_program); the privileges of
// pg_execute_server_program, pg_read_server_files or
// pg_write_server_files.
func (r *run) checkRole(what string) error {
	s := r.srv
	var why []string
	switch {
	case s.superuser:
		why = append(why, "is a superuser")
	case s.createrole && s.versionNum < 160000:
		why = append(why, "has CREATEROLE, with which PostgreSQL before 16 lets it grant itself pg_execute_server_program")
	}
	if len(s.hostRoles) > 0 && !s.superuser {
		why = append(why, "has the privileges of "+strings.Join(s.hostRoles, ", "))
	}
	if len(why) == 0 || r.j.ci.allowSuperuser {
		return nil
	}
	return fmt.Errorf("source %s: will not %s as role %s, which %s: the backup's SQL runs as this role, and a forged backup could run programs on the database host (COPY … PROGRAM), read its files or change every database; "+
		"connect as a role without these privileges (CREATEDB and ownership of the databases it restores suffice), or set allowSuperuser: true on the source to accept the risk",
		r.j.source, what, s.role, strings.Join(why, " and "))
}

// stage restores t's archive into t.side, a new database like the
// backed-up one, reading the artifact to its end. With restoreJobs above
// 1 and room in the staging directory, the artifact is first copied to
// local disk (and checked) and pg_restore -j loads it in parallel;
// otherwise it streams from the bucket into one pg_restore.
func (r *run) stage(ctx context.Context, t *target, arts engines.ArtifactReader, args []string, analyze bool) error {
	log := r.j.log.WithFields(logrus.Fields{"database": t.b.Name, "side": t.side, "artifact": t.b.Artifact})
	start := time.Now()
	var staged *stagedArchive
	if jobs := r.j.ci.restoreJobs; jobs > 1 && t.tar {
		log.Info("restoring a tar archive with one pg_restore job: pg_restore reads tar archives only in order")
	} else if jobs > 1 && !r.e.staged {
		err := r.restoreStreaming(ctx, t, arts, args, log)
		switch {
		case err == nil:
			return r.finishStage(ctx, t, analyze, start, log, "streaming")
		case !errors.Is(err, errNotStreamable):
			return err
		}
		log.WithField("reason", err.Error()).Warn("staging the archive on local disk for a parallel restore")
	}
	if jobs := r.j.ci.restoreJobs; jobs > 1 && !t.tar {
		var err error
		staged, err = r.stageLocally(ctx, t, arts, log)
		switch {
		case errors.Is(err, errNoRoom):
			log.WithField("reason", err.Error()).Warn("restoring from the bucket with one pg_restore job: no room to stage the archive for a parallel restore")
		case err != nil:
			return err
		default:
			defer func() {
				if err := staged.remove(); err != nil {
					log.WithFields(logrus.Fields{"dir": staged.dir, "error": err.Error()}).Error("could not remove the staged archive")
				}
			}()
			args = append(args, "--jobs="+strconv.Itoa(jobs))
		}
	}
	if err := r.createSide(ctx, t, log); err != nil {
		return err
	}
	format := "--format=custom"
	if t.tar {
		format = "--format=tar"
	}
	args = append([]string{format, "--no-password", "--exit-on-error", "-d", dbArg(t.side)}, args...)
	var err error
	if staged != nil {
		err = r.j.tools.run(ctx, "pg_restore", append(args, staged.path))
	} else {
		rc, oerr := arts.Open(ctx, t.b.Artifact)
		if oerr != nil {
			return fmt.Errorf("open artifact %s: %w", t.b.Artifact, oerr)
		}
		var in io.Reader = rc
		var scan *archiveTee
		if t.tar {
			// The tables and their row counts, read as the archive
			// streams past, for a backup that does not record them.
			scan = newScanTee(scanTarArchive)
			in = io.TeeReader(rc, scan)
		}
		err = r.j.tools.restore(ctx, "pg_restore", args, in)
		_ = rc.Close()
		if scan != nil {
			info, serr := scan.finish()
			if err == nil {
				learnTables(t, info, serr, log)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("restore database %s from artifact %s: %w", t.live, t.b.Artifact, err)
	}
	how := "one pg_restore"
	if staged != nil {
		how = "staged"
	}
	return r.finishStage(ctx, t, analyze, start, log, how)
}

// finishStage ANALYZEs a loaded side database when analyze is set.
func (r *run) finishStage(ctx context.Context, t *target, analyze bool, start time.Time, log logrus.FieldLogger, how string) error {
	if analyze {
		if err := r.analyze(ctx, t.side, r.j.ci.restoreJobs); err != nil {
			return fmt.Errorf("analyze side database %s: %w", t.side, err)
		}
	}
	log.WithFields(logrus.Fields{"seconds": time.Since(start).Seconds(), "how": how}).Info("side database complete")
	return nil
}

// analyze gathers planner statistics in database db, the tables spread
// over up to jobs connections. Like a plain ANALYZE it covers tables,
// partitioned tables and materialized views; it leaves out the system
// catalogs and extensions' tables, which autovacuum looks after.
func (r *run) analyze(ctx context.Context, db string, jobs int) error {
	conn, err := r.j.connect(ctx, db)
	if err != nil {
		return err
	}
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname)`+userRelations+`
		ORDER BY c.relpages DESC`, []string{"r", "p", "m"})
	var tables []string
	if err == nil {
		tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		_ = conn.Close(context.Background())
		return fmt.Errorf("list tables: %w", err)
	}
	next := make(chan string)
	errs := make(chan error, jobs)
	worker := func(conn *pgx.Conn) {
		defer conn.Close(context.Background())
		var first error
		for table := range next {
			if first != nil {
				continue // drain
			}
			if _, err := conn.Exec(ctx, `ANALYZE `+table); err != nil {
				first = fmt.Errorf("%s: %w", table, err)
			}
		}
		errs <- first
	}
	started := 1
	go worker(conn)
	for started < min(jobs, len(tables)) {
		c, err := r.j.connect(ctx, db)
		if err != nil {
			break // the others carry on
		}
		started++
		go worker(c)
	}
	for _, table := range tables {
		next <- table
	}
	close(next)
	var first error
	for range started {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// stageLocally copies t's artifact into a new staging directory, reading
// it to its end. It fails with errNoRoom, having read nothing, when the
// directory's filesystem cannot hold the archive.
func (r *run) stageLocally(ctx context.Context, t *target, arts engines.ArtifactReader, log logrus.FieldLogger) (*stagedArchive, error) {
	parent := r.j.ci.stagingParent()
	sweepStaging(parent, log)
	size := t.b.DumpBytes
	if size <= 0 {
		return nil, fmt.Errorf("%w: the backup does not record the archive's size", errNoRoom)
	}
	if err := roomFor(parent, size); err != nil {
		return nil, err
	}
	staged, err := newStaging(parent)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	scan := newArchiveTee()
	defer scan.finish() // ends its goroutine however the copy went
	offsets := 0
	patch := func(f *os.File) error {
		archive, err := scan.finish()
		if err != nil {
			// pg_restore finds the blocks itself, only more slowly.
			log.WithField("error", err.Error()).Warn("could not read the archive to record its data offsets")
			return nil
		}
		offsets, err = setDataOffsets(f, archive)
		if err != nil {
			return fmt.Errorf("record data offsets in %s: %w", f.Name(), err)
		}
		return nil
	}
	rc, err := arts.Open(ctx, t.b.Artifact)
	if err == nil {
		_, err = staged.copyIn(rc, "archive.dump", scan, patch)
		_ = rc.Close()
		if err != nil {
			err = fmt.Errorf("stage artifact %s: %w", t.b.Artifact, err)
		}
	} else {
		err = fmt.Errorf("open artifact %s: %w", t.b.Artifact, err)
	}
	if err != nil {
		_ = staged.remove()
		return nil, err
	}
	log.WithFields(logrus.Fields{"dir": staged.dir, "bytes": size, "offsets": offsets, "seconds": time.Since(start).Seconds()}).Info("staged the archive")
	return staged, nil
}

// createSide creates t.side like the backed-up database, dropping one an
// earlier attempt of the same request left.
func (r *run) createSide(ctx context.Context, t *target, log logrus.FieldLogger) error {
	left, err := r.exists(ctx, t.side)
	if err != nil {
		return err
	}
	if left {
		// Named after this request: left by an earlier attempt of it.
		log.Warn("dropping a side database left by an earlier attempt")
		if err := r.dropDatabase(ctx, t.side); err != nil {
			return err
		}
	}
	enc, collate, ctype := t.b.Encoding, t.b.Collate, t.b.Ctype
	if enc == "" && t.exists {
		// A backup that does not record them (a tar archive): the side
		// database replaces live, so it takes live's.
		if err := r.conn.QueryRow(ctx, `SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = $1`, t.live).Scan(&enc, &collate, &ctype); err != nil {
			return fmt.Errorf("look up the encoding of database %s: %w", t.live, err)
		}
	}
	create := `CREATE DATABASE ` + ident(t.side) + ` WITH TEMPLATE template0`
	if enc != "" {
		create += fmt.Sprintf(` ENCODING %s LC_COLLATE %s LC_CTYPE %s`, literal(enc), literal(collate), literal(ctype))
	}
	if r.srv.superuser && t.b.Owner != "" {
		var n int
		if err := r.conn.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, t.b.Owner).Scan(&n); err != nil {
			return fmt.Errorf("look up role %s: %w", t.b.Owner, err)
		}
		if n > 0 {
			create += " OWNER " + ident(t.b.Owner)
		}
	}
	if _, err := r.conn.Exec(ctx, create); err != nil {
		return fmt.Errorf("create side database %s: %w", t.side, err)
	}
	t.staged = true
	// The comment names the request and attempt in full (the name may
	// hold a hash of the id): a later restore on this server asks the
	// bucket about them before it drops an abandoned side database.
	if _, err := r.conn.Exec(ctx, `COMMENT ON DATABASE `+ident(t.side)+` IS `+literal(stagingComment(t.kind, r.rj.ID, r.rj.AttemptNumber()))); err != nil {
		return fmt.Errorf("mark side database %s as capsule's: %w", t.side, err)
	}
	return nil
}

// swap puts side in live's place: it closes live to new sessions, ends
// the existing ones, and renames live to prev and side to live in one
// transaction (both or neither). It returns how long live was
// unavailable. It runs on its own context: once begun, a swap finishes
// or is undone whatever happens to the job.
func (r *run) swap(live, side, prev string, exists bool) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	start := time.Now()
	if !exists {
		if _, err := r.conn.Exec(ctx, `ALTER DATABASE `+ident(side)+` RENAME TO `+ident(live)); err != nil {
			return 0, fmt.Errorf("rename %s to %s: %w", side, live, err)
		}
		return time.Since(start), nil
	}
	var allowed bool
	if err := r.conn.QueryRow(ctx, `SELECT datallowconn FROM pg_database WHERE datname = $1`, live).Scan(&allowed); err != nil {
		return 0, fmt.Errorf("look up database %s: %w", live, err)
	}
	start = time.Now()
	if allowed {
		// Clients that reconnect at once would otherwise race the rename.
		if _, err := r.conn.Exec(ctx, `ALTER DATABASE `+ident(live)+` WITH ALLOW_CONNECTIONS false`); err != nil {
			return 0, fmt.Errorf("close database %s to new sessions: %w", live, err)
		}
	}
	var err error
	for attempt := 1; ; attempt++ {
		var n int64
		if n, err = r.endSessions(ctx, live); err == nil {
			if r.ended == nil {
				r.ended = map[string]int64{}
			}
			r.ended[live] += n
			err = pgx.BeginFunc(ctx, r.conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `ALTER DATABASE `+ident(live)+` RENAME TO `+ident(prev)); err != nil {
					return fmt.Errorf("rename %s to %s: %w", live, prev, err)
				}
				if _, err := tx.Exec(ctx, `ALTER DATABASE `+ident(side)+` RENAME TO `+ident(live)); err != nil {
					return fmt.Errorf("rename %s to %s: %w", side, live, err)
				}
				return nil
			})
		}
		var pe *pgconn.PgError
		if err == nil || attempt == 5 || !errors.As(err, &pe) || pe.Code != "55006" { // object_in_use
			break
		}
		r.j.log.WithFields(logrus.Fields{"database": live, "attempt": attempt}).Warn("sessions remain on the database: retrying the swap")
	}
	downtime := time.Since(start)
	if err != nil {
		if allowed {
			if _, rerr := r.conn.Exec(ctx, `ALTER DATABASE `+ident(live)+` WITH ALLOW_CONNECTIONS true`); rerr != nil {
				r.j.log.WithFields(logrus.Fields{"database": live, "error": rerr.Error()}).Error("could not reopen the database to new sessions")
			}
		}
		return downtime, fmt.Errorf("swap database %s: %w", live, err)
	}
	if allowed {
		if _, err := r.conn.Exec(ctx, `ALTER DATABASE `+ident(prev)+` WITH ALLOW_CONNECTIONS true`); err != nil {
			r.j.log.WithFields(logrus.Fields{"database": prev, "error": err.Error()}).Warn("could not reopen the previous database to sessions")
		}
	}
	return downtime, nil
}

// Restore implements engines.Engine: every database is restored into a
// side database; only when all of them are complete (every artifact read
// to its end and checked) are they swapped in by renames.
func (e *Engine) Restore(ctx context.Context, rj *engines.RestoreJob) (*engines.RestoreInfo, error) {
	if rj.Backup.Format == FormatBase {
		return nil, errors.New("a base backup is restored to a point in time: capsule restore --source SOURCE --time T (or --lsn, --latest)")
	}
	j, err := e.newJob(ctx, rj.Target, rj.Log)
	if err != nil {
		return nil, err
	}
	d, err := readDetails(rj.Backup)
	if err != nil {
		return nil, err
	}
	dumpVersion := rj.Backup.ToolVersion
	if d.tar {
		if dumpVersion, err = learnTar(ctx, rj, d); err != nil {
			return nil, err
		}
	}
	targets, err := chooseTargets(d, j.ci, rj.Options.Extra)
	if err != nil {
		return nil, err
	}
	dumpNum := pickForArchive(j.tools, dumpVersion)
	restoreVersion, err := j.tools.version(ctx, "pg_restore")
	if err != nil {
		return nil, err
	}
	if err := checkArchiveVersion(restoreVersion, dumpVersion); err != nil {
		return nil, err
	}
	r, err := e.openRun(ctx, j, rj, targets)
	if err != nil {
		return nil, err
	}
	defer r.close()
	if err := r.checkRole("restore"); err != nil {
		return nil, err
	}
	// The target's major when it is newer than the archive's: a
	// pg_restore of the server's own version.
	if r.srv.versionNum > dumpNum && j.tools.pick(r.srv.versionNum) {
		if restoreVersion, err = j.tools.version(ctx, "pg_restore"); err != nil {
			return nil, err
		}
	}
	if err := checkToolVersion("pg_restore", restoreVersion, r.srv.versionNum); err != nil {
		return nil, err
	}
	attempt := rj.AttemptNumber()
	for _, t := range targets {
		t.kind = kindRestore
		t.side = sideName(t.live, kindRestore, rj.ID, attempt)
		t.prev = sideName(t.live, kindPrev, rj.ID, attempt)
		if t.exists, err = r.exists(ctx, t.live); err != nil {
			return nil, err
		}
		taken, err := r.exists(ctx, t.prev)
		if err != nil {
			return nil, err
		}
		if taken {
			return nil, fmt.Errorf("database %s exists: attempt %d of restore %s swapped database %s already", t.prev, attempt, rj.ID, t.live)
		}
	}
	if err := r.sweep(ctx); err != nil {
		return nil, err
	}
	info, err := r.restore(ctx, rj, d)
	if err != nil {
		r.cleanup()
		return nil, err
	}
	return info, nil
}

func (r *run) restore(ctx context.Context, rj *engines.RestoreJob, d *details) (*engines.RestoreInfo, error) {
	extra := rj.Options.Extra
	if d.Globals != "" && extra[OptRoles] != "skip" {
		if !r.srv.superuser && !r.srv.createrole {
			r.j.log.Warn("roles are not restored: creating them needs a superuser or CREATEROLE")
		} else {
			rc, err := rj.Artifacts.Open(ctx, d.Globals)
			if err != nil {
				return nil, fmt.Errorf("open artifact %s: %w", d.Globals, err)
			}
			script, err := readGlobals(rc)
			_ = rc.Close()
			if err != nil {
				return nil, fmt.Errorf("read artifact %s: %w", d.Globals, err)
			}
			r.roles, err = restoreRoles(ctx, r.conn, script, rolesPolicy{allowSuperuser: r.j.ci.allowSuperuser, restoring: r.srv.role, include: r.e.include}, r.j.log)
			if err != nil {
				return nil, err
			}
		}
	}
	var args []string
	if !r.srv.superuser || extra[OptNoOwner] == "true" {
		args = append(args, "--no-owner")
	}
	for i, t := range r.targets {
		rj.Progress.Report("restore", int64(i), int64(len(r.targets)))
		if err := r.stage(ctx, t, rj.Artifacts, args, true); err != nil {
			return nil, err
		}
	}
	rj.Progress.Report("restore", int64(len(r.targets)), int64(len(r.targets)))
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	if r.e.beforeSwap != nil {
		r.e.beforeSwap()
	}
	// Only the holder of the lease may swap: confirm it now, the last
	// thing before the first rename.
	if err := rj.CheckFence(ctx); err != nil {
		r.j.log.WithField("error", err.Error()).Warn("not swapping: this attempt no longer holds the request")
		return nil, err
	}

	// Every side database is complete: swap them in.
	info := &engines.RestoreInfo{}
	type swapped struct {
		Database   string  `json:"database"`
		Previous   string  `json:"previous,omitempty"`
		DowntimeMS float64 `json:"downtimeMs"`
		// SessionsEnded counts the sessions on the database that the
		// swap ended (their clients reconnect to the restored data).
		SessionsEnded int64 `json:"sessionsEnded"`
	}
	var done []swapped
	var prevs []string
	for i, t := range r.targets {
		dt, err := r.swap(t.live, t.side, t.prev, t.exists)
		info.Downtime += dt
		if err != nil {
			r.unswap(r.targets[:i])
			return nil, err
		}
		t.staged = false
		s := swapped{Database: t.live, DowntimeMS: float64(dt.Microseconds()) / 1000, SessionsEnded: r.ended[t.live]}
		if t.exists {
			s.Previous = t.prev
		}
		done = append(done, s)
		r.j.log.WithFields(logrus.Fields{"database": t.live, "previous": s.Previous, "downtime": dt.String()}).Info("swapped in the restored database")
	}
	r.roles = nil // in use now: no longer the run's to remove
	for i, t := range r.targets {
		if !t.exists {
			continue
		}
		if rj.Options.DropPrevious {
			ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
			err := r.dropDatabase(ctx, t.prev)
			cancel()
			if err == nil {
				done[i].Previous = ""
				r.j.log.WithField("database", t.prev).Info("dropped the previous database")
				continue
			}
			r.j.log.WithFields(logrus.Fields{"database": t.prev, "error": err.Error()}).Warn("could not drop the previous database: it is kept")
		}
		prevs = append(prevs, t.prev)
	}
	sort.Strings(prevs)
	info.Previous = strings.Join(prevs, ",")
	if earlier := r.earlierPrevious(context.WithoutCancel(ctx)); len(earlier) > 0 {
		// An earlier attempt swapped and died before its result: what it
		// renamed aside is what the target held before this restore.
		info.Previous = strings.Join(append(prevs, earlier...), ",")
		r.j.log.WithField("previous", earlier).Warn("an earlier attempt of this restore swapped already; the databases it replaced are kept")
	}
	var ended int64
	for _, s := range done {
		ended += s.SessionsEnded
	}
	m, err := toMap(struct {
		Databases     []swapped `json:"databases"`
		SessionsEnded int64     `json:"sessionsEnded"`
	}{done, ended})
	if err != nil {
		return nil, err
	}
	info.Details = m
	return info, nil
}

// unswap undoes the swaps of targets after a later one failed, so that a
// restore of several databases changes all of them or none; what it
// cannot undo it logs.
func (r *run) unswap(targets []*target) {
	for i := len(targets) - 1; i >= 0; i-- {
		t := targets[i]
		var err error
		if t.exists {
			_, err = r.swap(t.live, t.prev, t.side, true)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
			if err = r.terminate(ctx, t.live); err == nil {
				_, err = r.conn.Exec(ctx, `ALTER DATABASE `+ident(t.live)+` RENAME TO `+ident(t.side))
			}
			cancel()
		}
		if err != nil {
			r.j.log.WithFields(logrus.Fields{"database": t.live, "error": err.Error()}).Error("could not undo the swap of a restored database")
			continue
		}
		t.staged = true
	}
}

// Verify implements engines.Verifier: every backed-up database (or the
// one named by restore option database) is restored into a scratch
// database on the target's server, checked against the tables and exact
// row counts recorded at backup time, and dropped. A backup that cannot
// be restored (a corrupt artifact, a failing pg_restore) returns the
// report so far, with the failing check, together with the error.
func (e *Engine) Verify(ctx context.Context, rj *engines.RestoreJob) (*engines.VerifyReport, error) {
	if rj.Backup.Format == FormatBase {
		// Its recovery needs the source's WAL from the bucket, which no
		// engine reads: the worker verifies it (package pitr, wired as
		// the executor's verifier of this format).
		return nil, errors.New("a base backup is verified by replaying it with the source's WAL in a temporary server: this worker has no verifier for base backups (executor.Config.FormatVerifiers)")
	}
	j, err := e.newJob(ctx, rj.Target, rj.Log)
	if err != nil {
		return nil, err
	}
	d, err := readDetails(rj.Backup)
	if err != nil {
		return nil, err
	}
	dumpVersion := rj.Backup.ToolVersion
	if d.tar {
		if dumpVersion, err = learnTar(ctx, rj, d); err != nil {
			return nil, err
		}
	}
	targets, err := chooseTargets(d, &conninfo{all: true}, rj.Options.Extra)
	if err != nil {
		return nil, err
	}
	rep := &engines.VerifyReport{OK: true}
	add := func(name string, err error, detail string) {
		c := engines.Check{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail = err.Error()
			rep.OK = false
		}
		rep.Checks = append(rep.Checks, c)
	}
	pickForArchive(j.tools, dumpVersion)
	restoreVersion, err := j.tools.version(ctx, "pg_restore")
	if err == nil {
		err = checkArchiveVersion(restoreVersion, dumpVersion)
	}
	if err != nil {
		add("pg_restore", err, "")
		return rep, err
	}
	if d.Globals != "" {
		err := rj.Artifacts.Verify(ctx, d.Globals)
		add("artifact "+d.Globals, err, "intact")
		if err != nil {
			return rep, err
		}
	}
	for _, t := range targets {
		t.live = ""
		t.kind = kindVerify
		t.side = sideName(t.b.Name, kindVerify, rj.ID, rj.AttemptNumber())
	}
	r, err := e.openRun(ctx, j, rj, targets)
	if err != nil {
		return nil, err
	}
	defer r.close()
	if err := r.checkRole("verify"); err != nil {
		add("role "+r.srv.role, err, "")
		return rep, err
	}
	if err := r.sweep(ctx); err != nil {
		return nil, err
	}
	defer r.cleanup()
	for i, t := range targets {
		rj.Progress.Report("verify", int64(i), int64(len(targets)))
		if err := r.stage(ctx, t, rj.Artifacts, []string{"--no-owner", "--no-privileges"}, false); err != nil {
			add("restore "+t.b.Name, err, "")
			return rep, err
		}
		add("restore "+t.b.Name, nil, "restored from artifact "+t.b.Artifact+" into "+t.side)
		present, counts, err := r.check(ctx, t)
		if err != nil {
			add("tables "+t.b.Name, err, "")
			return rep, err
		}
		if t.tablesUnknown != "" {
			add("tables "+t.b.Name, nil, "not checked: "+t.tablesUnknown)
		} else {
			add("tables "+t.b.Name, present, fmt.Sprintf("all %d tables present%s", len(t.b.Tables), describeTables(t)))
			add("rows "+t.b.Name, counts, fmt.Sprintf("row counts of all %d tables equal the backup's%s", len(t.b.Tables), describeTables(t)))
		}
		dctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		err = r.dropDatabase(dctx, t.side)
		cancel()
		if err == nil {
			t.staged = false
		}
	}
	return rep, nil
}

// check compares a staged database with what the backup recorded. It
// returns the tables check's and the row counts' failures (nil when they
// pass), and an error when it could not check at all.
func (r *run) check(ctx context.Context, t *target) (present, counts error, err error) {
	conn, err := r.j.connect(ctx, t.side)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.Background())
	have, err := listTables(ctx, conn)
	if err != nil {
		return nil, nil, err
	}
	found := map[string]bool{}
	for _, h := range have {
		found[h.Schema+"."+h.Name] = true
	}
	var missing, wrong []string
	for _, want := range t.b.Tables {
		if !found[want.Schema+"."+want.Name] {
			missing = append(missing, want.Schema+"."+want.Name)
			continue
		}
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM ONLY `+want.qualified()).Scan(&n); err != nil {
			return nil, nil, fmt.Errorf("count rows of %s.%s: %w", want.Schema, want.Name, err)
		}
		if n != want.Rows {
			wrong = append(wrong, fmt.Sprintf("%s.%s has %d rows, the backup recorded %d", want.Schema, want.Name, n, want.Rows))
		}
	}
	if len(missing) > 0 {
		present = fmt.Errorf("%d of %d tables missing: %s", len(missing), len(t.b.Tables), clipList(missing))
	}
	if len(wrong) > 0 {
		counts = fmt.Errorf("%d tables differ: %s", len(wrong), clipList(wrong))
	}
	return present, counts, nil
}

func clipList(s []string) string {
	if len(s) > 5 {
		return strings.Join(s[:5], "; ") + fmt.Sprintf("; and %d more", len(s)-5)
	}
	return strings.Join(s, "; ")
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// literal quotes a string constant (standard_conforming_strings, on
// since PostgreSQL 9.1).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
