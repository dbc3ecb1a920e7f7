package postgres

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// TestValidCopy: the streaming restore runs only the COPY statements
// pg_dump writes.
func TestValidCopy(t *testing.T) {
	for _, c := range []struct {
		stmt string
		ok   bool
	}{
		{"COPY public.t (id, v) FROM stdin;\n", true},
		{"COPY public.t FROM stdin;\n", true},
		{"COPY public.nocols  FROM stdin;\n", true},
		{"COPY public.t   FROM stdin;\n", false},
		{`COPY "My Schema"."odd ""name""" ("Col", x_1$) FROM stdin;`, true},
		{"COPY t (a) FROM stdin;", true},
		{"COPY public.t (id) FROM PROGRAM 'id';", false},
		{"COPY public.t (id) FROM '/etc/passwd' -- FROM stdin;", false},
		{"COPY public.t (id) FROM stdin; DROP TABLE x; COPY public.t FROM stdin;", false},
		{"COPY (SELECT 1) TO stdout -- FROM stdin;", false},
		{"COPY public.t (id FROM stdin;", false},
		{`COPY "unterminated FROM stdin;`, false},
		{`COPY "" FROM stdin;`, false},
		{"copy public.t from stdin;", false},
		{"", false},
	} {
		if got := validCopy(c.stmt); got != c.ok {
			t.Errorf("validCopy(%q) = %v, want %v", c.stmt, got, c.ok)
		}
	}
}

// edgeSchema is data the streaming restore cuts into batches and strips
// pg_dump's end-of-data marker from: empty lines as rows (a table of no
// columns, an empty string), a backslash and "\." in the data, a table
// many batches long, generated columns, a partitioned table, an empty
// table, a mixed-case name.
const edgeSchema = `
CREATE TABLE nocols ();
INSERT INTO nocols SELECT FROM generate_series(1, 7);
CREATE TABLE empties (s text);
INSERT INTO empties VALUES (''), (''), (E'\\.'), (E'a\\\\.'), (E'\n\\.\n'), ('');
CREATE TABLE big (id int PRIMARY KEY, v text, twice int GENERATED ALWAYS AS (id * 2) STORED);
INSERT INTO big SELECT g, repeat(md5(g::text), 1 + g % 7) FROM generate_series(1, 40000) g;
CREATE INDEX big_v ON big (v);
CREATE TABLE "Mixed Case" ("Id" int REFERENCES big (id), "ends with \." text);
INSERT INTO "Mixed Case" SELECT g, E'x\\.' FROM generate_series(1, 100) g;
CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (500);
CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM (500) TO (1000);
INSERT INTO parted SELECT g, g::text FROM generate_series(0, 999) g;
CREATE TABLE nothing (a int);
CREATE SEQUENCE counter START 5;
SELECT nextval('counter'), nextval('counter');
`

// TestStreamingRestoreEdges restores edgeSchema with the streaming
// parallel restore and compares every table, sequence and index.
func TestStreamingRestoreEdges(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", edgeSchema)
	want := db.snapshot(ctx, t, "")
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	db.exec(ctx, t, "", `DELETE FROM "Mixed Case"`, `DELETE FROM empties`, `TRUNCATE parted`, `SELECT setval('counter', 100)`)
	for _, jobs := range []int{2, 3} {
		log, buf := captureLog(t)
		job := store.RestoreJob(t, "edges"+string(rune('0'+jobs)), withSettings(db.source(), map[string]any{"restoreJobs": jobs, "stagingDir": t.TempDir()}), info, engines.RestoreOptions{DropPrevious: true})
		job.Log = log
		if _, err := e.Restore(ctx, job); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if !strings.Contains(string(buf.Bytes()), "restored the archive streaming, in parallel") {
			t.Errorf("jobs %d: the restore did not stream in parallel:\n%s", jobs, buf.Bytes())
		}
		if diff := compareSnapshots(want, db.snapshot(ctx, t, "")); diff != "" {
			t.Errorf("jobs %d: restored database differs: %s", jobs, diff)
		}
	}
}

// TestStreamingRestoreCopyFails ends the COPY sessions while they load:
// the restore fails, the target is as it was, and no side database
// remains.
func TestStreamingRestoreCopyFails(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", `CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 400000) g`)
	e := New()
	store, info := enginetest.Backup(ctx, t, e, db.source())
	db.exec(ctx, t, "", `DELETE FROM big WHERE id > 10`)
	before := db.snapshot(ctx, t, "")
	admin := adminConnect(ctx, t, "postgres")
	defer admin.Close(ctx)
	stop, stopped := make(chan struct{}), make(chan struct{})
	var ended atomic.Int64
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			var n int64
			if err := admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname LIKE $1 AND query LIKE 'COPY %'`, db.name+"_capsule_restore_%").Scan(&n); err == nil {
				ended.Add(n)
			}
		}
	}()
	_, err := e.Restore(ctx, store.RestoreJob(t, "copyfails", withSettings(db.source(), map[string]any{"stagingDir": t.TempDir()}), info, engines.RestoreOptions{}))
	close(stop)
	<-stopped // the terminator's connection is closed by a defer: not while it queries
	if ended.Load() == 0 {
		t.Fatalf("no COPY session was ended (Restore: %v): the test proves nothing", err)
	}
	var ce *engines.ChecksumError
	if err == nil || errors.As(err, &ce) || !strings.Contains(err.Error(), "load table public.big") {
		t.Fatalf("Restore with its COPY sessions ended: %v, want an error naming the table", err)
	}
	t.Logf("Restore: %v", err)
	if diff := compareSnapshots(before, db.snapshot(ctx, t, "")); diff != "" {
		t.Errorf("the target changed: %s", diff)
	}
	if left := db.leftovers(ctx, t); len(left) > 0 {
		t.Errorf("side databases remain: %v", left)
	}
}
