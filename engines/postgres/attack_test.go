package postgres

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// replaced returns a copy of store with artifact name's bytes replaced
// by data, stored with their own sha256: what someone who can write the
// bucket (artifacts and index) can make.
func replaced(t *testing.T, store *enginetest.Store, name string, data []byte) *enginetest.Store {
	t.Helper()
	out := enginetest.NewStore()
	for _, n := range store.Names() {
		b := store.Bytes(n)
		if n == name {
			b = data
		}
		w, err := out.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// sourceOf is the test database's source with its url pointing at
// database db and only these settings besides (no allowSuperuser
// unless given).
func (d *testDB) sourceOf(db string, settings map[string]any) engines.Source {
	src := d.source()
	cfg := map[string]any{"url": fmt.Sprintf("postgres://%s@%s:%s/%s", d.name, testHost, testPort, db), "sslmode": "disable"}
	for k, v := range settings {
		cfg[k] = v
	}
	src.Config = cfg
	return src
}

// TestForgedArchiveRunsNoProgram restores an archive forged into a
// backup of the live database (artifact and index replaced, sha256
// matching). It is a real pg_dump of a database whose index calls a
// function that, evaluated in a restore's side database, runs a program
// on the database host with COPY … TO PROGRAM: pg_restore builds the
// index, so a restore as a superuser ran the program. A restore or a
// verification as a superuser is now refused unless the source allows
// it; as a role without superuser powers the program is refused by the
// server, and the restore fails with the live database untouched.
func TestForgedArchiveRunsNoProgram(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", `CREATE TABLE public.keep AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g`)
	other := db.name + "_other"
	db.exec(ctx, t, "postgres", `CREATE DATABASE `+ident(other))
	db.exec(ctx, t, other, `CREATE TABLE public.secrets AS SELECT g AS id, 'secret ' || g AS v FROM generate_series(1, 10) g`)

	pwned := "/tmp/capsule-pwned-" + randHex(6) // written, if at all, by the server's OS user
	t.Cleanup(func() { os.Remove(pwned) })
	evil := db.name + "_evil"
	db.exec(ctx, t, "postgres", `CREATE DATABASE `+ident(evil)+` OWNER `+ident(db.name))
	db.exec(ctx, t, evil,
		// COPY may not run in an IMMUTABLE function, but in a VOLATILE one
		// that an IMMUTABLE one calls.
		`CREATE FUNCTION public.g() RETURNS void LANGUAGE plpgsql VOLATILE AS $f$
		BEGIN
			IF current_database() LIKE '%\_capsule\_%' THEN
				EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'touch `+pwned+`');
			END IF;
		END $f$`,
		`CREATE FUNCTION public.f(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$ BEGIN PERFORM public.g(); RETURN x; END $f$`,
		`CREATE TABLE public.t (id int)`,
		`INSERT INTO public.t SELECT generate_series(1, 3)`,
		`CREATE INDEX t_f ON public.t (public.f(id))`)

	e := New()
	liveStore, liveInfo := enginetest.Backup(ctx, t, e, db.sourceOf(db.name, nil)) // a backup may run as a superuser
	evilStore, evilInfo := enginetest.Backup(ctx, t, e, db.sourceOf(evil, nil))
	// The forgery: the live database's backup, its archive replaced by
	// the evil one and the index's record of it by the evil one's.
	live := liveInfo.Details["databases"].([]any)[0].(map[string]any)
	rec := evilInfo.Details["databases"].([]any)[0].(map[string]any)
	rec["name"], rec["artifact"] = live["name"], live["artifact"]
	forgedInfo := liveInfo
	forgedInfo.Details = map[string]any{}
	for k, v := range liveInfo.Details {
		forgedInfo.Details[k] = v
	}
	forgedInfo.Details["databases"] = []any{rec}
	forged := replaced(t, liveStore, live["artifact"].(string), evilStore.Bytes(evilStore.Names()[0]))

	wantLive, wantOther := db.snapshot(ctx, t, ""), db.snapshot(ctx, t, other)
	unchanged := func(t *testing.T) {
		t.Helper()
		if _, err := os.Stat(pwned); err == nil {
			t.Errorf("the archive ran a program on the database host: %s exists", pwned)
		}
		if d := compareSnapshots(wantLive, db.snapshot(ctx, t, "")); d != "" {
			t.Errorf("the live database changed: %s", d)
		}
		if d := compareSnapshots(wantOther, db.snapshot(ctx, t, other)); d != "" {
			t.Errorf("another database changed: %s", d)
		}
		if left := db.leftovers(ctx, t); len(left) > 0 {
			t.Errorf("side databases remain: %v", left)
		}
	}
	superuser := db.sourceOf(db.name, nil) // the role is a superuser; the source does not allow it

	t.Run("SuperuserRestoreRefused", func(t *testing.T) {
		_, err := e.Restore(ctx, forged.RestoreJob(t, "su", superuser, forgedInfo, engines.RestoreOptions{DropPrevious: true}))
		if err == nil || !strings.Contains(err.Error(), "role "+db.name+", which is a superuser") || !strings.Contains(err.Error(), "allowSuperuser: true") {
			t.Errorf("err = %v, want a refusal naming the role, why, and allowSuperuser", err)
		} else {
			t.Logf("refused: %v", err)
		}
		unchanged(t)
	})
	t.Run("SuperuserVerifyRefused", func(t *testing.T) {
		rep, err := e.Verify(ctx, forged.RestoreJob(t, "vsu", superuser, forgedInfo, engines.RestoreOptions{}))
		if err == nil || !strings.Contains(err.Error(), "which is a superuser") || rep == nil || rep.OK {
			t.Errorf("Verify: %+v, %v; want a refusal", rep, err)
		}
		unchanged(t)
	})

	// Least privilege: CREATEDB and ownership of the database.
	db.exec(ctx, t, "postgres", `ALTER ROLE `+ident(db.name)+` NOSUPERUSER CREATEDB`)
	t.Run("LeastPrivilegeRestoreFails", func(t *testing.T) {
		_, err := e.Restore(ctx, forged.RestoreJob(t, "nosu", superuser, forgedInfo, engines.RestoreOptions{DropPrevious: true}))
		if err == nil || !strings.Contains(err.Error(), "pg_execute_server_program") {
			t.Errorf("err = %v, want pg_restore's refusal of COPY … TO PROGRAM", err)
		} else {
			t.Logf("failed: %v", err)
		}
		unchanged(t)
	})
	t.Run("LeastPrivilegeVerifyFails", func(t *testing.T) {
		rep, err := e.Verify(ctx, forged.RestoreJob(t, "vnosu", superuser, forgedInfo, engines.RestoreOptions{}))
		if err == nil || rep == nil || rep.OK {
			t.Errorf("Verify: %+v, %v; want a failure", rep, err)
		}
		unchanged(t)
	})
	t.Run("HostRoleRefused", func(t *testing.T) {
		db.exec(ctx, t, "postgres", `GRANT pg_execute_server_program TO `+ident(db.name))
		defer db.exec(ctx, t, "postgres", `REVOKE pg_execute_server_program FROM `+ident(db.name))
		_, err := e.Restore(ctx, forged.RestoreJob(t, "hostrole", superuser, forgedInfo, engines.RestoreOptions{DropPrevious: true}))
		if err == nil || !strings.Contains(err.Error(), "has the privileges of pg_execute_server_program") {
			t.Errorf("err = %v, want a refusal naming pg_execute_server_program", err)
		}
		unchanged(t)
	})
}

// TestForgedGlobals restores a databases: all backup whose globals.sql
// is forged (sha256 matching) to smuggle statements past the parser:
// dollar quoting hides quotes, so a parser that splits at semicolons
// outside '…' only sees one comment on a role the restore creates, and
// the server runs the "ALTER ROLE victim SUPERUSER" inside it.
func TestForgedGlobals(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	victim, evil := db.name+"_victim", db.name+"_evil"
	db.exec(ctx, t, "postgres", `CREATE ROLE `+ident(victim)+` LOGIN NOSUPERUSER PASSWORD 'victim-pw'`)
	db.exec(ctx, t, "", `CREATE TABLE public.ta AS SELECT g AS id FROM generate_series(1, 100) g`)
	all := func(settings map[string]any) engines.Source {
		s := db.sourceOf("postgres", settings)
		s.Config["databases"] = "all"
		return s
	}
	e := New()
	e.include = func(_, name string) bool { return strings.HasPrefix(name, db.name) }
	store, info := enginetest.Backup(ctx, t, e, all(nil))
	globals := string(store.Bytes(globalsArtifact))
	const end = "\n--\n-- PostgreSQL database cluster dump complete"
	at := strings.LastIndex(globals, "\\unrestrict")
	if at < 0 {
		at = strings.LastIndex(globals, end)
	}
	if at < 0 {
		t.Fatalf("globals.sql has no end to insert before:\n%s", globals)
	}
	forge := func(extra string) *enginetest.Store {
		return replaced(t, store, globalsArtifact, []byte(globals[:at]+extra+"\n"+globals[at:]))
	}
	victimPw := db.value(ctx, t, "postgres", `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, victim)
	check := func(t *testing.T) {
		t.Helper()
		if su := db.value(ctx, t, "postgres", `SELECT rolsuper::text FROM pg_roles WHERE rolname = $1`, victim); su != "false" {
			t.Errorf("role %s became a superuser", victim)
		}
		if pw := db.value(ctx, t, "postgres", `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, victim); pw != victimPw {
			t.Errorf("role %s's password changed", victim)
		}
	}
	smuggle := "CREATE ROLE " + ident(evil) + ";\nCOMMENT ON ROLE " + ident(evil) + " IS $$'$$; ALTER ROLE " + ident(victim) + " SUPERUSER; SELECT $$'$$;"

	t.Run("SuperuserNotAllowed", func(t *testing.T) {
		_, err := e.Restore(ctx, forge(smuggle).RestoreJob(t, "g1", all(nil), info, engines.RestoreOptions{DropPrevious: true}))
		if err == nil || !strings.Contains(err.Error(), "allowSuperuser") {
			t.Errorf("err = %v, want the superuser refusal", err)
		}
		check(t)
	})
	t.Run("DollarQuoteSmuggle", func(t *testing.T) {
		_, err := e.Restore(ctx, forge(smuggle).RestoreJob(t, "g2", all(map[string]any{"allowSuperuser": true}), info, engines.RestoreOptions{DropPrevious: true}))
		if err == nil || !strings.Contains(err.Error(), "a SELECT statement, which capsule does not apply") {
			t.Errorf("err = %v, want the smuggled SELECT refused", err)
		} else {
			t.Logf("refused: %v", err)
		}
		check(t)
		if n := db.value(ctx, t, "postgres", `SELECT count(*)::text FROM pg_roles WHERE rolname = $1`, evil); n != "0" {
			t.Errorf("role %s was created although globals.sql was refused", evil)
		}
	})
	t.Run("ExistingRoleNeverAltered", func(t *testing.T) {
		alter := "ALTER ROLE " + ident(victim) + " WITH SUPERUSER PASSWORD 'attacker-knows';\nCOMMENT ON ROLE " + ident(victim) + " IS 'owned';"
		_, err := e.Restore(ctx, forge(alter).RestoreJob(t, "g3", all(map[string]any{"allowSuperuser": true}), info, engines.RestoreOptions{DropPrevious: true}))
		if err != nil {
			t.Errorf("Restore: %v", err)
		}
		check(t)
		if c := db.value(ctx, t, "postgres", `SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1`, victim); c != "<null>" {
			t.Errorf("role %s got a comment: %q", victim, c)
		}
	})
}
