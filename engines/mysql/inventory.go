package mysql

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
)

// objects lists what one database holds, by kind, names sorted. The
// backup records it (BackupInfo.Details.objects) and a restore checks the
// staged copy against it.
type objects struct {
	Charset    string   `json:"charset"`
	Collation  string   `json:"collation"`
	Tables     []string `json:"tables"`
	Views      []string `json:"views"`
	Triggers   []string `json:"triggers"`
	Procedures []string `json:"procedures"`
	Functions  []string `json:"functions"`
	Events     []string `json:"events"`
}

// querier is what *sql.DB and *sql.Conn share.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

func inventory(ctx context.Context, q querier, db string) (*objects, error) {
	o := &objects{}
	err := q.QueryRowContext(ctx, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", db).Scan(&o.Charset, &o.Collation)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", db, err)
	}
	type list struct {
		query string
		fn    func(name, kind string)
	}
	for _, l := range []list{
		{"SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", func(n, k string) {
			if k == "VIEW" {
				o.Views = append(o.Views, n)
			} else {
				o.Tables = append(o.Tables, n)
			}
		}},
		{"SELECT TRIGGER_NAME, '' FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?", func(n, _ string) { o.Triggers = append(o.Triggers, n) }},
		{"SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?", func(n, k string) {
			if k == "FUNCTION" {
				o.Functions = append(o.Functions, n)
			} else {
				o.Procedures = append(o.Procedures, n)
			}
		}},
		{"SELECT EVENT_NAME, '' FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?", func(n, _ string) { o.Events = append(o.Events, n) }},
	} {
		rows, err := q.QueryContext(ctx, l.query, db)
		if err != nil {
			return nil, fmt.Errorf("database %s: %w", db, err)
		}
		for rows.Next() {
			var n, k string
			if err := rows.Scan(&n, &k); err != nil {
				rows.Close()
				return nil, err
			}
			l.fn(n, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	for _, s := range []*[]string{&o.Tables, &o.Views, &o.Triggers, &o.Procedures, &o.Functions, &o.Events} {
		if *s == nil {
			*s = []string{}
		}
		slices.Sort(*s)
	}
	return o, nil
}

// recordedObjects reads back what the backup recorded for each database.
func recordedObjects(details map[string]any) (map[string]*objects, error) {
	raw, err := json.Marshal(details["objects"])
	if err != nil {
		return nil, err
	}
	var m map[string]*objects
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("backup index: details.objects: %w", err)
	}
	for db, o := range m {
		// They go into CREATE DATABASE unquoted.
		if o == nil || !plainWord(o.Charset) || !plainWord(o.Collation) {
			return nil, fmt.Errorf("backup index: details.objects: bad character set of %s", db)
		}
	}
	return m, nil
}

func plainWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// compare describes how the staged copy differs from what the backup
// recorded, or returns "".
func (o *objects) compare(got *objects) string {
	for _, k := range []struct {
		kind      string
		want, got []string
	}{
		{"tables", o.Tables, got.Tables},
		{"views", o.Views, got.Views},
		{"triggers", o.Triggers, got.Triggers},
		{"procedures", o.Procedures, got.Procedures},
		{"functions", o.Functions, got.Functions},
		{"events", o.Events, got.Events},
	} {
		if !slices.Equal(k.want, k.got) {
			return fmt.Sprintf("%s: backup recorded %v, staged copy has %v", k.kind, k.want, k.got)
		}
	}
	return ""
}

// definition is an object's CREATE statement and the session settings it
// was created under.
type definition struct {
	kind      string // TRIGGER, VIEW, PROCEDURE, FUNCTION, EVENT
	name      string
	sql       string
	sqlMode   string
	collation string // collation_connection
	timeZone  string // events only
}

// definitions returns the CREATE statements of a database's triggers,
// views, routines and events.
func definitions(ctx context.Context, q querier, db string, o *objects) ([]definition, error) {
	var defs []definition
	add := func(kind, name string, stmtCol int, modeCol, collCol int) error {
		tzCol := -1
		if kind == "EVENT" {
			tzCol = 2
		}
		rows, err := q.QueryContext(ctx, fmt.Sprintf("SHOW CREATE %s %s.%s", kind, quoteName(db), quoteName(name)))
		if err != nil {
			return fmt.Errorf("show create %s %s.%s: %w", kind, db, name, err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		if !rows.Next() {
			return fmt.Errorf("show create %s %s.%s: no row", kind, db, name)
		}
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		d := definition{kind: kind, name: name, sql: vals[stmtCol].String}
		if modeCol >= 0 {
			d.sqlMode = vals[modeCol].String
		}
		if collCol >= 0 && collCol < len(vals) {
			d.collation = vals[collCol].String
		}
		if tzCol >= 0 {
			d.timeZone = vals[tzCol].String
		}
		if d.sql == "" {
			return fmt.Errorf("show create %s %s.%s: no statement (missing privilege?)", kind, db, name)
		}
		defs = append(defs, d)
		return rows.Err()
	}
	// Column layouts of SHOW CREATE: TRIGGER (Trigger, sql_mode, SQL
	// Original Statement, character_set_client, collation_connection, ...),
	// VIEW (View, Create View, character_set_client, collation_connection),
	// PROCEDURE/FUNCTION (name, sql_mode, Create ..., character_set_client,
	// collation_connection, ...), EVENT (Event, sql_mode, time_zone, Create
	// Event, character_set_client, collation_connection, ...).
	// Triggers in the order they fire, so that recreating them keeps
	// the order of several on one event.
	rows, err := q.QueryContext(ctx, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER", db)
	if err != nil {
		return nil, fmt.Errorf("database %s: triggers: %w", db, err)
	}
	var triggers []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		triggers = append(triggers, n)
	}
	rows.Close()
	for _, n := range triggers {
		if err := add("TRIGGER", n, 2, 1, 4); err != nil {
			return nil, err
		}
	}
	for _, n := range o.Views {
		if err := add("VIEW", n, 1, -1, 3); err != nil {
			return nil, err
		}
	}
	for _, n := range o.Procedures {
		if err := add("PROCEDURE", n, 2, 1, 4); err != nil {
			return nil, err
		}
	}
	for _, n := range o.Functions {
		if err := add("FUNCTION", n, 2, 1, 4); err != nil {
			return nil, err
		}
	}
	for _, n := range o.Events {
		if err := add("EVENT", n, 3, 1, 5); err != nil {
			return nil, err
		}
	}
	return defs, nil
}
