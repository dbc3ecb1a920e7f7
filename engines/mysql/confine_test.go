package mysql

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// TestServerConfinesTheLoad turns the checker off and shows that the
// server alone keeps a forged dump inside the side schemas: the account
// the dump runs as may do nothing anywhere else, and no client runs a
// command. The checker is the second layer over this one.
func TestServerConfinesTheLoad(t *testing.T) {
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
	for _, tc := range []struct {
		name, attack, want string
	}{
		{"ShellEscape", `\! touch {file}`, "error in your SQL syntax"},
		{"QualifiedUpdate", "UPDATE {victim}.secrets SET v = 'pwned';", "command denied"},
		{"CrossSchemaRead", "INSERT INTO audit (msg) SELECT v FROM {victim}.secrets;", "command denied"},
		{"UseOther", "USE {victim};", "which the backup index does not list"}, // USE is always checked
		{"TriggerFires", "CREATE TRIGGER evil AFTER INSERT ON audit FOR EACH ROW UPDATE {victim}.secrets SET v = 'pwned';\nINSERT INTO audit (msg) VALUES ('fire');", "command denied"},
		{"DynamicSQL", "PREPARE s FROM 'UPDATE {victim}.secrets SET v = ''pwned''';\nEXECUTE s;", "command denied"},
		{"CreateDatabase", "CREATE DATABASE {db};", "Access denied"},
		{"DropDatabase", "DROP DATABASE {victim};", "Access denied"},
		{"CreateUser", "CREATE USER '{planted}'@'%' IDENTIFIED BY 'x';", "Access denied"},
		{"Grant", "GRANT SELECT ON {victim}.* TO CURRENT_USER;", "Access denied"},
		{"SetGlobal", "SET GLOBAL max_connections = " + maxConn + ";", "Access denied"},
		{"IntoOutfile", "SELECT * FROM accounts INTO OUTFILE '{file}';", "Access denied"},
		{"LoadServerFile", "LOAD DATA INFILE '/etc/hostname' INTO TABLE audit (msg);", "Access denied"},
		{"LoadLocalFile", "LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE audit (msg);", "not registered"},
		{"RootDefiner", "CREATE DEFINER=`root`@`localhost` PROCEDURE evil() UPDATE audit SET msg = 'x';", "would run as root@localhost"}, // definers are always checked
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := f.world(t)
			pwned := filepath.Join(dir, "pwned-"+randHex(6))
			r := strings.NewReplacer("{file}", pwned, "{victim}", quoteName(w.victim), "{planted}", f.planted(), "{db}", quoteName(w.victim+"_planted"))
			forged := forge(t, inject(t, real, r.Replace(tc.attack)))
			_, err := (&Engine{unchecked: true}).Restore(ctx, forged.RestoreJob(t, "confined", f.source(nil), info, engines.RestoreOptions{DropPrevious: true}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want the server's refusal (%q)", err, tc.want)
			} else {
				t.Logf("refused by the server: %v", err)
			}
			if _, err := os.Stat(pwned); err == nil {
				t.Errorf("%s exists", pwned)
			}
			w.unchanged(t)
		})
	}
	// The loading accounts are dropped, with their grants.
	rows, err := f.admin.Query("SELECT User, Db FROM mysql.db WHERE User LIKE 'capsule\\_r\\_%'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var user, db string
		if err := rows.Scan(&user, &db); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(db, grantPattern(f.prefix, false)) {
			t.Errorf("loading account %s remains, with a grant on %s", user, db)
		}
	}
}
