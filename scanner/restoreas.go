package scanner

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/requests"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sirupsen/logrus"
)

// Plan returns the current plan of that name, else one retired less than
// RetiredSources ago.
func (s *Scanner) Plan(name string) (Plan, bool) { return s.plan(name) }

// RestoredAs is the key of a Restore's or Verify's result details that
// names the PostgreSQL role the restore ran as, and why.
const RestoredAs = "restoredAs"

// RestoreAs chooses the role a Restore or Verify of a PostgreSQL plan
// runs as (executor.Config.RestoreAs); other sources pass unchanged. A
// restore swaps a side database in, which needs CREATEDB and ownership of
// the database it replaces (a verification, CREATEDB), and the platform's
// application role often lacks CREATEDB. The rule:
//
//   - the application role (POSTGRES_USER) when it has CREATEDB, owns the
//     database (or it does not exist yet) and is not a superuser: the
//     least privilege that works;
//   - else the postgres superuser, when the credentials Secret has
//     POSTGRESQL_ADMIN_PASSWORD: the source then sets allowSuperuser, for
//     this restore only, since the engine refuses a superuser without it
//     (a forged backup's SQL runs as the restoring role);
//   - else the application role, which then fails with the engine's
//     error naming what it lacks.
//
// Backups always run as the application role. The details say which
// role and why: restoredAs: "postgres (POSTGRESQL_ADMIN_PASSWORD: the
// application role lacks CREATEDB)". An error (the application role
// cannot connect) fails the run, which is retried.
func (s *Scanner) RestoreAs(ctx context.Context, kind requests.Kind, target engines.Source) (engines.Source, map[string]any, error) {
	p, ok := s.plan(target.Name)
	if !ok || p.Engine != "postgres" || target.Engine != "postgres" {
		return target, nil, nil
	}
	cfg := target.Config
	raw, _ := cfg["url"].(string)
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return target, nil, nil // the engine says what is wrong
	}
	user, db := u.User.Username(), strings.TrimPrefix(u.Path, "/")
	if all, _ := cfg["databases"].(string); all == "all" {
		db = ""
	}
	pw, err := target.Secret(ctx)
	if err != nil {
		return target, nil, err
	}
	role, err := probeRole(ctx, u.Hostname(), u.Port(), user, pw, db)
	if err != nil {
		return target, nil, fmt.Errorf("source %s: check the privileges of role %s before the %s: %w", target.Name, user, strings.ToLower(string(kind)), err)
	}
	var lacks []string
	if !role.createDB {
		lacks = append(lacks, "lacks CREATEDB")
	}
	if kind == requests.KindRestore && db != "" && !role.owns {
		lacks = append(lacks, "does not own database "+db)
	}
	if role.superuser {
		lacks = append(lacks, "is a superuser, which restores only through POSTGRESQL_ADMIN_PASSWORD")
	}
	why := strings.Join(lacks, " and ")
	if len(lacks) == 0 {
		return target, map[string]any{RestoredAs: user + " (the application role: it has CREATEDB and owns the database)"}, nil
	}
	if !p.hasAdmin {
		return target, map[string]any{RestoredAs: user + " (the application role " + why + ", and the credentials Secret has no POSTGRESQL_ADMIN_PASSWORD)"}, nil
	}
	admin := *u
	admin.User = url.User(AdminRole)
	as := engines.Source{Name: target.Name, Engine: target.Engine, Config: make(map[string]any, len(cfg)+1)}
	for k, v := range cfg {
		as.Config[k] = v
	}
	as.Config["url"] = admin.String()
	as.Config["allowSuperuser"] = true
	pwAdmin := p.admin
	as.Password = func(context.Context) (string, error) { return pwAdmin, nil }
	s.log.WithFields(logrus.Fields{"source": target.Name, "role": AdminRole, "application_role": user, "why": why}).
		Info("restoring as the postgres superuser (POSTGRESQL_ADMIN_PASSWORD): the application role cannot")
	return as, map[string]any{RestoredAs: AdminRole + " (POSTGRESQL_ADMIN_PASSWORD: the application role " + why + ")"}, nil
}

// roleInfo is what a role may do, as the server says.
type roleInfo struct {
	superuser, createDB bool
	// owns: the role owns the database, or it does not exist.
	owns bool
}

// probeRole connects as user and reads its attributes and whether it
// owns db. It connects to db, else (db absent) to postgres or template1,
// as the engine's restore does.
func probeRole(ctx context.Context, host, port, user, password, db string) (roleInfo, error) {
	if port == "" {
		port = "5432"
	}
	if _, err := strconv.Atoi(port); err != nil {
		return roleInfo{}, fmt.Errorf("port %q is not a number", port)
	}
	var conn *pgx.Conn
	var err error
	for _, d := range []string{db, "postgres", "template1"} {
		if d == "" {
			continue
		}
		cc, perr := pgx.ParseConfig("host=" + quoteConn(host) + " port=" + port + " user=" + quoteConn(user) +
			" dbname=" + quoteConn(d) + " sslmode=prefer connect_timeout=30 application_name=capsule")
		if perr != nil {
			return roleInfo{}, errors.New("invalid connection settings")
		}
		cc.Password = password
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		conn, err = pgx.ConnectConfig(cctx, cc)
		cancel()
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != "3D000" { // invalid_catalog_name
			break
		}
	}
	if err != nil {
		return roleInfo{}, fmt.Errorf("connect to %s:%s as %s: %w", host, port, user, scrub(err, password))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var r roleInfo
	err = conn.QueryRow(ctx, `SELECT r.rolsuper, r.rolcreatedb,
		COALESCE((SELECT d.datdba = r.oid FROM pg_database d WHERE d.datname = $1), true)
		FROM pg_roles r WHERE r.rolname = current_user`, db).Scan(&r.superuser, &r.createDB, &r.owns)
	if err != nil {
		return roleInfo{}, fmt.Errorf("read the attributes of role %s: %w", user, err)
	}
	return r, nil
}

func quoteConn(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, `'`, `\'`) + "'"
}

// scrub replaces the password in an error's text, should a driver echo it.
func scrub(err error, password string) error {
	if password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "********"))
}
