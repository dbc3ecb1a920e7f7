package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/jackc/pgx/v5"
)

// The tests use the PostgreSQL server on this machine: 127.0.0.1:5432,
// trust authentication, superuser postgres.
const testHost, testPort = "127.0.0.1", "5432"

// adminDSN is the test server's connection string for database db, as
// the superuser postgres.
func adminDSN(db string) string {
	return fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable", testHost, testPort, quoteConnValue(db))
}

func adminConnect(ctx context.Context, t testing.TB, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, adminDSN(db))
	if err != nil {
		t.Fatalf("connect to the test server's database %s as postgres: %v", db, err)
	}
	return conn
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testDB is a fresh database on the test server, owned by a fresh
// superuser login role with a real password, both named
// capsule_test_<random>. Everything whose name starts with that name
// (databases beside it, roles a test adds) is removed when the test ends.
type testDB struct {
	name     string
	password string
}

func newTestDB(t *testing.T) *testDB {
	t.Helper()
	ctx := context.Background()
	d := &testDB{name: "capsule_test_" + randHex(4), password: "pw-" + randHex(16)}
	admin := adminConnect(ctx, t, "postgres")
	defer admin.Close(ctx)
	mustExec(ctx, t, admin, `CREATE ROLE `+ident(d.name)+` LOGIN SUPERUSER PASSWORD `+literal(d.password))
	mustExec(ctx, t, admin, `CREATE DATABASE `+ident(d.name)+` OWNER `+ident(d.name))
	t.Cleanup(func() { d.drop(t) })
	return d
}

func (d *testDB) drop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := adminConnect(ctx, t, "postgres")
	defer admin.Close(ctx)
	for _, db := range d.databases(ctx, t, admin, "") {
		if _, err := admin.Exec(ctx, `DROP DATABASE IF EXISTS `+ident(db)+` WITH (FORCE)`); err != nil {
			t.Errorf("cleanup: drop database %s: %v", db, err)
		}
	}
	rows, err := admin.Query(ctx, `SELECT rolname FROM pg_roles WHERE left(rolname, length($1)) = $1 ORDER BY length(rolname) DESC`, d.name)
	if err != nil {
		t.Errorf("cleanup: list roles: %v", err)
		return
	}
	roles, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, r := range roles {
		if _, err := admin.Exec(ctx, `DROP ROLE IF EXISTS `+ident(r)); err != nil {
			t.Errorf("cleanup: drop role %s: %v", r, err)
		}
	}
}

// databases lists the databases whose names start with the test's name
// followed by infix.
func (d *testDB) databases(ctx context.Context, t testing.TB, admin *pgx.Conn, infix string) []string {
	t.Helper()
	prefix := d.name + infix
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE left(datname, length($1)) = $1 ORDER BY 1`, prefix)
	if err != nil {
		t.Fatalf("list databases: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("list databases: %v", err)
	}
	return names
}

// leftovers lists side and scratch databases of this test that remain.
func (d *testDB) leftovers(ctx context.Context, t testing.TB) []string {
	t.Helper()
	admin := adminConnect(ctx, t, "postgres")
	defer admin.Close(ctx)
	var left []string
	for _, db := range d.databases(ctx, t, admin, "") {
		if strings.Contains(db, "_capsule_restore_") || strings.Contains(db, "_capsule_verify_") {
			left = append(left, db)
		}
	}
	return left
}

func (d *testDB) source() engines.Source {
	pw := d.password
	return engines.Source{
		Name:   "test/" + d.name,
		Engine: "postgres",
		Config: map[string]any{
			"url":     fmt.Sprintf("postgres://%s@%s:%s/%s", d.name, testHost, testPort, d.name),
			"sslmode": "disable",
			// The test role is a superuser (objects keep their owners);
			// TestNonSuperuser and the attack tests restore without one.
			"allowSuperuser": true,
		},
		Password: func(context.Context) (string, error) { return pw, nil },
	}
}

// recreate drops and recreates the database, empty.
func (d *testDB) recreate(ctx context.Context, t testing.TB) {
	t.Helper()
	admin := adminConnect(ctx, t, "postgres")
	defer admin.Close(ctx)
	mustExec(ctx, t, admin, `DROP DATABASE IF EXISTS `+ident(d.name)+` WITH (FORCE)`)
	mustExec(ctx, t, admin, `CREATE DATABASE `+ident(d.name)+` OWNER `+ident(d.name))
}

// exec runs statements in database db (the test's own when "").
func (d *testDB) exec(ctx context.Context, t testing.TB, db string, sql ...string) {
	t.Helper()
	if db == "" {
		db = d.name
	}
	conn := adminConnect(ctx, t, db)
	defer conn.Close(ctx)
	for _, s := range sql {
		mustExec(ctx, t, conn, s)
	}
}

// value runs a query returning one value in database db.
func (d *testDB) value(ctx context.Context, t testing.TB, db, sql string, args ...any) string {
	t.Helper()
	if db == "" {
		db = d.name
	}
	conn := adminConnect(ctx, t, db)
	defer conn.Close(ctx)
	var v *string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if v == nil {
		return "<null>"
	}
	return *v
}

func mustExec(ctx context.Context, t testing.TB, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql); err != nil {
		s := sql
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		t.Fatalf("%s: %v", s, err)
	}
}

const seedSQL = `
CREATE EXTENSION pgcrypto;
CREATE SCHEMA sales;
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE public.kinds (
	id int PRIMARY KEY, n numeric(30,10), f float8, j jsonb, ia int[], ta text[], b bytea,
	ts timestamptz, d date, u uuid, iv interval, addr inet, r int4range, m mood, t text,
	h text, flag bool);
INSERT INTO public.kinds SELECT g,
	(g * 12345.6789)::numeric / 7, g / 3.0::float8,
	jsonb_build_object('id', g, 'tags', jsonb_build_array('a', g % 5), 'nested', jsonb_build_object('x', g * 2)),
	ARRAY[g, g + 1, g + 2], ARRAY['x' || g, NULL, 'ü' || g],
	decode(md5(g::text), 'hex'),
	'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', '2024-01-01'::date + g,
	md5(g::text)::uuid, g * interval '1 second', ('10.0.' || (g % 255) || '.1')::inet,
	int4range(g, g + 10), (ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3],
	CASE WHEN g % 10 = 0 THEN NULL ELSE 'row ' || g || E' with\ttab, ''quote'', "dq", \\ and\nnewline' END,
	encode(digest('v' || g, 'sha256'), 'hex'), g % 2 = 0
FROM generate_series(1, 2000) g;
CREATE TABLE public.big (id bigserial PRIMARY KEY, payload text NOT NULL, amount numeric(12,2), created timestamptz);
INSERT INTO public.big (payload, amount, created)
	SELECT md5(g::text), (g % 10000) / 100.0, '2024-01-01'::timestamptz + g * interval '1 second'
	FROM generate_series(1, 120000) g;
CREATE TABLE sales.orders (id bigint PRIMARY KEY, customer int NOT NULL, total numeric(12,2), tags text[]);
INSERT INTO sales.orders SELECT g, g % 997, (g % 5000) / 10.0, ARRAY['t' || (g % 7)] FROM generate_series(1, 110000) g;
CREATE TABLE sales.items (order_id bigint REFERENCES sales.orders, sku text, qty int);
INSERT INTO sales.items SELECT 1 + g % 110000, 'sku-' || (g % 333), 1 + g % 9 FROM generate_series(1, 100000) g;
CREATE INDEX items_sku ON sales.items (sku);
CREATE SEQUENCE sales.invoice_seq START 1000;
SELECT nextval('sales.invoice_seq') FROM generate_series(1, 7);
CREATE VIEW sales.order_totals AS SELECT customer, sum(total) AS total FROM sales.orders GROUP BY customer;
CREATE MATERIALIZED VIEW sales.top_customers AS
	SELECT customer, count(*) AS n FROM sales.orders GROUP BY customer ORDER BY n DESC, customer LIMIT 10;
CREATE FUNCTION sales.with_tax(numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT round($1 * 1.17, 2) $$;
CREATE FUNCTION public.hash_pw(text) RETURNS text LANGUAGE sql AS $$ SELECT crypt($1, gen_salt('bf', 4)) $$;
CREATE TABLE public.docs (id int PRIMARY KEY, body oid);
INSERT INTO public.docs SELECT g, lo_from_bytea(0, convert_to(repeat('large object ' || g || ' ', 5000 * g), 'UTF8'))
	FROM generate_series(1, 3) g;
COMMENT ON TABLE sales.orders IS 'one row per order';
`

// snapshot is a canonical picture of the test database: every table's
// rows (count and md5 of the sorted text form) and owner, sequences,
// views, functions, indexes, large objects and extensions.
func (d *testDB) snapshot(ctx context.Context, t testing.TB, db string) map[string]string {
	t.Helper()
	if db == "" {
		db = d.name
	}
	conn := adminConnect(ctx, t, db)
	defer conn.Close(ctx)
	snap := map[string]string{}
	pairs := func(sql, prefix string) {
		rows, err := conn.Query(ctx, sql)
		if err != nil {
			t.Fatalf("snapshot %s: %v", prefix, err)
		}
		kv, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
			var k, v string
			err := r.Scan(&k, &v)
			return [2]string{k, v}, err
		})
		if err != nil {
			t.Fatalf("snapshot %s: %v", prefix, err)
		}
		for _, p := range kv {
			snap[prefix+" "+p[0]] = p[1]
		}
	}
	const schemas = `('public', 'sales')`
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text, pg_get_userbyid(c.relowner)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname IN `+schemas)
	if err != nil {
		t.Fatalf("snapshot tables: %v", err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([3]string, error) {
		var a, b, c string
		err := r.Scan(&a, &b, &c)
		return [3]string{a, b, c}, err
	})
	if err != nil {
		t.Fatalf("snapshot tables: %v", err)
	}
	for _, tb := range tables {
		var n int64
		var sum string
		if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(md5(string_agg(x::text, E'\n' ORDER BY x::text)), '') FROM `+tb[0]+` AS x`).Scan(&n, &sum); err != nil {
			t.Fatalf("snapshot %s: %v", tb[0], err)
		}
		snap["table "+tb[0]] = fmt.Sprintf("kind=%s owner=%s rows=%d md5=%s", tb[1], tb[2], n, sum)
	}
	pairs(`SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value::text, 'null') FROM pg_sequences WHERE schemaname IN `+schemas, "sequence")
	pairs(`SELECT format('%I.%I', schemaname, viewname), definition FROM pg_views WHERE schemaname IN `+schemas, "view")
	pairs(`SELECT format('%I.%I', schemaname, matviewname), definition FROM pg_matviews WHERE schemaname IN `+schemas, "matview")
	pairs(`SELECT format('%I.%I', schemaname, indexname), indexdef FROM pg_indexes WHERE schemaname IN `+schemas, "index")
	pairs(`SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname IN `+schemas+` AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')`, "function")
	pairs(`SELECT oid::text, md5(lo_get(oid)) FROM pg_largeobject_metadata`, "largeobject")
	pairs(`SELECT extname, extversion FROM pg_extension`, "extension")
	pairs(`SELECT format('%I.%I', n.nspname, c.relname), obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname IN `+schemas+` AND obj_description(c.oid, 'pg_class') IS NOT NULL`, "comment")
	return snap
}

// compareSnapshots describes the first differences between two
// snapshots, "" when they are equal.
func compareSnapshots(want, got any) string {
	w, g := want.(map[string]string), got.(map[string]string)
	var diffs []string
	for k, v := range w {
		if gv, ok := g[k]; !ok {
			diffs = append(diffs, "missing "+k)
		} else if gv != v {
			diffs = append(diffs, fmt.Sprintf("%s: want %.120q, got %.120q", k, v, gv))
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			diffs = append(diffs, "unexpected "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 8 {
		diffs = append(diffs[:8], fmt.Sprintf("and %d more", len(diffs)-8))
	}
	return strings.Join(diffs, "; ")
}
