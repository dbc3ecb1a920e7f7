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

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
)

// plan maps each database of the backup to its place on the target.
type plan struct {
	from   string // name in the backup
	to     string // database on the target
	side   string // staging schema
	marker string // what side is for: restore or verify
	prev   string // where the replaced tables go ("" if to does not exist)
	exists bool
	want   *objects
	// Set by the load: the definers the dump names (by "KIND name",
	// the name lower-cased) other than the restoring account, the
	// loading account as SHOW CREATE prints it, and the restoring
	// account (user@host).
	definers  map[string]string
	loadedBy  string
	restoring string
}

// Restore implements engines.Engine. It loads the dump into side schemas
// <db>_capsule_restore_<id> (the target untouched), checks them against
// what the backup recorded, and only then swaps them in: one RENAME TABLE
// statement moves every table of the targets to <db>_capsule_prev_<id> and
// every staged table into the targets; triggers, views, routines and
// events are then recreated in the targets.
func (e *Engine) Restore(ctx context.Context, job *engines.RestoreJob) (*engines.RestoreInfo, error) {
	s, plans, log, err := e.prepare(ctx, job, "restore")
	if err != nil {
		return nil, err
	}
	defer s.db.Close()
	if err := e.stage(ctx, s, job, plans, log); err != nil {
		return nil, err
	}
	downtime, err := swap(ctx, s, job, plans, log)
	if err != nil {
		return nil, err
	}
	var prev []string
	if !job.Options.DropPrevious {
		for _, p := range plans {
			if p.exists {
				prev = append(prev, p.prev)
			}
		}
	}
	if earlier := earlierPrevious(ctx, s, job, plans); len(earlier) > 0 {
		// An earlier attempt swapped and died before its result: what it
		// moved aside is what the targets held before this restore.
		prev = append(prev, earlier...)
		log.WithField("previous", earlier).Warn("an earlier attempt of this restore swapped already; the tables it replaced are kept")
	}
	dbs := make([]string, len(plans))
	for i, p := range plans {
		dbs[i] = p.to
	}
	log.WithFields(logrus.Fields{"databases": dbs, "downtime": downtime, "previous": prev}).Info("mysql restore done")
	return &engines.RestoreInfo{Downtime: downtime, Previous: strings.Join(prev, ","), Details: map[string]any{"databases": dbs}}, nil
}

// Verify implements engines.Verifier: it stages the backup into side
// schemas next to the target's, checks them, and drops them.
func (e *Engine) Verify(ctx context.Context, job *engines.RestoreJob) (*engines.VerifyReport, error) {
	s, plans, log, err := e.prepare(ctx, job, "verify")
	if err != nil {
		return nil, err
	}
	defer s.db.Close()
	rep := &engines.VerifyReport{}
	err = e.stage(ctx, s, job, plans, log)
	if err != nil {
		var ce *engines.ChecksumError
		if errors.As(err, &ce) || ctx.Err() != nil {
			return nil, err
		}
		rep.Checks = append(rep.Checks, engines.Check{Name: "load", OK: false, Detail: err.Error()})
		return rep, nil
	}
	defer dropSchemas(s.db, plans, func(p *plan) string { return p.side }, log)
	rep.Checks = append(rep.Checks, engines.Check{Name: "load", OK: true, Detail: "the dump loaded into side schemas, its checksum verified"})
	rep.OK = true
	for _, p := range plans {
		got, err := inventory(ctx, s.db, p.side)
		if err != nil {
			return nil, err
		}
		var rows int64
		for _, t := range got.Tables {
			var n int64
			if err := s.db.QueryRowContext(ctx, fmt.Sprintf("SELECT COUNT(*) FROM %s.%s", quoteName(p.side), quoteName(t))).Scan(&n); err != nil {
				return nil, err
			}
			rows += n
		}
		rep.Checks = append(rep.Checks, engines.Check{Name: "objects " + p.from, OK: true,
			Detail: fmt.Sprintf("%d tables (%d rows), %d views, %d triggers, %d routines, %d events", len(got.Tables), rows, len(got.Views), len(got.Triggers), len(got.Procedures)+len(got.Functions), len(got.Events))})
	}
	return rep, nil
}

// prepare opens the target and plans where each backed-up database goes.
func (e *Engine) prepare(ctx context.Context, job *engines.RestoreJob, marker string) (*session, []*plan, logrus.FieldLogger, error) {
	if job.Backup.Format != formatDump {
		return nil, nil, nil, fmt.Errorf("mysql cannot restore backup format %q", job.Backup.Format)
	}
	if !slices.Contains(job.Artifacts.Names(), artifactDump) {
		return nil, nil, nil, fmt.Errorf("backup has no artifact %s", artifactDump)
	}
	recorded, err := recordedObjects(job.Backup.Details)
	if err != nil {
		return nil, nil, nil, err
	}
	from := strings.Split(job.Backup.SourceInfo["databases"], ",")
	if len(from) == 0 || from[0] == "" {
		return nil, nil, nil, errors.New("backup index: sourceInfo.databases is empty")
	}
	s, err := open(ctx, job.Target)
	if err != nil {
		return nil, nil, nil, err
	}
	log := logger(job.Log, job.Target).WithField("restore_id", job.ID)
	// Where each database goes: a target that names one database takes a
	// backup of one database whatever its name was; otherwise names stay,
	// and the target must select each.
	var to []string
	switch {
	case len(from) == 1 && len(s.cfg.Databases.List) == 1:
		to = []string{s.cfg.Databases.List[0]}
	case len(from) == 1 && s.cfg.Databases.List == nil && !s.cfg.Databases.All:
		to = []string{s.t.db}
	default:
		for _, f := range from {
			if !s.cfg.Databases.All && !slices.Contains(s.cfg.Databases.List, f) && s.t.db != f {
				s.db.Close()
				return nil, nil, nil, fmt.Errorf("the backup holds database %s, which the target's databases setting does not select", f)
			}
		}
		to = from
	}
	var plans []*plan
	for i, f := range from {
		want := recorded[f]
		if want == nil {
			s.db.Close()
			return nil, nil, nil, fmt.Errorf("backup index records no objects for database %s", f)
		}
		p := &plan{from: f, to: to[i], marker: marker, side: sideName(to[i], marker, job.ID, job.AttemptNumber()), prev: sideName(to[i], "prev", job.ID, job.AttemptNumber()), want: want}
		var x string
		err := s.db.QueryRowContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", p.to).Scan(&x)
		switch {
		case err == nil:
			p.exists = true
		case !errors.Is(err, sql.ErrNoRows):
			s.db.Close()
			return nil, nil, nil, err
		}
		plans = append(plans, p)
	}
	return s, plans, log, nil
}

// stage loads the dump into the side schemas and checks them. On any
// error it drops them: the target is never touched.
func (e *Engine) stage(ctx context.Context, s *session, job *engines.RestoreJob, plans []*plan, log logrus.FieldLogger) (err error) {
	defer func() {
		if err != nil {
			dropSchemas(s.db, plans, func(p *plan) string { return p.side }, log)
		}
	}()
	for _, p := range plans {
		// The side schemas of this request's earlier attempts are
		// dropped, never reused: a paused predecessor that wakes finds
		// its schemas gone and fails. This attempt's own can only be
		// left by a crash of it.
		for a := 1; a <= job.AttemptNumber(); a++ {
			side := sideName(p.to, p.marker, job.ID, a)
			if _, err := s.db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteName(side)); err != nil {
				return fmt.Errorf("drop stale %s: %w", side, err)
			}
		}
		q := "CREATE DATABASE " + quoteName(p.side) + " CHARACTER SET " + p.want.Charset + " COLLATE " + p.want.Collation
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("create %s: %w", p.side, err)
		}
	}
	rc, err := job.Artifacts.Open(ctx, artifactDump)
	if err != nil {
		return err
	}
	defer rc.Close()
	log.WithField("schemas", sides(plans)).Info("mysql restore loads the dump into side schemas")
	job.Progress.Report("load", 0, 0)
	if err := e.load(ctx, s, plans, rc, log); err != nil {
		var ce *engines.ChecksumError
		if errors.As(err, &ce) {
			return ce
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A corrupt artifact often breaks the SQL before its end: read on
		// to name it as such.
		if _, derr := io.Copy(io.Discard, rc); errors.As(derr, &ce) {
			return ce
		}
		return fmt.Errorf("artifact %s: %w", artifactDump, err)
	}
	for _, p := range plans {
		got, err := inventory(ctx, s.db, p.side)
		if err != nil {
			return err
		}
		if diff := p.want.compare(got); diff != "" {
			return fmt.Errorf("the staged copy of %s does not match the backup: %s", p.from, diff)
		}
	}
	log.Info("mysql dump loaded and checked")
	return nil
}

func sides(plans []*plan) []string {
	var s []string
	for _, p := range plans {
		s = append(s, p.side)
	}
	return s
}

// dropSchemas drops the schemas name picks, even when ctx was canceled.
func dropSchemas(db *sql.DB, plans []*plan, name func(*plan) string, log logrus.FieldLogger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, p := range plans {
		if n := name(p); n != "" {
			if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteName(n)); err != nil {
				log.WithFields(logrus.Fields{"schema": n, "error": err.Error()}).Error("mysql restore could not drop a schema it made")
			}
		}
	}
}

// swap moves the staged tables in with one RENAME TABLE and recreates
// the other objects. It returns the downtime: from the first change to
// the targets to the last.
func swap(ctx context.Context, s *session, job *engines.RestoreJob, plans []*plan, log logrus.FieldLogger) (time.Duration, error) {
	dropPrevious := job.Options.DropPrevious
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	type state struct {
		oldObjs, newObjs *objects
		oldDefs, newDefs []definition
	}
	st := make([]state, len(plans))
	for i, p := range plans {
		if st[i].newObjs, err = inventory(ctx, conn, p.side); err != nil {
			return 0, err
		}
		if st[i].newDefs, err = definitions(ctx, conn, p.side, st[i].newObjs); err != nil {
			return 0, err
		}
		if p.exists {
			if st[i].oldObjs, err = inventory(ctx, conn, p.to); err != nil {
				return 0, err
			}
			if st[i].oldDefs, err = definitions(ctx, conn, p.to, st[i].oldObjs); err != nil {
				return 0, err
			}
		}
	}
	cleanup := func() { dropSchemas(s.db, plans, func(p *plan) string { return p.side }, log) }
	for i, p := range plans {
		for j := range st[i].newDefs {
			if st[i].newDefs[j].sql, err = p.withDefiner(st[i].newDefs[j]); err != nil {
				cleanup()
				return 0, err
			}
		}
	}
	exec := func(q string) error {
		_, err := conn.ExecContext(ctx, q)
		return err
	}

	// Only the holder of the lease may swap: confirm it now, the last
	// thing before the first change to the targets.
	if err := job.CheckFence(ctx); err != nil {
		log.WithField("error", err.Error()).Warn("mysql restore does not swap: this attempt no longer holds the request")
		cleanup()
		return 0, err
	}

	// Everything below changes the targets. Before the RENAME, a failure
	// puts back what was changed.
	start := time.Now()
	var renames []string
	for i, p := range plans {
		if !p.exists {
			q := "CREATE DATABASE " + quoteName(p.to) + " CHARACTER SET " + p.want.Charset + " COLLATE " + p.want.Collation
			if err := exec(q); err != nil {
				cleanup()
				return 0, fmt.Errorf("create %s: %w", p.to, err)
			}
		} else {
			q := "CREATE DATABASE " + quoteName(p.prev) + " CHARACTER SET " + st[i].oldObjs.Charset + " COLLATE " + st[i].oldObjs.Collation
			if err := exec(q); err != nil {
				cleanup()
				return 0, fmt.Errorf("create %s: %w", p.prev, err)
			}
			for _, t := range st[i].oldObjs.Tables {
				renames = append(renames, quoteName(p.to)+"."+quoteName(t)+" TO "+quoteName(p.prev)+"."+quoteName(t))
			}
		}
		for _, t := range st[i].newObjs.Tables {
			renames = append(renames, quoteName(p.side)+"."+quoteName(t)+" TO "+quoteName(p.to)+"."+quoteName(t))
		}
	}
	// Tables with triggers cannot move to another schema: drop the
	// triggers (their definitions are kept) and recreate them after.
	undo := func() {
		for i, p := range plans {
			recreate(context.WithoutCancel(ctx), conn, p.to, kind(st[i].oldDefs, "TRIGGER"), log)
			recreate(context.WithoutCancel(ctx), conn, p.side, kind(st[i].newDefs, "TRIGGER"), log)
		}
		cleanup()
		dropSchemas(s.db, plans, func(p *plan) string {
			if p.exists {
				return p.prev
			}
			return ""
		}, log)
	}
	for i, p := range plans {
		for _, n := range st[i].newObjs.Triggers {
			if err := exec("DROP TRIGGER " + quoteName(p.side) + "." + quoteName(n)); err != nil {
				undo()
				return 0, fmt.Errorf("drop staged trigger %s: %w", n, err)
			}
		}
		if p.exists {
			for _, n := range st[i].oldObjs.Triggers {
				if err := exec("DROP TRIGGER " + quoteName(p.to) + "." + quoteName(n)); err != nil {
					undo()
					return 0, fmt.Errorf("drop trigger %s.%s: %w", p.to, n, err)
				}
			}
		}
	}
	if len(renames) > 0 {
		if err := exec("RENAME TABLE " + strings.Join(renames, ", ")); err != nil {
			undo()
			return 0, fmt.Errorf("swap tables: %w", err)
		}
	}
	log.WithField("tables", len(renames)).Info("mysql tables swapped")

	// The tables are in place. What remains recreates objects; a failure
	// now is reported with where everything is.
	var errs []error
	for i, p := range plans {
		errs = append(errs, recreate(ctx, conn, p.to, kind(st[i].newDefs, "TRIGGER"), log)...)
		if p.exists {
			// The replaced tables keep their triggers in prev.
			errs = append(errs, recreate(ctx, conn, p.prev, kind(st[i].oldDefs, "TRIGGER"), log)...)
			for _, d := range st[i].oldDefs {
				if d.kind == "TRIGGER" {
					continue
				}
				if err := exec("DROP " + d.kind + " IF EXISTS " + quoteName(p.to) + "." + quoteName(d.name)); err != nil {
					errs = append(errs, fmt.Errorf("drop %s %s.%s: %w", strings.ToLower(d.kind), p.to, d.name, err))
				}
			}
		}
		var views []definition
		for _, d := range st[i].newDefs {
			if d.kind == "VIEW" {
				// A view's definition names its schema: point it at the
				// target.
				d.sql = strings.ReplaceAll(d.sql, quoteName(p.side)+".", quoteName(p.to)+".")
				views = append(views, d)
			}
		}
		errs = append(errs, recreateViews(ctx, conn, p.to, views, log)...)
		for _, k := range []string{"PROCEDURE", "FUNCTION", "EVENT"} {
			errs = append(errs, recreate(ctx, conn, p.to, kind(st[i].newDefs, k), log)...)
		}
	}
	downtime := time.Since(start)
	cleanup()
	if err := errors.Join(errs...); err != nil {
		return downtime, fmt.Errorf("the tables were swapped in, but some objects could not be recreated (the replaced tables are in %s): %w", prevList(plans), err)
	}
	if dropPrevious {
		dropSchemas(s.db, plans, func(p *plan) string {
			if p.exists {
				return p.prev
			}
			return ""
		}, log)
	}
	return downtime, nil
}

// withDefiner gives a definition read from the side schema, where the
// loading account made it, the definer it gets in the target: the one
// the dump named (which the load checked against the definers setting),
// or the restoring account.
func (p *plan) withDefiner(d definition) (string, error) {
	i := strings.Index(d.sql, "DEFINER=")
	if i < 0 {
		return d.sql, nil
	}
	rest := d.sql[i+len("DEFINER="):]
	if p.loadedBy == "" || !strings.HasPrefix(rest, p.loadedBy) {
		return "", fmt.Errorf("%s %s.%s was not made by the account that loaded the dump", strings.ToLower(d.kind), p.side, d.name)
	}
	want := p.restoring
	if a, ok := p.definers[d.kind+" "+strings.ToLower(d.name)]; ok {
		want = a
	}
	return d.sql[:i] + "DEFINER=" + quoteAccount(want) + rest[len(p.loadedBy):], nil
}

func prevList(plans []*plan) string {
	var s []string
	for _, p := range plans {
		if p.exists {
			s = append(s, p.prev)
		}
	}
	return strings.Join(s, ", ")
}

func kind(defs []definition, k string) []definition {
	var out []definition
	for _, d := range defs {
		if d.kind == k {
			out = append(out, d)
		}
	}
	return out
}

// recreate runs CREATE statements in schema with the session settings
// each was made under; it returns the errors.
func recreate(ctx context.Context, conn *sql.Conn, schema string, defs []definition, log logrus.FieldLogger) []error {
	var errs []error
	for _, d := range defs {
		if err := createIn(ctx, conn, schema, d); err != nil {
			errs = append(errs, err)
			log.WithFields(logrus.Fields{"schema": schema, "object": d.name, "kind": d.kind, "error": err.Error()}).Error("mysql restore could not recreate an object")
		}
	}
	return errs
}

// recreateViews creates views in dependency order: those whose
// dependencies do not exist yet are retried after the others.
func recreateViews(ctx context.Context, conn *sql.Conn, schema string, views []definition, log logrus.FieldLogger) []error {
	for len(views) > 0 {
		var left []definition
		var lastErrs []error
		for _, v := range views {
			if err := createIn(ctx, conn, schema, v); err != nil {
				left = append(left, v)
				lastErrs = append(lastErrs, err)
			}
		}
		if len(left) == len(views) {
			for _, err := range lastErrs {
				log.WithFields(logrus.Fields{"schema": schema, "error": err.Error()}).Error("mysql restore could not recreate a view")
			}
			return lastErrs
		}
		views = left
	}
	return nil
}

func createIn(ctx context.Context, conn *sql.Conn, schema string, d definition) error {
	stmts := []string{"USE " + quoteName(schema), "SET NAMES utf8mb4"}
	if d.collation != "" {
		stmts = append(stmts, "SET collation_connection = "+quoteString(d.collation))
	}
	if d.kind != "VIEW" {
		stmts = append(stmts, "SET SESSION sql_mode = "+quoteString(d.sqlMode))
		defer conn.ExecContext(context.WithoutCancel(ctx), "SET SESSION sql_mode = DEFAULT, time_zone = DEFAULT")
	}
	if d.timeZone != "" {
		stmts = append(stmts, "SET time_zone = "+quoteString(d.timeZone))
	}
	for _, q := range stmts {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s %s.%s: %s: %w", strings.ToLower(d.kind), schema, d.name, q, err)
		}
	}
	if _, err := conn.ExecContext(ctx, d.sql); err != nil {
		return fmt.Errorf("create %s %s.%s: %w", strings.ToLower(d.kind), schema, d.name, err)
	}
	return nil
}

// quoteString quotes a setting's value (sql_mode, a collation, a time
// zone) as an SQL string.
func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", "''").Replace(s) + "'"
}

// earlierPrevious lists the schemas this request's earlier attempts
// moved the replaced tables to: an attempt that swapped and died before
// its result leaves the targets' former tables there.
func earlierPrevious(ctx context.Context, s *session, job *engines.RestoreJob, plans []*plan) []string {
	var out []string
	for _, p := range plans {
		for a := 1; a < job.AttemptNumber(); a++ {
			prev := sideName(p.to, "prev", job.ID, a)
			var x string
			if s.db.QueryRowContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", prev).Scan(&x) == nil {
				out = append(out, prev)
			}
		}
	}
	return out
}
