package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// generator is the version of the data's recipe below: a database built
// by another version is rebuilt.
const generator = 1

// tables are the benchmark database's tables, in the order they are
// counted.
var tables = []string{
	"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history",
	"bench_words", "events", "documents", "measurements",
}

// schema is pgbench's four tables (pgbench -i's, keys created up front)
// and three tables of data that compresses like an application's:
// events (jsonb, a repeated session hash, timestamps, amounts), documents
// (text of words drawn from a 1,000-word vocabulary) and measurements
// (numbers).
var schema = []string{
	`CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88))`,
	`CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84))`,
	`CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84))`,
	`CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))`,
	`CREATE TABLE bench_words (i int PRIMARY KEY, w text NOT NULL)`,
	`INSERT INTO bench_words SELECT i, translate(substr(md5(i::text), 1, 4 + i % 9), '0123456789', 'etaoinshrd') FROM generate_series(0, 999) i`,
	`CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL, user_id int NOT NULL, kind text NOT NULL,
		session text NOT NULL, payload jsonb NOT NULL, amount numeric(12,2))`,
	`CREATE INDEX events_user_at ON events (user_id, at)`,
	`CREATE TABLE documents (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL, tags text[] NOT NULL)`,
	`CREATE TABLE measurements (id bigint PRIMARY KEY, sensor int NOT NULL, at timestamptz NOT NULL,
		value double precision NOT NULL, reading numeric(10,3) NOT NULL)`,
}

// unit is one round of inserts, about 55 MB on disk and 40 MB of dump;
// raw dump shares: accounts ~35% (compresses ~100× with zstd), events
// ~30% (~5×), documents ~25% (~3.6×), measurements ~10% (~2.8×), for
// about 6× overall.
var unit = []struct {
	rows int64
	sql  string // $1, $2: the first and last id of the round
}{
	{150000, `INSERT INTO pgbench_accounts SELECT aid, (aid - 1) / 100000 + 1, 0, '' FROM generate_series($1::int, $2::int) aid`},
	{66000, `INSERT INTO events
		SELECT g.i, timestamptz '2024-01-01' + g.i * interval '37 ms', (random() * 50000)::int,
			(ARRAY['click','view','purchase','login','logout','search','error','upload'])[1 + (random() * 7)::int],
			md5((g.i / 20)::text),
			jsonb_build_object(
				'path', '/api/v1/' || (ARRAY['users','items','orders','carts','search','auth','files','models'])[1 + (random() * 7)::int] || '/' || (random() * 1000)::int,
				'status', (ARRAY[200,200,200,201,204,301,404,500])[1 + (random() * 7)::int],
				'ms', (random() * 900)::int,
				'trace', substr(md5(random()::text), 1, 8),
				'ok', random() < 0.9),
			round((random() * 1000)::numeric, 2)
		FROM generate_series($1::bigint, $2::bigint) g(i)`},
	{26000, `INSERT INTO documents
		SELECT x.id, initcap(min(w.w)) || ' ' || x.id, string_agg(w.w, ' '),
			ARRAY[(ARRAY['ml','data','infra','ops','web','api','docs','ui'])[1 + x.id % 8], min(w.w)]
		FROM (SELECT id, (999 * random() ^ 2)::int AS k FROM generate_series($1::bigint, $2::bigint) id, generate_series(1, 40) p) x
		JOIN bench_words w ON w.i = x.k
		GROUP BY x.id`},
	{62000, `INSERT INTO measurements
		SELECT g.i, (random() * 500)::int, timestamptz '2024-01-01' + g.i * interval '1 s',
			random() * 100, round((random() * 1000)::numeric, 3)
		FROM generate_series($1::bigint, $2::bigint) g(i)`},
}

// dbInfo describes a benchmark database.
type dbInfo struct {
	Name   string
	Size   int64 // pg_database_size
	Counts map[string]int64
	// Built is set when this run built it, in BuildTime.
	Built     bool
	BuildTime time.Duration
}

type marker struct {
	Generator int              `json:"generator"`
	Target    int64            `json:"target"`
	Counts    map[string]int64 `json:"counts"`
}

// ensureDB returns the benchmark database of the target size, building it
// when it is missing, unfinished, of another recipe or size, or when
// rebuild is set.
func (b *bench) ensureDB(ctx context.Context, name string, target int64, rebuild bool) (*dbInfo, error) {
	if !rebuild {
		if info, err := b.readMarker(ctx, name, target); err == nil {
			return info, nil
		} else if !errors.Is(err, errNoMarker) {
			return nil, err
		}
	}
	start := time.Now()
	if err := b.dropDB(ctx, name); err != nil {
		return nil, err
	}
	if _, err := b.admin.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	conn, err := b.connect(ctx, name)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SELECT setseed(0.42)`); err != nil {
		return nil, err
	}
	for _, s := range schema {
		if _, err := conn.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("build %s: %w", name, err)
		}
	}
	var size int64
	var rounds int64
	for size < target {
		for _, u := range unit {
			first := rounds*u.rows + 1
			if _, err := conn.Exec(ctx, u.sql, first, first+u.rows-1); err != nil {
				return nil, fmt.Errorf("build %s: %w", name, err)
			}
		}
		rounds++
		if err := conn.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&size); err != nil {
			return nil, err
		}
		fmt.Fprintf(b.progress, "\rbuilding %s: %s of %s, %s  ", name, gb(size), gb(target), time.Since(start).Round(time.Second))
	}
	fmt.Fprintln(b.progress)
	branches := (rounds*unit[0].rows + 99999) / 100000
	for _, s := range []string{
		fmt.Sprintf(`INSERT INTO pgbench_branches SELECT bid, 0, '' FROM generate_series(1, %d) bid`, branches),
		fmt.Sprintf(`INSERT INTO pgbench_tellers SELECT tid, (tid - 1) / 10 + 1, 0, '' FROM generate_series(1, %d) tid`, branches*10),
		`VACUUM (ANALYZE, FREEZE)`,
		`CHECKPOINT`,
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("build %s: %s: %w", name, strings.Fields(s)[0], err)
		}
	}
	counts, err := countRows(ctx, conn)
	if err != nil {
		return nil, err
	}
	m, _ := json.Marshal(marker{Generator: generator, Target: target, Counts: counts})
	if _, err := conn.Exec(ctx, `CREATE TABLE capsule_bench_marker (m jsonb NOT NULL)`); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `INSERT INTO capsule_bench_marker VALUES ($1)`, string(m)); err != nil {
		return nil, err
	}
	info, err := b.readMarker(ctx, name, target)
	if err != nil {
		return nil, err
	}
	info.Built, info.BuildTime = true, time.Since(start)
	return info, nil
}

var errNoMarker = errors.New("no benchmark marker")

// readMarker returns the database's description when it is a finished
// benchmark database of this recipe and target size.
func (b *bench) readMarker(ctx context.Context, name string, target int64) (*dbInfo, error) {
	conn, err := b.connect(ctx, name)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "3D000" { // invalid_catalog_name
			return nil, errNoMarker
		}
		return nil, err
	}
	defer conn.Close(context.Background())
	var raw string
	if err := conn.QueryRow(ctx, `SELECT m::text FROM capsule_bench_marker`).Scan(&raw); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table: unfinished
			return nil, errNoMarker
		}
		return nil, err
	}
	var m marker
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m.Generator != generator || m.Target != target {
		return nil, errNoMarker
	}
	info := &dbInfo{Name: name, Counts: m.Counts}
	err = conn.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&info.Size)
	return info, err
}

// countRows counts every benchmark table's rows.
func countRows(ctx context.Context, conn *pgx.Conn) (map[string]int64, error) {
	counts := make(map[string]int64, len(tables))
	for _, t := range tables {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{t}.Sanitize()).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s: %w", t, err)
		}
		counts[t] = n
	}
	return counts, nil
}

// checkRestored compares a restored database's row counts with the
// source's.
func (b *bench) checkRestored(ctx context.Context, name string, want map[string]int64) error {
	conn, err := b.connect(ctx, name)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	got, err := countRows(ctx, conn)
	if err != nil {
		return fmt.Errorf("restored %s: %w", name, err)
	}
	for _, t := range tables {
		if got[t] != want[t] {
			return fmt.Errorf("restored %s: table %s has %d rows, the source %d", name, t, got[t], want[t])
		}
	}
	return nil
}

func (b *bench) dropDB(ctx context.Context, name string) error {
	if _, err := b.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// dropLike drops every database whose name starts with prefix (a
// restore's target and what the engine left beside it).
func (b *bench) dropLike(ctx context.Context, prefix string) error {
	rows, err := b.admin.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, prefix)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := b.dropDB(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func gb(n int64) string { return fmt.Sprintf("%.2f GB", float64(n)/1e9) }
