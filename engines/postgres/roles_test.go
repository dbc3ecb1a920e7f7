package postgres

import (
	"context"
	"strings"
	"testing"
)

// TestRestoreRolesPolicy applies forged role statements with a real
// server under the policy of a restore without allowSuperuser (a role
// with CREATEROLE on PostgreSQL 16 and later): roles it creates get no
// power beyond themselves.
func TestRestoreRolesPolicy(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	existing, evil := db.name+"_existing", db.name+"_evil"
	db.exec(ctx, t, "postgres", `CREATE ROLE `+ident(existing)+` NOLOGIN`)
	conn := adminConnect(ctx, t, "postgres")
	defer conn.Close(ctx)
	pol := rolesPolicy{restoring: "postgres", include: func(_, n string) bool { return strings.HasPrefix(n, db.name) }}
	log, _ := captureLog(t)
	for _, tc := range []struct{ script, want string }{
		{"CREATE ROLE " + ident(evil) + ";\nALTER ROLE " + ident(evil) + " WITH LOGIN SUPERUSER PASSWORD 'x';", "has SUPERUSER"},
		{"CREATE ROLE " + ident(evil) + ";\nALTER ROLE " + ident(evil) + " WITH CREATEROLE;", "has CREATEROLE"},
		{"CREATE ROLE " + ident(evil) + ";\nALTER ROLE " + ident(evil) + " WITH BYPASSRLS;", "has BYPASSRLS"},
		{"CREATE ROLE " + ident(evil) + ";\nALTER ROLE " + ident(evil) + " SET session_preload_libraries TO 'evil';", "only a superuser may set"},
	} {
		roles, err := restoreRoles(ctx, conn, tc.script, pol, log)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "allowSuperuser") || len(roles) != 0 {
			t.Errorf("%q: roles %v, err = %v; want a refusal naming %q before any role is made", tc.script, roles, err, tc.want)
		}
		if n := db.value(ctx, t, "postgres", `SELECT count(*)::text FROM pg_roles WHERE rolname = $1`, evil); n != "0" {
			t.Fatalf("role %s was created", evil)
		}
	}
	// Memberships in roles the restore did not create are left out;
	// those among its own roles and its ordinary settings are kept.
	script := "CREATE ROLE " + ident(evil) + ";\nCREATE ROLE " + ident(evil+"_grp") + ";\n" +
		"ALTER ROLE " + ident(evil) + " WITH LOGIN NOSUPERUSER PASSWORD 'SCRAM-SHA-256$4096:x'; ALTER ROLE " + ident(evil) + " SET search_path TO 'a', 'b';\n" +
		"GRANT pg_execute_server_program TO " + ident(evil) + ";\nGRANT " + ident(existing) + " TO " + ident(evil) + ";\nGRANT " + ident(evil+"_grp") + " TO " + ident(evil) + ";\n"
	roles, err := restoreRoles(ctx, conn, script, pol, log)
	if err != nil || len(roles) != 2 {
		t.Fatalf("roles %v, err %v", roles, err)
	}
	got := db.value(ctx, t, "postgres", `SELECT string_agg(b.rolname, ',' ORDER BY b.rolname) FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1`, evil)
	if got != evil+"_grp" {
		t.Errorf("%s is a member of %s, want only %s_grp", evil, got, evil)
	}
	if cfg := db.value(ctx, t, "postgres", `SELECT array_to_string(rolconfig, ';') FROM pg_roles WHERE rolname = $1`, evil); cfg != "search_path=a, b" {
		t.Errorf("role settings %q", cfg)
	}
}
