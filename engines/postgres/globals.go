package postgres

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"
)

// maxGlobals bounds globals.sql, which a restore reads into memory (and
// so verifies in full) before it creates any role.
const maxGlobals = 64 << 20

// readGlobals reads the whole globals artifact; a damaged one fails with
// its *engines.ChecksumError.
func readGlobals(r io.Reader) (string, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxGlobals+1))
	if err != nil {
		return "", err
	}
	if len(data) > maxGlobals {
		return "", fmt.Errorf("%s is larger than %d bytes", globalsArtifact, maxGlobals)
	}
	return string(data), nil
}

// roleStatement is one statement of globals.sql about a role.
type roleStatement struct {
	kind string // "create", "alter", "comment", "grant", "set"
	role string // the role it creates or changes (for grant: the member)
	sql  string
}

var (
	identRE     = `("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`
	createRole  = regexp.MustCompile(`(?is)^CREATE\s+ROLE\s+` + identRE)
	alterRole   = regexp.MustCompile(`(?is)^ALTER\s+ROLE\s+` + identRE + `\s`)
	commentRole = regexp.MustCompile(`(?is)^COMMENT\s+ON\s+ROLE\s+` + identRE + `\s`)
	grantRole   = regexp.MustCompile(`(?is)^GRANT\s+` + identRE + `\s+TO\s+` + identRE)
	grantOn     = regexp.MustCompile(`(?is)^GRANT\s.*\sON\s`)
	setStmt     = regexp.MustCompile(`(?is)^SET\s`)
)

// parseGlobals picks the role statements out of pg_dumpall
// --globals-only output. Everything else (tablespaces, privileges on
// parameters, psql meta-commands) is left out.
func parseGlobals(script string) []roleStatement {
	var out []roleStatement
	for _, stmt := range splitSQL(script) {
		switch {
		case setStmt.MatchString(stmt):
			out = append(out, roleStatement{kind: "set", sql: stmt})
		case createRole.MatchString(stmt):
			out = append(out, roleStatement{kind: "create", role: unquoteIdent(createRole.FindStringSubmatch(stmt)[1]), sql: stmt})
		case alterRole.MatchString(stmt):
			out = append(out, roleStatement{kind: "alter", role: unquoteIdent(alterRole.FindStringSubmatch(stmt)[1]), sql: stmt})
		case commentRole.MatchString(stmt):
			out = append(out, roleStatement{kind: "comment", role: unquoteIdent(commentRole.FindStringSubmatch(stmt)[1]), sql: stmt})
		case grantRole.MatchString(stmt) && !grantOn.MatchString(stmt):
			out = append(out, roleStatement{kind: "grant", role: unquoteIdent(grantRole.FindStringSubmatch(stmt)[2]), sql: stmt})
		}
	}
	return out
}

func unquoteIdent(s string) string {
	if strings.HasPrefix(s, `"`) {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return strings.ToLower(s)
}

// splitSQL splits a script into statements at semicolons outside quotes
// and comments, dropping comments and psql meta-command lines (\connect,
// \restrict).
func splitSQL(script string) []string {
	var (
		out  []string
		cur  strings.Builder
		i    int
		line = true // at the start of a line
	)
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for i < len(script) {
		c := script[i]
		switch {
		case line && c == '\\':
			for i < len(script) && script[i] != '\n' {
				i++
			}
			continue
		case c == '-' && strings.HasPrefix(script[i:], "--"):
			for i < len(script) && script[i] != '\n' {
				i++
			}
			continue
		case c == '/' && strings.HasPrefix(script[i:], "/*"):
			depth := 0
			for i < len(script) {
				if strings.HasPrefix(script[i:], "/*") {
					depth++
					i += 2
				} else if strings.HasPrefix(script[i:], "*/") {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
			cur.WriteByte(' ')
			continue
		case c == '\'' || c == '"':
			escapes := c == '\'' && i > 0 && (script[i-1] == 'E' || script[i-1] == 'e') &&
				(i < 2 || !isIdentByte(script[i-2]))
			j := i + 1
			for j < len(script) {
				if escapes && script[j] == '\\' {
					j += 2
					continue
				}
				if script[j] == c {
					if j+1 < len(script) && script[j+1] == c {
						j += 2
						continue
					}
					break
				}
				j++
			}
			if j >= len(script) {
				j = len(script) - 1
			}
			cur.WriteString(script[i : j+1])
			i = j + 1
			line = false
			continue
		case c == ';':
			flush()
			i++
			line = false
			continue
		}
		cur.WriteByte(c)
		line = c == '\n' || (line && (c == ' ' || c == '\t'))
		i++
	}
	flush()
	return out
}

func isIdentByte(b byte) bool {
	return b == '_' || b == '$' || (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || b >= 0x80
}

// createMissingRoles runs the statements of globals.sql that create the
// roles the server lacks, and set their attributes, comments and
// memberships. Existing roles are never changed. It returns the roles it
// created, in order; on error, those created so far.
func createMissingRoles(ctx context.Context, conn *pgx.Conn, script string, include func(kind, name string) bool, log logrus.FieldLogger) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT rolname FROM pg_roles`)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	exists := map[string]bool{}
	for _, n := range names {
		exists[n] = true
	}
	stmts := parseGlobals(script)
	created := map[string]bool{}
	var order []string
	// Statements never go into errors or logs: they hold password hashes.
	for _, s := range stmts {
		if s.kind == "set" {
			if _, err := conn.Exec(ctx, s.sql); err != nil {
				return order, fmt.Errorf("restore roles: session setting: %w", err)
			}
			continue
		}
		if s.kind != "create" || exists[s.role] || (include != nil && !include("role", s.role)) {
			continue
		}
		if _, err := conn.Exec(ctx, s.sql); err != nil {
			return order, fmt.Errorf("restore roles: create role %s: %w", s.role, err)
		}
		created[s.role] = true
		order = append(order, s.role)
	}
	for _, s := range stmts {
		if s.kind == "set" || s.kind == "create" || !created[s.role] {
			continue
		}
		if _, err := conn.Exec(ctx, s.sql); err != nil {
			if s.kind == "grant" {
				// A membership in a role that no longer exists: the
				// role itself is still useful.
				log.WithFields(logrus.Fields{"role": s.role, "error": err.Error()}).Warn("could not restore a role membership")
				continue
			}
			return order, fmt.Errorf("restore roles: %s role %s: %w", s.kind, s.role, err)
		}
	}
	if len(order) > 0 {
		log.WithFields(logrus.Fields{"roles": order}).Info("created missing roles")
	}
	return order, nil
}
