package postgres

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/cnvrg/capsule/engines"
)

var _ engines.PreviousKeeper = (*Engine)(nil)

// prevName matches sideName(db, kindPrev, id, attempt).
var prevName = regexp.MustCompile(`^(.*)_capsule_prev_([a-z0-9][a-z0-9.-]*)_a([1-9][0-9]*)$`)

// ListPrevious implements engines.PreviousKeeper: the databases restores
// renamed aside (<db>_capsule_prev_<id>_a<n>), of the source's database,
// or of every database for databases: all.
func (e *Engine) ListPrevious(ctx context.Context, src engines.Source) ([]engines.KeptPrevious, error) {
	j, err := e.newJob(ctx, src, nil)
	if err != nil {
		return nil, err
	}
	conn, err := j.connect(ctx, j.ci.database)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return j.listPrevious(ctx, conn)
}

func (j *job) listPrevious(ctx context.Context, conn *pgx.Conn) ([]engines.KeptPrevious, error) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE strpos(datname, '_capsule_prev_') > 0 ORDER BY datname`)
	if err != nil {
		return nil, fmt.Errorf("list previous databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list previous databases: %w", err)
	}
	var out []engines.KeptPrevious
	for _, name := range names {
		m := prevName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		attempt, _ := strconv.Atoi(m[3])
		// The name must be exactly what a restore of this source's
		// database would have made: never another database's copy.
		if !j.ci.all && sideName(j.ci.database, kindPrev, m[2], attempt) != name {
			continue
		}
		k := engines.KeptPrevious{Name: name, Request: m[2], Attempt: attempt}
		k.KeptAt, _ = engines.IDTime(m[2])
		out = append(out, k)
	}
	return out, nil
}

// DropPrevious implements engines.PreviousKeeper: it ends the sessions
// on the kept database and drops it.
func (e *Engine) DropPrevious(ctx context.Context, src engines.Source, name string) error {
	j, err := e.newJob(ctx, src, nil)
	if err != nil {
		return err
	}
	conn, err := j.connect(ctx, "postgres")
	if err != nil {
		if conn, err = j.connect(ctx, j.ci.database); err != nil {
			return err
		}
	}
	defer conn.Close(context.Background())
	kept, err := j.listPrevious(ctx, conn)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(kept, func(k engines.KeptPrevious) bool { return k.Name == name }) {
		return fmt.Errorf("postgres: %s is not a previous database kept for source %s", name, src.Name)
	}
	r := &run{j: j, conn: conn}
	return r.dropDatabase(ctx, name)
}
