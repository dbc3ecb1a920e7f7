package postgres

import (
	"context"
	"errors"
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

// globals.sql is data, never authority: whoever can write the bucket can
// forge it. A restore never runs its text. It reads it with a lexer that
// knows PostgreSQL's quoting (dollar quotes, E'' strings, quoted names,
// nested comments), recognizes only the statements pg_dumpall
// --globals-only writes about roles, checks each against what the
// restore may do, and runs SQL it renders itself from the parsed names
// and values.

type pgTokKind uint8

const (
	pgWord   pgTokKind = iota // an unquoted name or keyword, lower-cased
	pgIdent                   // a "quoted" name
	pgString                  // a string constant, its value decoded
	pgNumber                  // a number
	pgPunct                   // an operator or punctuation
)

type pgTok struct {
	kind pgTokKind
	text string
}

// pgStatement is one statement of globals.sql, as tokens; meta is set
// for a psql meta-command line (\connect, \restrict).
type pgStatement struct {
	toks []pgTok
	meta string
	line int
}

func isPgIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isPgIdentByte(c byte) bool {
	return isPgIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

var dollarTag = regexp.MustCompile(`^\$([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$`)

// lexGlobals splits a script into statements of tokens at semicolons
// outside quotes, dollar quotes and comments.
func lexGlobals(script string) ([]pgStatement, error) {
	var (
		out  []pgStatement
		cur  pgStatement
		line = 1
	)
	cur.line = 1
	flush := func() {
		if len(cur.toks) > 0 {
			out = append(out, cur)
		}
		cur = pgStatement{line: line}
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s line %d: %s", globalsArtifact, line, fmt.Sprintf(format, args...))
	}
	s := script
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f':
			i++
		case c == '\\':
			if len(cur.toks) > 0 {
				return nil, bad("a backslash outside a string")
			}
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				end = len(s) - i
			}
			out = append(out, pgStatement{meta: s[i : i+end], line: line})
			i += end
		case c == '-' && strings.HasPrefix(s[i:], "--"):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && strings.HasPrefix(s[i:], "/*"):
			depth := 0
			for {
				switch {
				case i >= len(s):
					return nil, bad("a comment does not end")
				case strings.HasPrefix(s[i:], "/*"):
					depth++
					i += 2
					continue
				case strings.HasPrefix(s[i:], "*/"):
					depth--
					i += 2
				default:
					if s[i] == '\n' {
						line++
					}
					i++
					continue
				}
				if depth == 0 {
					break
				}
			}
		case c == ';':
			flush()
			i++
		case c == '\'' || (c == 'E' || c == 'e') && i+1 < len(s) && s[i+1] == '\'':
			escapes := c != '\''
			if escapes {
				i++
			}
			v, n, err := pgQuoted(s[i:], '\'', escapes)
			if err != nil {
				return nil, bad("%v", err)
			}
			line += strings.Count(s[i:i+n], "\n")
			cur.toks = append(cur.toks, pgTok{kind: pgString, text: v})
			i += n
		case c == '"':
			v, n, err := pgQuoted(s[i:], '"', false)
			if err != nil {
				return nil, bad("%v", err)
			}
			line += strings.Count(s[i:i+n], "\n")
			cur.toks = append(cur.toks, pgTok{kind: pgIdent, text: v})
			i += n
		case c == '$' && dollarTag.MatchString(s[i:]):
			tag := dollarTag.FindString(s[i:])
			end := strings.Index(s[i+len(tag):], tag)
			if end < 0 {
				return nil, bad("a dollar-quoted string does not end")
			}
			v := s[i+len(tag) : i+len(tag)+end]
			line += strings.Count(v, "\n")
			cur.toks = append(cur.toks, pgTok{kind: pgString, text: v})
			i += len(tag) + end + len(tag)
		case (c == 'U' || c == 'u') && i+2 < len(s) && s[i+1] == '&' && (s[i+2] == '\'' || s[i+2] == '"'):
			return nil, bad("a U& (Unicode escape) string, which pg_dumpall does not write")
		case isPgIdentStart(c):
			j := i
			for j < len(s) && isPgIdentByte(s[j]) {
				j++
			}
			cur.toks = append(cur.toks, pgTok{kind: pgWord, text: strings.ToLower(s[i:j])})
			i = j
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			j := i
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == 'e' || s[j] == 'E') {
				j++
			}
			cur.toks = append(cur.toks, pgTok{kind: pgNumber, text: s[i:j]})
			i = j
		default:
			cur.toks = append(cur.toks, pgTok{kind: pgPunct, text: string(c)})
			i++
		}
	}
	if len(cur.toks) > 0 {
		return nil, errors.New(globalsArtifact + ": the last statement has no semicolon: the file is truncated")
	}
	return out, nil
}

// pgQuoted reads a quoted string or name at s[0], returning its value
// and length; doubled quotes stand for one, and with escapes (E”)
// backslash sequences are decoded.
func pgQuoted(s string, q byte, escapes bool) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == q && i+1 < len(s) && s[i+1] == q:
			b.WriteByte(q)
			i++
		case c == q:
			return b.String(), i + 1, nil
		case c == '\\' && escapes && i+1 < len(s):
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case '\\', '\'', '"':
				b.WriteByte(s[i])
			default:
				return "", 0, fmt.Errorf("an escape (\\%c) capsule does not read in an E'' string", s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, errors.New("a quoted string or name does not end")
}

// roleStatement is one statement of globals.sql about a role, parsed.
type roleStatement struct {
	kind string // create, attrs, setting, comment, grant
	role string // the role it creates or changes (for grant: the member)
	line int
	// attrs: the options of ALTER ROLE … WITH, upper-case, with their
	// values (PASSWORD, VALID UNTIL, CONNECTION LIMIT).
	attrs []roleAttr
	// setting: ALTER ROLE … [IN DATABASE db] SET param TO values.
	db, param string
	values    []pgTok
	// comment: its text (null: COMMENT … IS NULL).
	comment string
	null    bool
	// grant: the role granted, and WITH ADMIN OPTION.
	granted string
	admin   bool
}

type roleAttr struct {
	name  string // LOGIN, NOSUPERUSER, PASSWORD, VALID UNTIL, CONNECTION LIMIT, …
	value string
	null  bool // PASSWORD NULL
}

// elevated are the role attributes with power beyond the role's own
// objects: only with allowSuperuser does a restore give them.
var elevated = map[string]bool{"SUPERUSER": true, "REPLICATION": true, "BYPASSRLS": true, "CREATEROLE": true}

var plainAttrs = map[string]bool{
	"SUPERUSER": true, "NOSUPERUSER": true, "CREATEDB": true, "NOCREATEDB": true,
	"CREATEROLE": true, "NOCREATEROLE": true, "INHERIT": true, "NOINHERIT": true,
	"LOGIN": true, "NOLOGIN": true, "REPLICATION": true, "NOREPLICATION": true,
	"BYPASSRLS": true, "NOBYPASSRLS": true,
}

// errNotRoles marks a statement of globals.sql capsule does not apply
// and does not skip: the restore refuses the file.
type globalsError struct {
	line   int
	reason string
}

func (e *globalsError) Error() string {
	return fmt.Sprintf("%s line %d: %s", globalsArtifact, e.line, e.reason)
}

// parseGlobals reads pg_dumpall --globals-only output into the role
// statements a restore may apply. Tablespaces, privileges on
// tablespaces and parameters, session settings and psql meta-commands
// are left out; any other statement is refused.
func parseGlobals(script string) ([]roleStatement, error) {
	stmts, err := lexGlobals(script)
	if err != nil {
		return nil, err
	}
	var out []roleStatement
	for _, st := range stmts {
		if st.meta != "" {
			continue
		}
		rs, skip, err := parseRoleStatement(st)
		if err != nil {
			return nil, err
		}
		if !skip {
			out = append(out, rs)
		}
	}
	return out, nil
}

// tokens walks one statement's tokens.
type tokens struct {
	t    []pgTok
	i    int
	line int
}

func (p *tokens) peek(k int) pgTok {
	if p.i+k < len(p.t) {
		return p.t[p.i+k]
	}
	return pgTok{kind: pgPunct}
}

func (p *tokens) word(w ...string) bool {
	for k, x := range w {
		if t := p.peek(k); t.kind != pgWord || t.text != x {
			return false
		}
	}
	p.i += len(w)
	return true
}

func (p *tokens) name() (string, bool) {
	t := p.peek(0)
	if t.kind != pgWord && t.kind != pgIdent {
		return "", false
	}
	p.i++
	return t.text, true
}

func (p *tokens) done() bool { return p.i >= len(p.t) }

func (p *tokens) fail(format string, args ...any) error {
	return &globalsError{line: p.line, reason: fmt.Sprintf(format, args...)}
}

// first names the statement for an error: its first words.
func (p *tokens) first() string {
	var w []string
	for _, t := range p.t[:min(3, len(p.t))] {
		if t.kind != pgWord {
			break
		}
		w = append(w, strings.ToUpper(t.text))
	}
	return strings.Join(w, " ")
}

func parseRoleStatement(st pgStatement) (rs roleStatement, skip bool, err error) {
	p := &tokens{t: st.toks, line: st.line}
	rs.line = st.line
	shape := func() error {
		return p.fail("a %s statement of a shape pg_dumpall does not write", p.first())
	}
	switch {
	case p.word("set"):
		// Session settings of pg_dumpall's preamble: not run. The lexer
		// reads strings as standard_conforming_strings = on says.
		if n, _ := p.name(); n == "standard_conforming_strings" {
			p.word("to")
			if p.peek(0).text == "=" {
				p.i++
			}
			if v := p.peek(0).text; v == "off" || v == "false" {
				return rs, false, p.fail("SET standard_conforming_strings = off: capsule reads only standard strings")
			}
		}
		return rs, true, nil
	case p.word("create", "role"):
		rs.kind = "create"
		var ok bool
		if rs.role, ok = p.name(); !ok || !p.done() {
			return rs, false, shape()
		}
	case p.word("alter", "role"):
		var ok bool
		if rs.role, ok = p.name(); !ok {
			return rs, false, shape()
		}
		if p.word("in", "database") {
			if rs.db, ok = p.name(); !ok || p.peek(0).text != "set" {
				return rs, false, shape()
			}
		}
		if p.word("set") {
			return rs, false, parseRoleSetting(p, &rs)
		}
		rs.kind = "attrs"
		p.word("with")
		for !p.done() {
			t := p.peek(0)
			up := strings.ToUpper(t.text)
			switch {
			case t.kind == pgWord && plainAttrs[up]:
				rs.attrs = append(rs.attrs, roleAttr{name: up})
				p.i++
			case p.word("connection", "limit"):
				v := p.peek(0).text
				if p.peek(0).text == "-" && p.peek(1).kind == pgNumber {
					v = "-" + p.peek(1).text
					p.i++
				} else if p.peek(0).kind != pgNumber {
					return rs, false, shape()
				}
				p.i++
				if strings.ContainsAny(v[1:], "-.eE") {
					return rs, false, shape()
				}
				rs.attrs = append(rs.attrs, roleAttr{name: "CONNECTION LIMIT", value: v})
			case p.word("encrypted", "password"), p.word("password"):
				if p.word("null") {
					rs.attrs = append(rs.attrs, roleAttr{name: "PASSWORD", null: true})
					continue
				}
				if p.peek(0).kind != pgString {
					return rs, false, shape()
				}
				rs.attrs = append(rs.attrs, roleAttr{name: "PASSWORD", value: p.peek(0).text})
				p.i++
			case p.word("valid", "until"):
				if p.peek(0).kind != pgString {
					return rs, false, shape()
				}
				rs.attrs = append(rs.attrs, roleAttr{name: "VALID UNTIL", value: p.peek(0).text})
				p.i++
			default:
				return rs, false, p.fail("ALTER ROLE %s with an option capsule does not restore (%s)", rs.role, strings.ToUpper(t.text))
			}
		}
	case p.word("comment", "on", "role"):
		rs.kind = "comment"
		var ok bool
		if rs.role, ok = p.name(); !ok || !p.word("is") {
			return rs, false, shape()
		}
		switch t := p.peek(0); {
		case t.kind == pgString:
			rs.comment = t.text
		case t.kind == pgWord && t.text == "null":
			rs.null = true
		default:
			return rs, false, shape()
		}
		p.i++
		if !p.done() {
			return rs, false, shape()
		}
	case p.word("grant"), p.word("revoke"):
		// Privileges on tablespaces and parameters are not restored.
		for k := p.i; k < len(p.t); k++ {
			if p.t[k].kind == pgWord && p.t[k].text == "on" {
				if n := p.t[min(k+1, len(p.t)-1)]; n.kind == pgWord && (n.text == "tablespace" || n.text == "parameter") {
					return rs, true, nil
				}
				return rs, false, p.fail("a %s on something other than a tablespace or a parameter", p.first())
			}
		}
		if p.t[0].text == "revoke" {
			return rs, false, shape()
		}
		rs.kind = "grant"
		var ok bool
		if rs.granted, ok = p.name(); !ok || !p.word("to") {
			return rs, false, shape()
		}
		if rs.role, ok = p.name(); !ok {
			return rs, false, shape()
		}
		if p.word("with", "admin", "option") {
			rs.admin = true
		} else if p.word("with") {
			// PostgreSQL 16: WITH ADMIN x, INHERIT x, SET x.
			for {
				opt, ok := p.name()
				val, ok2 := p.name()
				if !ok || !ok2 || (opt != "admin" && opt != "inherit" && opt != "set") || (val != "true" && val != "false" && val != "option") {
					return rs, false, shape()
				}
				if opt == "admin" && val != "false" {
					rs.admin = true
				}
				if p.peek(0).text != "," {
					break
				}
				p.i++
			}
		}
		if p.word("granted", "by") {
			if _, ok := p.name(); !ok {
				return rs, false, shape()
			}
		}
		if !p.done() {
			return rs, false, shape()
		}
	case p.word("create", "tablespace"), p.word("alter", "tablespace"), p.word("comment", "on", "tablespace"), p.word("security", "label"):
		return rs, true, nil
	default:
		return rs, false, p.fail("a %s statement, which capsule does not apply: globals.sql restores roles only", p.first())
	}
	return rs, false, nil
}

// parseRoleSetting reads the rest of ALTER ROLE … SET param TO values.
func parseRoleSetting(p *tokens, rs *roleStatement) error {
	rs.kind = "setting"
	var ok bool
	if rs.param, ok = p.name(); !ok {
		return p.fail("ALTER ROLE %s SET without a parameter", rs.role)
	}
	for p.peek(0).text == "." { // a custom parameter: ext.name
		p.i++
		n, ok := p.name()
		if !ok {
			return p.fail("ALTER ROLE %s SET %s.: no name", rs.role, rs.param)
		}
		rs.param += "." + n
	}
	if !p.word("to") {
		if p.peek(0).text != "=" {
			return p.fail("ALTER ROLE %s SET %s without TO", rs.role, rs.param)
		}
		p.i++
	}
	for {
		t := p.peek(0)
		switch {
		case t.kind == pgString || t.kind == pgNumber || t.kind == pgWord || t.kind == pgIdent:
			rs.values = append(rs.values, t)
			p.i++
		case t.text == "-" && p.peek(1).kind == pgNumber:
			rs.values = append(rs.values, pgTok{kind: pgNumber, text: "-" + p.peek(1).text})
			p.i += 2
		default:
			return p.fail("ALTER ROLE %s SET %s to a value capsule does not read", rs.role, rs.param)
		}
		if p.done() {
			return nil
		}
		if p.peek(0).text != "," {
			return p.fail("ALTER ROLE %s SET %s to a value capsule does not read", rs.role, rs.param)
		}
		p.i++
	}
}

// rolesPolicy is what a restore may do with the roles of globals.sql.
type rolesPolicy struct {
	// allowSuperuser: the source allows superuser restores; only then
	// are elevated attributes, superuser-only settings and memberships
	// in roles the restore did not create restored.
	allowSuperuser bool
	// restoring is the role the restore runs as.
	restoring string
	include   func(kind, name string) bool
}

// restoreRoles creates the roles of globals.sql the server lacks, with
// the attributes, settings, comments and memberships the file gives
// them, as SQL it renders itself. Existing roles (the restoring role
// among them) are never changed. Every statement is checked before any
// runs. It returns the roles it created, in order; on error, those
// created so far.
func restoreRoles(ctx context.Context, conn *pgx.Conn, script string, pol rolesPolicy, log logrus.FieldLogger) ([]string, error) {
	stmts, err := parseGlobals(script)
	if err != nil {
		return nil, fmt.Errorf("restore roles: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT rolname FROM pg_roles`)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	exists := map[string]bool{pol.restoring: true}
	for _, n := range names {
		exists[n] = true
	}
	created := map[string]bool{}
	var order, plan []string
	for _, s := range stmts {
		if s.kind != "create" || exists[s.role] || created[s.role] || (pol.include != nil && !pol.include("role", s.role)) {
			continue
		}
		if strings.HasPrefix(s.role, "pg_") {
			return nil, &globalsError{line: s.line, reason: fmt.Sprintf("role %s: names beginning with pg_ are the server's own", s.role)}
		}
		created[s.role] = true
		order = append(order, s.role)
		plan = append(plan, `CREATE ROLE `+ident(s.role))
	}
	refuse := func(s roleStatement, format string, args ...any) error {
		return &globalsError{line: s.line, reason: fmt.Sprintf(format, args...) + ": set allowSuperuser: true on the source to restore it, or restore with option roles=skip"}
	}
	type grant struct {
		sql             string
		member, granted string
	}
	var grants []grant
	for _, s := range stmts {
		if s.kind == "create" || !created[s.role] {
			continue // about a role that existed before: never changed
		}
		switch s.kind {
		case "attrs":
			q := `ALTER ROLE ` + ident(s.role) + ` WITH`
			for _, a := range s.attrs {
				if elevated[a.name] && !pol.allowSuperuser {
					return nil, refuse(s, "role %s has %s", s.role, a.name)
				}
				switch {
				case a.null:
					q += ` PASSWORD NULL`
				case a.name == "PASSWORD" || a.name == "VALID UNTIL":
					q += ` ` + a.name + ` ` + literal(a.value)
				case a.name == "CONNECTION LIMIT":
					q += ` CONNECTION LIMIT ` + a.value
				default:
					q += ` ` + a.name
				}
			}
			plan = append(plan, q)
		case "setting":
			var context string
			err := conn.QueryRow(ctx, `SELECT context FROM pg_settings WHERE name = $1`, s.param).Scan(&context)
			switch {
			case errors.Is(err, pgx.ErrNoRows) && strings.Contains(s.param, "."):
				context = "user" // a custom (extension's) parameter
			case err != nil:
				return nil, &globalsError{line: s.line, reason: fmt.Sprintf("role %s: setting %s: %v", s.role, s.param, err)}
			}
			if context != "user" && !pol.allowSuperuser {
				return nil, refuse(s, "role %s sets %s, a setting only a superuser may set", s.role, s.param)
			}
			q := `ALTER ROLE ` + ident(s.role)
			if s.db != "" {
				q += ` IN DATABASE ` + ident(s.db)
			}
			q += ` SET ` + identPath(s.param) + ` TO `
			for k, v := range s.values {
				if k > 0 {
					q += `, `
				}
				switch v.kind {
				case pgNumber:
					if !numberRE.MatchString(v.text) {
						return nil, &globalsError{line: s.line, reason: fmt.Sprintf("role %s: setting %s: %q is not a number", s.role, s.param, v.text)}
					}
					q += v.text
				default:
					q += literal(v.text)
				}
			}
			plan = append(plan, q)
		case "comment":
			v := `NULL`
			if !s.null {
				v = literal(s.comment)
			}
			plan = append(plan, `COMMENT ON ROLE `+ident(s.role)+` IS `+v)
		case "grant":
			if !created[s.granted] && !pol.allowSuperuser {
				log.WithFields(logrus.Fields{"role": s.role, "member_of": s.granted}).Warn("a restored role's membership in a role that existed before is not restored (allowSuperuser is off): grant it if it is wanted")
				continue
			}
			q := `GRANT ` + ident(s.granted) + ` TO ` + ident(s.role)
			if s.admin {
				q += ` WITH ADMIN OPTION`
			}
			grants = append(grants, grant{sql: q, member: s.role, granted: s.granted})
		}
	}
	// Statements never go into errors or logs: they hold password hashes.
	var done []string
	for k, q := range plan {
		if _, err := conn.Exec(ctx, q); err != nil {
			what := "role statement"
			if k < len(order) {
				what = "create role " + order[k]
			}
			return done, fmt.Errorf("restore roles: %s: %w", what, err)
		}
		if k < len(order) {
			done = append(done, order[k])
		}
	}
	for _, g := range grants {
		if _, err := conn.Exec(ctx, g.sql); err != nil {
			// A membership in a role that no longer exists: the role
			// itself is still useful.
			log.WithFields(logrus.Fields{"role": g.member, "member_of": g.granted, "error": err.Error()}).Warn("could not restore a role membership")
		}
	}
	if len(order) > 0 {
		log.WithFields(logrus.Fields{"roles": order}).Info("created missing roles")
	}
	return order, nil
}

var numberRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// identPath quotes a parameter name, each dotted part on its own.
func identPath(p string) string {
	parts := strings.Split(p, ".")
	for i, s := range parts {
		parts[i] = ident(s)
	}
	return strings.Join(parts, ".")
}
