package postgres

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
)

func TestToolVersions(t *testing.T) {
	for _, c := range []struct{ out, want string }{
		{"pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n", "15.20"},
		{"pg_restore (PostgreSQL) 9.6.24\n", "9.6.24"},
		{"pg_dump (PostgreSQL) 17beta2\n", "17beta2"},
		{"pg_dumpall (PostgreSQL) 16.4 (Ubuntu 16.4-1.pgdg22.04+1)\n", "16.4"},
	} {
		got, err := parseToolVersion("pg_dump", c.out)
		if err != nil || got != c.want {
			t.Errorf("parseToolVersion(%q) = %q, %v; want %q", c.out, got, err, c.want)
		}
	}
	if _, err := parseToolVersion("pg_dump", "something else"); err == nil {
		t.Errorf("parseToolVersion accepted output without a version")
	}

	for _, c := range []struct {
		v    string
		want int
	}{{"15.20", 150020}, {"9.6.24", 90624}, {"16beta1", 160000}, {"10.3", 100003}, {"9.2", 90200}} {
		if got, err := versionNum(c.v); err != nil || got != c.want {
			t.Errorf("versionNum(%q) = %d, %v; want %d", c.v, got, err, c.want)
		}
	}

	for _, c := range []struct {
		tool   string
		server int
		ok     bool
	}{
		{"15.20", 150020, true},
		{"15.1", 150020, true}, // same major: fine
		{"16.0", 150020, true},
		{"14.9", 150002, false},
		{"9.6.24", 90624, true},
		{"9.5.1", 90624, false},
		{"10.3", 90624, true},
		{"9.6.0", 100001, false},
		{"17beta2", 160004, true},
	} {
		err := checkToolVersion("pg_dump", c.tool, c.server)
		if (err == nil) != c.ok {
			t.Errorf("checkToolVersion(pg_dump %s, server %d) = %v, want ok=%v", c.tool, c.server, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "pg_dump "+c.tool+" is older than the server") {
			t.Errorf("unclear error: %v", err)
		}
	}
	if err := checkToolVersion("pg_dump", "14.9", 150002); err == nil || !strings.Contains(err.Error(), "install the PostgreSQL 15 client tools") {
		t.Errorf("error does not say what to install: %v", err)
	}
	if err := checkArchiveVersion("14.1", "15.2"); err == nil {
		t.Errorf("pg_restore 14 accepted an archive of pg_dump 15")
	}
	if err := checkArchiveVersion("16.1", "15.2"); err != nil {
		t.Errorf("pg_restore 16 refused an archive of pg_dump 15: %v", err)
	}
}

func TestValidate(t *testing.T) {
	src := func(cfg map[string]any) engines.Source {
		return engines.Source{Name: "s", Engine: "postgres", Config: cfg}
	}
	e := New()
	for _, cfg := range []map[string]any{
		{"url": "postgres://app@db:5432/app"},
		{"url": "postgresql://app@db/app?sslmode=require", "sslmode": "require", "passwordEnv": "PGPW"},
		{"url": "postgres://admin@db:5432", "databases": "all", "passwordFile": "/run/secrets/pw"},
		{"url": "postgres://app@[::1]:6432/app", "sslmode": "verify-full"},
		{"url": "postgres://app@/app?host=/run/capsule/sock&port=6543&sslmode=disable"},
	} {
		if err := e.Validate(src(cfg)); err != nil {
			t.Errorf("Validate(%v) = %v", cfg, err)
		}
	}
	for _, c := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{}, "url: required"},
		{map[string]any{"url": "mysql://app@db/app"}, "url: scheme"},
		{map[string]any{"url": "postgres://db/app"}, "url: names no user"},
		{map[string]any{"url": "postgres://app:hunter2@db/app"}, "url: must not contain a password"},
		{map[string]any{"url": "postgres://app:hunter2@db:x/app"}, "url: not a valid URL"},
		{map[string]any{"url": "postgres://app@/app"}, "url: names no host"},
		{map[string]any{"url": "postgres://app@db/"}, "url: names no database"},
		{map[string]any{"url": "postgres://app@db/app?connect_timeout=3"}, `url: parameter "connect_timeout"`},
		{map[string]any{"url": "postgres://app@db/app", "sslmode": "maybe"}, "sslmode:"},
		{map[string]any{"url": "postgres://app@db/app?sslmode=disable", "sslmode": "require"}, "sslmode:"},
		{map[string]any{"url": "postgres://app@db/app", "databases": "some"}, "databases:"},
		{map[string]any{"url": "postgres://app@db/app", "passwordEnv": "A", "passwordFile": "B"}, "passwordEnv and passwordFile"},
		{map[string]any{"url": "postgres://app@db/app", "password": "x"}, "password"},
		{map[string]any{"url": "postgres://app@db/app?host=/run/sock"}, "names a host twice"},
		{map[string]any{"url": "postgres://app@/app?host=run/sock"}, "absolute path"},
		{map[string]any{"url": "postgres://app@db/app?port=5433"}, `url: parameter "port"`},
		{map[string]any{"url": "postgres://app@/app?host=/run/sock", "tls": map[string]any{"insecureSkipVerify": true}}, "carries no TLS"},
	} {
		err := e.Validate(src(c.cfg))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%v) = %v, want an error containing %q", c.cfg, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Validate's error repeats the password: %v", err)
		}
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("x", 80)
	for _, c := range []struct {
		db, kind, id string
		attempt      int
	}{
		{"app", "restore", "01jabc", 1},
		{long, "prev", "01jabc", 2},
		{"app", "verify", strings.Repeat("r", 128), 3},
		{"données_" + strings.Repeat("é", 40), "restore", "id", 999},
		{long, "restore", strings.Repeat("r", 128), 12},
	} {
		n := sideName(c.db, c.kind, c.id, c.attempt)
		if len(n) > 63 {
			t.Errorf("sideName(%q, %q, %q, %d) = %q: %d bytes, PostgreSQL keeps 63", c.db, c.kind, c.id, c.attempt, n, len(n))
		}
		if !strings.Contains(n, "_capsule_"+c.kind+"_") || !strings.HasPrefix(c.db, n[:strings.Index(n, "_capsule_")]) {
			t.Errorf("sideName(%q, %q, %q, %d) = %q", c.db, c.kind, c.id, c.attempt, n)
		}
		if !strings.HasSuffix(n, fmt.Sprintf("_a%d", c.attempt)) {
			t.Errorf("sideName(%q, %q, %q, %d) = %q does not end with the attempt", c.db, c.kind, c.id, c.attempt, n)
		}
	}
	if sideName("app", "restore", strings.Repeat("r", 100)+"1", 1) == sideName("app", "restore", strings.Repeat("r", 100)+"2", 1) {
		t.Errorf("long ids that differ give the same side name")
	}
	// Attempts of one request never share a name, even where the
	// database's name is cut to make room.
	for _, db := range []string{"app", long} {
		for _, id := range []string{"01jabc", strings.Repeat("r", 128)} {
			if a, b := sideName(db, "restore", id, 1), sideName(db, "restore", id, 11); a == b {
				t.Errorf("attempts 1 and 11 of %s on %s: %q and %q", id, db, a, b)
			}
		}
	}
	for _, c := range []string{stagingComment(kindRestore, "01j-x.y", 3), stagingComment(kindVerify, strings.Repeat("r", 128), 1)} {
		kind, id, a, ok := parseStagingComment(c)
		if !ok || stagingComment(kind, id, a) != c {
			t.Errorf("parseStagingComment(%q) = %q, %q, %d, %v", c, kind, id, a, ok)
		}
	}
	for _, c := range []string{"", "capsule staging: kind=prev request=x attempt=1", "capsule staging: kind=restore request=x attempt=0", "capsule staging: kind=restore request=x attempt=1 extra"} {
		if _, _, _, ok := parseStagingComment(c); ok {
			t.Errorf("parseStagingComment(%q) accepted it", c)
		}
	}

	for db, want := range map[string]string{
		"app":        "db-app.dump",
		"my_app-2.x": "db-my_app-2.x.dump",
	} {
		if got := artifactName(db); got != want {
			t.Errorf("artifactName(%q) = %q, want %q", db, got, want)
		}
	}
	if a, b := artifactName("App"), artifactName("app"); a == b || !strings.HasPrefix(a, "db-app-") {
		t.Errorf("artifactName(App) = %q, artifactName(app) = %q", a, b)
	}
	if a := artifactName("we ird/name"); strings.ContainsAny(a, " /") {
		t.Errorf("artifactName kept unsafe characters: %q", a)
	}
}

func TestParseGlobals(t *testing.T) {
	script := `--
-- PostgreSQL database cluster dump
--

\restrict abc123

SET default_transaction_read_only = off;
SET standard_conforming_strings = on;

CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER LOGIN CONNECTION LIMIT -1 PASSWORD 'SCRAM-SHA-256$4096:x;y''z' VALID UNTIL '2030-01-01 00:00:00+00';
CREATE ROLE "Odd ""Name""";
ALTER ROLE "Odd ""Name""" WITH NOLOGIN;
COMMENT ON ROLE app IS 'semi; colon
and newline';
COMMENT ON ROLE "Odd ""Name""" IS $x$dollar; 'quoted' $$ text$x$;
COMMENT ON ROLE APP IS E'escaped \' quote; and \\ backslash';
/* a block; /* nested; */ comment */
ALTER ROLE app SET search_path TO 'a', 'b';
ALTER ROLE app IN DATABASE "db" SET work_mem = '8MB';
ALTER ROLE app SET myext.level TO 3;
GRANT app TO "Odd ""Name""" WITH ADMIN OPTION GRANTED BY postgres;
GRANT pg_read_all_data TO app WITH INHERIT TRUE, SET FALSE GRANTED BY postgres;
GRANT ALL ON TABLESPACE fast TO app;
CREATE TABLESPACE fast OWNER app LOCATION '/x';

\unrestrict abc123
`
	got, err := parseGlobals(script)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ kind, role string }{
		{"create", "app"}, {"attrs", "app"},
		{"create", `Odd "Name"`}, {"attrs", `Odd "Name"`},
		{"comment", "app"}, {"comment", `Odd "Name"`}, {"comment", "app"},
		{"setting", "app"}, {"setting", "app"}, {"setting", "app"},
		{"grant", `Odd "Name"`}, {"grant", "app"},
	}
	if len(got) != len(want) {
		t.Fatalf("parsed %d statements, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].kind != w.kind || got[i].role != w.role {
			t.Errorf("statement %d: %s %q, want %s %q", i, got[i].kind, got[i].role, w.kind, w.role)
		}
	}
	if a := got[1].attrs; len(a) != 5 || a[2].value != "-1" || a[3].value != "SCRAM-SHA-256$4096:x;y'z" || a[4].name != "VALID UNTIL" {
		t.Errorf("attributes: %+v", a)
	}
	if got[4].comment != "semi; colon\nand newline" || got[5].comment != "dollar; 'quoted' $$ text" || got[6].comment != "escaped ' quote; and \\ backslash" {
		t.Errorf("comments %q %q %q", got[4].comment, got[5].comment, got[6].comment)
	}
	if s := got[8]; s.db != "db" || s.param != "work_mem" || len(s.values) != 1 || s.values[0].text != "8MB" {
		t.Errorf("setting: %+v", s)
	}
	if s := got[9]; s.param != "myext.level" || s.values[0].text != "3" {
		t.Errorf("custom setting: %+v", s)
	}
	if g := got[10]; g.granted != "app" || !g.admin {
		t.Errorf("grant: %+v", g)
	}
}

// TestParseGlobalsRefuses: what pg_dumpall does not write about roles is
// refused, whatever quoting hides it in; nothing is split inside dollar
// quotes, strings or comments.
func TestParseGlobalsRefuses(t *testing.T) {
	for _, tc := range []struct{ script, want string }{
		{"CREATE ROLE evil; COMMENT ON ROLE evil IS $$'$$; ALTER ROLE postgres SUPERUSER; SELECT $$'$$;", "SELECT"},
		{"COMMENT ON ROLE evil IS $a$ $b$ ; $a$; DROP ROLE victim;", "DROP ROLE"},
		{"ALTER SYSTEM SET archive_command = 'id';", "ALTER SYSTEM"},
		{"COPY (SELECT 1) TO PROGRAM 'id';", "COPY"},
		{"CREATE ROLE evil SUPERUSER;", "CREATE ROLE"},
		{"ALTER ROLE evil WITH SUPERUSER RENAME TO x;", "RENAME"},
		{"ALTER ROLE evil SET log_statement TO 'all'; SELECT 1;", "SELECT"},
		{"GRANT ALL ON DATABASE victim TO evil;", "GRANT"},
		{"GRANT a, b TO evil;", "GRANT"},
		{"REVOKE victim FROM evil;", "REVOKE"},
		{"SET standard_conforming_strings = off;", "standard_conforming_strings"},
		{"COMMENT ON ROLE evil IS U&'\\0041';", "U&"},
		{"CREATE ROLE evil", "truncated"},
		{"COMMENT ON ROLE evil IS 'open;", "does not end"},
		{"COMMENT ON ROLE evil IS 'x' \\gexec", "backslash"},
	} {
		_, err := parseGlobals(tc.script)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want one naming %q", tc.script, err, tc.want)
		}
	}
}

// A socket URL reaches pgx and the tools as the socket's directory and
// port, the way libpq reads PGHOST=/dir.
func TestSocketURL(t *testing.T) {
	ci, err := parseSource(engines.Source{Name: "s", Engine: "postgres", Config: map[string]any{
		"url": "postgres://app@/app?host=/run/capsule/sock/&port=6543&sslmode=disable"}})
	if err != nil {
		t.Fatal(err)
	}
	if ci.host != "/run/capsule/sock" || ci.port != "6543" || ci.sslmode != "disable" {
		t.Fatalf("host %q port %q sslmode %q", ci.host, ci.port, ci.sslmode)
	}
	cc, err := connConfig(ci, "pw", "app")
	if err != nil {
		t.Fatal(err)
	}
	if cc.Host != "/run/capsule/sock" || cc.Port != 6543 || cc.Password != "pw" {
		t.Errorf("pgx config: host %q port %d", cc.Host, cc.Port)
	}
	env, err := toolEnv(ci, "pw")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(env, "\n")
	for _, want := range []string{"PGHOST=/run/capsule/sock", "PGPORT=6543", "PGPASSWORD=pw"} {
		if !strings.Contains(joined, want) {
			t.Errorf("tool environment lacks %s: %v", want, env)
		}
	}
}
