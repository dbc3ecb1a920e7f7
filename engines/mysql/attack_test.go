package mysql

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// forge returns a store whose dump.sql is dump, stored with its own
// sha256: what someone who can write the bucket (artifact and index)
// can make.
func forge(t *testing.T, dump string) *enginetest.Store {
	t.Helper()
	s := enginetest.NewStore()
	w, err := s.Create(artifactDump)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(dump)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return s
}

// inject puts attack into a real dump after the statements of its last
// database, every table made, before the dump's closing settings. It
// also drops the first line mariadb-dump writes to put its client in
// sandbox mode: a forger writes what they like.
func inject(t *testing.T, dump, attack string) string {
	t.Helper()
	const sandbox = "/*M!999999\\- enable the sandbox mode */"
	if !strings.HasPrefix(dump, sandbox) {
		t.Fatalf("the dump does not begin with %q", sandbox)
	}
	dump = strings.TrimPrefix(dump, sandbox)
	const end = "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n"
	i := strings.LastIndex(dump, end)
	if i < 0 {
		t.Fatalf("the dump has no %q", end)
	}
	return dump[:i] + attack + "\n" + dump[i:]
}

// world is what a forged restore must leave alone: the live database,
// another database on the server (a victim), the server's accounts and
// databases, the restoring account's grants, and files on the worker.
type world struct {
	f      *fixture
	victim string
	live   map[string]any
	vict   map[string]any
	users  [][]string
	grants [][]string
	dbs    [][]string
}

func (f *fixture) world(t *testing.T) *world {
	w := &world{f: f, victim: f.prefix + "_victim_" + randHex(3)}
	mustExec(t, f.admin, "CREATE DATABASE "+quoteName(w.victim))
	mustExec(t, f.admin, "CREATE TABLE "+quoteName(w.victim)+".secrets (id INT PRIMARY KEY, v VARCHAR(100))")
	mustExec(t, f.admin, "INSERT INTO "+quoteName(w.victim)+".secrets VALUES (1, 'the other tenant''s secret'), (2, 'another')")
	w.live, w.vict = f.snapshot(t, f.prefix), f.snapshot(t, w.victim)
	w.users, w.grants, w.dbs = w.accounts(t), w.privileges(t), w.schemas(t)
	return w
}

// accounts are the restoring account and those an attack plants
// (capsule_p_<the fixture's id>): other tests share the server.
func (w *world) accounts(t *testing.T) [][]string {
	return queryAll(t, w.f.admin, "SELECT User, Host FROM mysql.user WHERE User = ? OR User = ? ORDER BY 1, 2", w.f.user, w.f.planted())
}

// planted is the account attacks try to create.
func (f *fixture) planted() string { return strings.Replace(f.user, "capsule_t_", "capsule_p_", 1) }

func (w *world) privileges(t *testing.T) [][]string {
	return queryAll(t, w.f.admin, fmt.Sprintf("SHOW GRANTS FOR '%s'@'%%'", w.f.user))
}

func (w *world) schemas(t *testing.T) [][]string {
	return queryAll(t, w.f.admin, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ? ORDER BY 1", strings.ReplaceAll(w.f.prefix, "_", `\_`)+"%")
}

// unchanged fails the test if the restore touched anything outside its
// side schemas.
func (w *world) unchanged(t *testing.T) {
	t.Helper()
	if d := enginetest.DeepCompare(w.live, w.f.snapshot(t, w.f.prefix)); d != "" {
		t.Errorf("the live database changed: %s", d)
	}
	if d := enginetest.DeepCompare(w.vict, w.f.snapshot(t, w.victim)); d != "" {
		t.Errorf("another database (%s) changed: %s", w.victim, d)
	}
	if d := enginetest.DeepCompare(w.users, w.accounts(t)); d != "" {
		t.Errorf("the server's accounts changed: %s", d)
	}
	if d := enginetest.DeepCompare(w.grants, w.privileges(t)); d != "" {
		t.Errorf("the restoring account's grants changed: %s", d)
	}
	if d := enginetest.DeepCompare(w.dbs, w.schemas(t)); d != "" {
		t.Errorf("the server's databases changed: %s", d)
	}
}

// TestForgedDumps restores dumps forged from a real backup (artifact and
// index consistent, sha256 matching) that try to reach beyond the
// restore's target: the worker's shell and files, another database, the
// server's accounts and settings. Every one must end the restore failed
// with an error naming what was refused, and leave the live database,
// another database, the accounts, the grants and the worker's files as
// they were.
func TestForgedDumps(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.seed(t, f.prefix)
	store, info := enginetest.Backup(ctx, t, New(), f.source(nil))
	real := string(store.Bytes(artifactDump))
	var maxConn string
	if err := f.admin.QueryRow("SELECT @@GLOBAL.max_connections").Scan(&maxConn); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	// In attack and want: {file} is a file that must not appear,
	// {victim} the victim database quoted, {name} its name, {sql} a file
	// of SQL that changes the victim.
	for _, tc := range []struct {
		name, attack, want string
	}{
		{"ShellEscape", `\! touch {file}`, `client command "\\!"`},
		{"ShellEscapeMidLine", `INSERT INTO audit (msg) VALUES ('x'); \! touch {file}`, `client command "\\!"`},
		{"SystemCommand", `system touch {file}`, "system is a command of the mysql client"},
		{"SourceFile", `\. {sql}`, `client command "\\."`},
		{"SourceCommand", `source {sql}`, "source is a command of the mysql client"},
		{"ClientUse", "\\u {victim}\nUPDATE secrets SET v = 'pwned';", `client command "\\u"`},
		{"LowercaseUse", "use {victim};\nUPDATE secrets SET v = 'pwned';", "switches to database {name}"},
		{"UseAfterStatement", "INSERT INTO audit (msg) VALUES ('x'); USE {victim};\nUPDATE secrets SET v = 'pwned';", "switches to database {name}"},
		{"QualifiedUpdate", "UPDATE {victim}.secrets SET v = 'pwned';", "names database {name}"},
		{"QualifiedInsert", "INSERT INTO {victim}.`secrets` VALUES (3, 'planted');", "names database {name}"},
		{"CrossSchemaRead", "INSERT INTO audit (msg) SELECT v FROM {victim}.secrets;", "names database {name}"},
		{"VersionComment", "/*!50000 UPDATE {victim}.secrets SET v = 'pwned' */;", "names database {name}"},
		{"TriggerBody", "DELIMITER ;;\nCREATE TRIGGER evil AFTER INSERT ON audit FOR EACH ROW UPDATE {victim}.secrets SET v = 'pwned';;\nDELIMITER ;\nINSERT INTO audit (msg) VALUES ('fire');", "names database {name}"},
		{"DynamicSQL", "PREPARE s FROM 'UPDATE {victim}.secrets SET v = ''pwned''';\nEXECUTE s;", "dynamic SQL"},
		{"CreateDatabase", "create database if not exists {victim}_planted;", "creates or drops a database"},
		{"CreateUser", "CREATE USER '{planted}'@'%' IDENTIFIED BY 'x';", "manages accounts"},
		{"Grant", "GRANT SELECT ON {victim}.* TO CURRENT_USER;", "grants or revokes privileges"},
		{"SetGlobal", "SET GLOBAL max_connections = " + maxConn + ";", "global setting"},
		{"SetGlobalVar", "SET @@global.max_connections = " + maxConn + ";", "global setting"},
		{"IntoOutfile", "SELECT * FROM accounts INTO OUTFILE '{file}';", "writes a file"},
		{"LoadLocalFile", "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE audit (msg);", "reads a file"},
		{"RootDefiner", "CREATE DEFINER=`root`@`localhost` EVENT evil ON SCHEDULE AT CURRENT_TIMESTAMP DO UPDATE audit SET msg = 'x';", "would run as root@localhost"},
		{"FederatedTable", "CREATE TABLE fed (id INT) ENGINE=FEDERATED CONNECTION='mysql://root@127.0.0.1:3306/{name}/secrets';", "FEDERATED engine"},
		// Last: on a restore that runs them they break what follows.
		{"DropDatabase", "/*!50000 DROP DATABASE {victim} */;", "creates or drops a database"},
		{"SetPassword", "SET PASSWORD = PASSWORD('x');", "SET PASSWORD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := f.world(t)
			pwned := filepath.Join(dir, "pwned-"+randHex(6))
			sourced := filepath.Join(dir, "sourced-"+randHex(6)+".sql")
			if err := os.WriteFile(sourced, []byte("UPDATE "+quoteName(w.victim)+".secrets SET v = 'pwned';\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r := strings.NewReplacer("{file}", pwned, "{victim}", quoteName(w.victim), "{name}", w.victim, "{sql}", sourced, "{planted}", f.planted())
			attack, want := r.Replace(tc.attack), r.Replace(tc.want)
			forged := forge(t, inject(t, real, attack))
			_, err := New().Restore(ctx, forged.RestoreJob(t, "forged", f.source(nil), info, engines.RestoreOptions{DropPrevious: true}))
			if err == nil {
				t.Errorf("the restore of a dump with %q succeeded", attack)
			} else if !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not say what was refused (%q): %v", want, err)
			} else {
				t.Logf("refused: %v", err)
			}
			if _, err := os.Stat(pwned); err == nil {
				t.Errorf("the dump ran a command on the worker: %s exists", pwned)
			}
			w.unchanged(t)
			if got := queryAll(t, f.admin, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?", f.prefix+"\\_capsule\\_%"); len(got) != 0 {
				t.Errorf("side schemas remain: %v", got)
			}
		})
	}

	// A scheduled verification loads the backup too.
	t.Run("Verify", func(t *testing.T) {
		w := f.world(t)
		pwned := filepath.Join(dir, "pwned-"+randHex(6))
		forged := forge(t, inject(t, real, `\! touch `+pwned))
		rep, err := New().Verify(ctx, forged.RestoreJob(t, "vforged", f.source(nil), info, engines.RestoreOptions{}))
		if err == nil && rep.OK {
			t.Errorf("the verification of a forged dump passed: %+v", rep)
		}
		if rep != nil && (len(rep.Checks) == 0 || !strings.Contains(rep.Checks[0].Detail, "client command")) {
			t.Errorf("the report does not say what was refused: %+v", rep)
		}
		if _, err := os.Stat(pwned); err == nil {
			t.Errorf("the dump ran a command on the worker: %s exists", pwned)
		}
		w.unchanged(t)
	})
}
