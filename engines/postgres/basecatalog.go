package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// BaseDatabase is one database a base backup recorded when it began,
// with its tables: what a verification of the backup checks in the
// recovered cluster. Tables are recorded by name only: a physical copy
// is consistent at its stop LSN, not at any moment at which rows could
// have been counted.
type BaseDatabase struct {
	Name   string      `json:"name"`
	Tables []BaseTable `json:"tables"`
	// TablesUnknown, when set, says why the tables were not recorded
	// (the backup's role could not connect to the database).
	TablesUnknown string `json:"tablesUnknown,omitempty"`
}

// BaseTable is a user table (ordinary or partitioned; not temporary, not
// an extension's).
type BaseTable struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
}

// Qualified is the table's quoted, schema-qualified name.
func (t BaseTable) Qualified() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// ListDatabases lists the databases of the server conn is connected to
// that take connections (templates left out).
func ListDatabases(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	return names, nil
}

// ListTables lists the user tables of the database conn is connected
// to, the same a logical backup records.
func ListTables(ctx context.Context, conn *pgx.Conn) ([]BaseTable, error) {
	ts, err := listTables(ctx, conn)
	if err != nil {
		return nil, err
	}
	out := make([]BaseTable, len(ts))
	for i, t := range ts {
		out[i] = BaseTable{Schema: t.Schema, Name: t.Name}
	}
	return out, nil
}

// baseCatalog records the server's databases and their tables for a
// base backup. A database the role cannot enter is recorded with the
// reason instead of its tables; when not even the list of databases can
// be read, none is recorded (and verifications say so).
func (j *job) baseCatalog(ctx context.Context) ([]BaseDatabase, error) {
	conn, err := j.connect(ctx, j.ci.database)
	if err != nil {
		return nil, err
	}
	names, err := ListDatabases(ctx, conn)
	conn.Close(context.Background())
	if err != nil {
		return nil, err
	}
	out := make([]BaseDatabase, 0, len(names))
	for _, name := range names {
		d := BaseDatabase{Name: name, Tables: []BaseTable{}}
		conn, err := j.connect(ctx, name)
		if err == nil {
			d.Tables, err = ListTables(ctx, conn)
			conn.Close(context.Background())
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, errors.Join(ctx.Err(), err)
			}
			d.Tables, d.TablesUnknown = nil, "not recorded: "+err.Error()
		}
		out = append(out, d)
	}
	return out, nil
}
