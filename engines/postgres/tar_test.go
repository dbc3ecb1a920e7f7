package postgres

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// tarSeed is what the tar tests dump: tables in two schemas, rows whose
// text holds "\." and line breaks (a row counter must not take them for
// the end of the data), an empty table, and a large object.
const tarSeed = `
CREATE SCHEMA app;
CREATE TABLE public.accounts (id int PRIMARY KEY, owner text, balance numeric(12,2));
INSERT INTO public.accounts SELECT g, 'owner ' || g, g * 1.5 FROM generate_series(1, 3000) g;
CREATE TABLE app.notes (id int, body text);
INSERT INTO app.notes VALUES (1, E'\\.'), (2, E'line one\nline two\n\\.\n'), (3, NULL), (4, '');
CREATE TABLE app.empty (x int);
CREATE INDEX notes_id ON app.notes (id);
CREATE TABLE public.docs (id int PRIMARY KEY, body oid);
INSERT INTO public.docs VALUES (1, lo_from_bytea(0, convert_to(repeat('large object ', 500), 'UTF8')));
`

// tarTestDB is a database owned by a CREATEDB role that is no superuser
// (restores refuse one), seeded with tarSeed, and its pg_dump
// --format=tar archive, made by the real pg_dump as the old cnvrg-capsule
// service made them.
func tarTestDB(ctx context.Context, t *testing.T) (*testDB, []byte) {
	t.Helper()
	if _, err := exec.LookPath("pg_dump"); err != nil {
		t.Skip("pg_dump not installed")
	}
	db := newTestDB(t)
	db.exec(ctx, t, "postgres", `ALTER ROLE `+ident(db.name)+` NOSUPERUSER CREATEDB`)
	conn, err := connect(ctx, &conninfo{host: testHost, port: testPort, user: db.name, sslmode: "disable"}, db.password, db.name)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(ctx, t, conn, tarSeed)
	conn.Close(ctx)
	return db, pgDumpTar(t, db)
}

func pgDumpTar(t *testing.T, db *testDB) []byte {
	t.Helper()
	cmd := exec.Command("pg_dump", "--host="+testHost, "--port="+testPort, "--username="+db.name, "--format=t", "--dbname="+db.name)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+db.password)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump --format=t: %v\n%s", err, stderr.String())
	}
	return out
}

func tarStore(t *testing.T, archive []byte) *enginetest.Store {
	t.Helper()
	s := enginetest.NewStore()
	w, err := s.Create("pgdump.tar")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(archive); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestScanTarArchive: the tables of a real pg_dump tar archive and their
// exact row counts, and its header, as the archive streams past.
func TestScanTarArchive(t *testing.T) {
	ctx := context.Background()
	db, archive := tarTestDB(ctx, t)
	info, err := scanTarArchive(bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("scanTarArchive: %v", err)
	}
	if info.Database != db.name || !strings.HasPrefix(info.DumpVersion, "1") {
		t.Errorf("header: database %q, pg_dump %q", info.Database, info.DumpVersion)
	}
	got := map[string]int64{}
	for _, tb := range tablesFromArchive(info) {
		got[tb.Schema+"."+tb.Name] = tb.Rows
	}
	want := map[string]int64{"public.accounts": 3000, "app.notes": 4, "app.empty": 0, "public.docs": 1}
	if diff := enginetest.DeepCompare(want, got); diff != "" {
		t.Errorf("tables and rows: %s", diff)
	}
	// A custom archive, or anything else, is not a tar archive.
	for _, bad := range [][]byte{archive[:100], []byte("PGDMP\x01\x0e\x00\x04\x08\x01"), bytes.Repeat([]byte{0}, 1024)} {
		if _, err := scanTarArchive(bytes.NewReader(bad)); !errors.Is(err, errArchive) {
			t.Errorf("scanTarArchive(%d bytes of junk) = %v, want errArchive", len(bad), err)
		}
	}
}

// TestRestoreTarArchive restores a real pg_dump --format=tar archive
// (FormatTar: nothing recorded but the artifact and its size) the way
// the engine restores its own backups: into a side database swapped in
// by renaming, streaming with one pg_restore even where restoreJobs asks
// for more (pg_restore cannot read a tar archive in parallel), and the
// restored database equals the dumped one. Verify restores it into
// scratch space and checks every table's rows against the counts read
// from the archive itself. A truncated archive fails before the swap and
// leaves the live database and no side database.
func TestRestoreTarArchive(t *testing.T) {
	ctx := context.Background()
	db, archive := tarTestDB(ctx, t)
	want := db.snapshot(ctx, t, "")
	db.exec(ctx, t, "", `DELETE FROM public.accounts WHERE id % 2 = 0`, `DROP TABLE app.notes`)
	info := TarBackupInfo("pgdump.tar", int64(len(archive)))
	store := tarStore(t, archive)
	e := New()
	src := db.source()
	delete(src.Config, "allowSuperuser")

	t.Run("restore", func(t *testing.T) {
		staging := t.TempDir()
		rec := &argvRecorder{}
		e.started = rec.started
		defer func() { e.started = nil }()
		job := store.RestoreJob(t, "tar", withSettings(src, map[string]any{"restoreJobs": 4, "stagingDir": staging}), info, engines.RestoreOptions{DropPrevious: true})
		rinfo, err := e.Restore(ctx, job)
		if err != nil {
			t.Fatalf("Restore of a pg_dump --format=tar archive: %v", err)
		}
		if diff := compareSnapshots(want, db.snapshot(ctx, t, "")); diff != "" {
			t.Errorf("restored database differs from the dumped one: %s", diff)
		}
		argv := rec.last(t)
		if !strings.Contains(argv, "--format=tar") || strings.Contains(argv, "--jobs") || strings.Contains(argv, staging) {
			t.Errorf("pg_restore ran as %q: want --format=tar, one job, reading its stdin", argv)
		}
		emptyDir(t, staging)
		if rinfo.Previous != "" || len(db.leftovers(ctx, t)) > 0 {
			t.Errorf("left behind: previous %q, side databases %v", rinfo.Previous, db.leftovers(ctx, t))
		}
	})

	t.Run("verify", func(t *testing.T) {
		rep, err := e.Verify(ctx, store.RestoreJob(t, "tarv", src, info, engines.RestoreOptions{}))
		if err != nil || !rep.OK {
			t.Fatalf("Verify: %v, %+v", err, rep)
		}
		var rows *engines.Check
		for i, c := range rep.Checks {
			if strings.HasPrefix(c.Name, "rows ") {
				rows = &rep.Checks[i]
			}
		}
		if rows == nil || !strings.Contains(rows.Detail, "all 4 tables") || !strings.Contains(rows.Detail, "counted in the archive") {
			t.Errorf("checks %+v: want the row counts of 4 tables, counted in the archive", rep.Checks)
		}
		if rows != nil && !strings.HasSuffix(rows.Name, db.name) {
			t.Errorf("check %q does not name the archive's database %s", rows.Name, db.name)
		}
		if left := db.leftovers(ctx, t); len(left) > 0 {
			t.Errorf("scratch databases left: %v", left)
		}
	})

	t.Run("truncated", func(t *testing.T) {
		db.exec(ctx, t, "", `CREATE TABLE public.marker (x int)`)
		cut := tarStore(t, archive[:len(archive)*2/3])
		_, err := e.Restore(ctx, cut.RestoreJob(t, "tarcut", src, info, engines.RestoreOptions{DropPrevious: true}))
		if err == nil {
			t.Fatal("Restore of a truncated tar archive succeeded")
		}
		if got := db.value(ctx, t, "", `SELECT count(*)::text FROM public.marker`); got != "0" {
			t.Errorf("the live database was replaced: marker table has %s rows", got)
		}
		if left := db.leftovers(ctx, t); len(left) > 0 {
			t.Errorf("side databases left: %v", left)
		}
	})
}

// TestTarFormatDetails: a FormatTar backup holds one archive of one
// database, nothing else.
func TestTarFormatDetails(t *testing.T) {
	info := TarBackupInfo("pgdump.tar", 10)
	d, err := readDetails(info)
	if err != nil || !d.tar || d.Databases[0].Artifact != "pgdump.tar" || d.Databases[0].DumpBytes != 10 {
		t.Fatalf("readDetails(TarBackupInfo) = %+v, %v", d, err)
	}
	info.Details["databases"] = []any{map[string]any{"artifact": "a"}, map[string]any{"artifact": "b"}}
	if _, err := readDetails(info); err == nil {
		t.Errorf("readDetails accepted a tar backup of two databases")
	}
}
