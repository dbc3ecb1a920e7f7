package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	driver "github.com/go-sql-driver/mysql"
	"github.com/sirupsen/logrus"
)

// A dump is data, never authority: whoever can write to the bucket can
// forge one (with a matching sha256: the index is in the bucket too). So
// a restore loads it in two layers:
//
//  1. The server confines it. The dump runs as a temporary account made
//     for this load, which holds ALL PRIVILEGES on the side schemas and
//     nothing else (no global privilege, no GRANT OPTION), and which is
//     dropped when the load ends. Whatever the dump says, the server
//     refuses it anything outside the side schemas: another database,
//     the live target, accounts, files (FILE), global settings.
//  2. The checker refuses what a dump made by mysqldump or mariadb-dump
//     never holds, with an error naming the statement and the reason:
//     client commands, USE of an unlisted database, names of other
//     databases, accounts and grants, global settings, files, plugins,
//     links to other servers, dynamic SQL, definers the source does not
//     allow. It guards against what the first layer cannot see (grants
//     to PUBLIC, FEDERATED tables, objects that later run as a definer)
//     and gives a clear error.
//
// No statement is handed to a client program, so nothing in a dump runs
// on the worker (see dump.go).

// refusedError is a statement of a dump that a restore refused to run.
type refusedError struct {
	Line   int
	Start  string // the statement's first characters
	Reason string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("refused the statement at line %d (%s): %s", e.Line, e.Start, e.Reason)
}

// clientCommands are the mysql and mariadb clients' own commands. A dump
// fed to a client would have them run on the worker; capsule runs none.
var clientCommands = map[string]bool{
	"?": true, "clear": true, "connect": true, "delimiter": true, "edit": true, "ego": true,
	"exit": true, "go": true, "help": true, "nopager": true, "notee": true, "nowarning": true,
	"pager": true, "print": true, "prompt": true, "quit": true, "rehash": true, "source": true,
	"status": true, "system": true, "tee": true, "charset": true, "warnings": true,
	"resetconnection": true, "query_attributes": true, "ssl_session_data_print": true, "sandbox": true,
}

// checker decides, statement by statement, what of a dump runs.
type checker struct {
	plans  []*plan
	byFrom map[string]*plan
	cur    *plan // the database the dump is in (after its USE)
	// schemas are the server's databases (lower-cased name → name).
	schemas map[string]string
	// restoring is the restoring account (user@host); definers are the
	// other accounts the source allows as definers of restored objects.
	restoring string
	definers  []string
	modes     *lexModes
	toks      []token
	// unchecked (a test hook) runs every statement but USE unchecked,
	// to show what the server's confinement alone refuses.
	unchecked bool
}

// outcome is what to do with one statement.
type outcome struct {
	run  string // the SQL to send; "" to skip
	skip string // why it is skipped, for the log
	set  bool   // a SET: the session's sql_mode may have changed
}

// view is one statement and its tokens.
type view struct {
	s    []byte
	toks []token
}

func (v *view) text(i int) string {
	if i < 0 || i >= len(v.toks) {
		return ""
	}
	return string(v.s[v.toks[i].start:v.toks[i].end])
}

// word returns token i upper-cased if it is an unquoted word, else "".
func (v *view) word(i int) string {
	if i < 0 || i >= len(v.toks) || v.toks[i].kind != tWord {
		return ""
	}
	return strings.ToUpper(v.text(i))
}

func (v *view) punct(i int, c byte) bool {
	return i >= 0 && i < len(v.toks) && v.toks[i].kind == tPunct && v.s[v.toks[i].start] == c
}

// isName says whether token i can be a name: a word or a quoted name.
func (v *view) isName(i int) bool {
	return i >= 0 && i < len(v.toks) && (v.toks[i].kind == tWord || v.toks[i].kind == tIdent)
}

func (v *view) name(i int) string { return unquote(v.s, v.toks[i]) }

// start is the statement's beginning for an error: one line, clipped.
func (v *view) start() string {
	b := v.s
	if len(v.toks) > 0 {
		b = b[v.toks[0].start:]
	}
	s := strings.Join(strings.Fields(string(b[:min(len(b), 200)])), " ")
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return s
}

// check decides what to do with one statement of the dump.
func (c *checker) check(stmt []byte, line int) (outcome, error) {
	c.toks = lex(stmt, *c.modes, c.toks)
	v := &view{s: stmt, toks: c.toks}
	if len(v.toks) == 0 {
		return outcome{skip: "no SQL the server runs"}, nil
	}
	refuse := func(format string, args ...any) error {
		return &refusedError{Line: line, Start: v.start(), Reason: fmt.Sprintf(format, args...)}
	}
	if kw := v.word(0); c.unchecked && kw != "USE" && c.cur != nil {
		// Tests only: the server's confinement alone.
		run := string(stmt)
		if kw == "CREATE" {
			k, at := createKind(v)
			if r, err := c.definer(v, k, at, refuse); err != nil {
				return outcome{}, err
			} else if r != "" {
				run = r
			}
		}
		return outcome{run: run, set: kw == "SET"}, nil
	}
	for _, t := range v.toks {
		if t.kind == tBackslash {
			return outcome{}, refuse("it holds the client command %q, and a restore runs no client commands", string(stmt[t.start:t.end]))
		}
	}
	if v.toks[0].kind != tWord {
		return outcome{}, refuse("it does not begin with an SQL statement")
	}
	kw := v.word(0)
	if clientCommands[strings.ToLower(kw)] {
		return outcome{}, refuse("%s is a command of the mysql client, and a restore runs no client commands", strings.ToLower(kw))
	}
	if kw == "SET" {
		// Lines of MySQL's mysqldump (with GTIDs) a restore leaves out.
		for i, t := range v.toks {
			if t.kind != tSysVar {
				continue
			}
			switch strings.ToLower(v.text(i)) {
			case "@@global.gtid_purged":
				return outcome{skip: "a restore does not change the server's GTID history"}, nil
			case "@@session.sql_log_bin":
				return outcome{skip: "the load is binary-logged like any other change"}, nil
			}
		}
	}
	if reason := c.denied(v); reason != "" {
		return outcome{}, refuse("%s", reason)
	}
	if kw != "USE" && kw != "SET" && c.cur == nil {
		return outcome{}, refuse("it comes before the dump's first USE, in no database")
	}
	// Stored programs and views may name the other databases this
	// restore restores; nothing else may name any but its own.
	body := false
	if kw == "CREATE" {
		switch k, _ := createKind(v); k {
		case "VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT":
			body = true
		}
	}
	if kw != "USE" {
		if err := c.names(v, body, refuse); err != nil {
			return outcome{}, err
		}
	}
	var run string
	switch kw {
	case "USE":
		if len(v.toks) != 2 || !v.isName(1) {
			return outcome{}, refuse("it is not a USE of one database")
		}
		name := v.name(1)
		p := c.byFrom[name]
		if p == nil {
			return outcome{}, refuse("it switches to database %s, which the backup index does not list", name)
		}
		c.cur = p
		return outcome{run: "USE " + quoteName(p.side)}, nil
	case "SET":
		if w := v.word(1); w == "STATEMENT" {
			return outcome{}, refuse("SET STATEMENT … FOR runs a statement inside it")
		}
		return outcome{run: string(stmt), set: true}, nil
	case "DROP":
		i := 1
		if v.word(i) == "TEMPORARY" {
			i++
		}
		switch w := v.word(i); w {
		case "TABLE", "TABLES", "VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT", "SEQUENCE":
		default:
			return outcome{}, refuse("it drops a %s, which a restore never does", strings.ToLower(w))
		}
	case "CREATE":
		kind, at := createKind(v)
		switch kind {
		case "TABLE", "INDEX", "SEQUENCE", "VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT":
		default:
			return outcome{}, refuse("it creates a %s, which a restore never does", strings.ToLower(v.word(at)))
		}
		if q, ok := objectSchema(v, at+1); ok && q != c.cur.side {
			return outcome{}, refuse("it creates a %s in database %s, outside the restore's target", strings.ToLower(kind), q)
		}
		var err error
		if run, err = c.definer(v, kind, at, refuse); err != nil {
			return outcome{}, err
		}
	case "INSERT", "REPLACE", "COMMIT":
	case "LOCK", "UNLOCK":
		if w := v.word(1); w != "TABLES" && w != "TABLE" {
			return outcome{}, refuse("it is not a LOCK TABLES or UNLOCK TABLES")
		}
	case "ALTER":
		switch v.word(1) {
		case "TABLE", "SEQUENCE":
		case "DATABASE", "SCHEMA":
			return c.alterDatabase(v, refuse)
		default:
			return outcome{}, refuse("it alters a %s, which a restore never does", strings.ToLower(v.word(1)))
		}
	case "DO", "SELECT":
		// MariaDB's dumps set a sequence's next value with DO SETVAL(…).
		if v.word(1) != "SETVAL" || !v.punct(2, '(') {
			return outcome{}, refuse("a dump runs %s only to set a sequence (SETVAL)", kw)
		}
	default:
		return outcome{}, refuse("a dump made by mysqldump or mariadb-dump holds no %s statement", kw)
	}
	if run == "" {
		run = string(stmt)
	}
	return outcome{run: run}, nil
}

// denied names what the statement does that a restore never lets a dump
// do, anywhere in it (stored programs' bodies included), or "".
func (c *checker) denied(v *view) string {
	for i := range v.toks {
		w := v.word(i)
		if w == "" {
			if v.toks[i].kind == tSysVar {
				if s := strings.ToLower(v.text(i)); strings.HasPrefix(s, "@@global.") || strings.HasPrefix(s, "@@persist") {
					return "it changes a global setting of the server (" + v.text(i) + ")"
				}
			}
			continue
		}
		next := v.word(i + 1)
		if (w == "CREATE" || w == "ALTER" || w == "DROP") && next == "OR" && v.word(i+2) == "REPLACE" {
			next = v.word(i + 3)
		}
		switch {
		case w == "GRANT" || w == "REVOKE":
			return "it grants or revokes privileges"
		case (w == "CREATE" || w == "DROP" || w == "ALTER" || w == "RENAME") && (next == "USER" || next == "ROLE"):
			return "it manages accounts (" + w + " " + next + ")"
		case w == "SET" && (next == "PASSWORD" || next == "ROLE" || next == "DEFAULT"):
			return "it changes an account (SET " + next + ")"
		case (w == "CREATE" || w == "DROP") && (next == "DATABASE" || next == "SCHEMA"):
			return "it creates or drops a database (" + w + " " + next + ")"
		case w == "ALTER" && (next == "DATABASE" || next == "SCHEMA") && i > 0:
			return "it alters a database inside another statement"
		case (w == "CREATE" || w == "ALTER" || w == "DROP") && next == "SERVER":
			return "it defines a link to another server (" + w + " SERVER)"
		case w == "INSTALL" || w == "UNINSTALL" || w == "SONAME":
			return "it loads code into the server (" + w + ")"
		case w == "OUTFILE" || w == "DUMPFILE":
			return "it writes a file on the server (INTO " + w + ")"
		case w == "INFILE" || w == "LOAD_FILE" || w == "LOAD" && (next == "DATA" || next == "XML"):
			if w == "LOAD" {
				w += " " + next
			}
			return "it reads a file (" + w + ")"
		case w == "PREPARE" || w == "EXECUTE":
			return "it runs dynamic SQL (" + w + "), which a restore cannot check"
		case w == "GLOBAL" || w == "PERSIST" || w == "PERSIST_ONLY":
			return "it changes a global setting of the server (" + w + ")"
		case w == "SHUTDOWN" || w == "KILL" || w == "FLUSH":
			return "it acts on the server (" + w + ")"
		case w == "CHANGE" && (next == "MASTER" || next == "REPLICATION"),
			(w == "START" || w == "STOP") && (next == "SLAVE" || next == "REPLICA"),
			w == "RESET" && (next == "MASTER" || next == "SLAVE" || next == "REPLICA"),
			w == "PURGE" && (next == "BINARY" || next == "MASTER"):
			return "it changes replication (" + w + " " + next + ")"
		case w == "ENGINE":
			j := i + 1
			if v.punct(j, '=') {
				j++
			}
			switch e := v.word(j); e {
			case "FEDERATED", "FEDERATEDX", "CONNECT", "SPIDER", "ODBC":
				return "its table uses the " + e + " engine, which reaches other servers or files"
			}
		case w == "CONNECTION" && (v.punct(i+1, '=') || i+1 < len(v.toks) && v.toks[i+1].kind == tString):
			return "its table links to another server (CONNECTION)"
		case w == "DIRECTORY":
			return "it places table files outside the data directory (DATA or INDEX DIRECTORY)"
		}
	}
	return ""
}

// names refuses a name of another database: a qualified name whose
// qualifier is a database of the server (or a three-part name), other
// than the side schema being loaded. Stored programs and views (body)
// may also name the other databases this restore restores.
func (c *checker) names(v *view, body bool, refuse func(string, ...any) error) error {
	for i := range v.toks {
		if !v.isName(i) || !v.punct(i+1, '.') || v.punct(i-1, '.') {
			continue
		}
		if !v.isName(i+2) && !v.punct(i+2, '*') {
			continue
		}
		q := v.name(i)
		if strings.EqualFold(q, "information_schema") || q == c.cur.sideName() {
			continue
		}
		if body && c.restored(q) {
			continue
		}
		_, known := c.schemas[strings.ToLower(q)]
		system := false
		for _, s := range systemSchemas {
			system = system || strings.EqualFold(q, s)
		}
		if known || system || v.punct(i+3, '.') {
			return refuse("it names database %s, outside the restore's target", q)
		}
	}
	return nil
}

func (p *plan) sideName() string {
	if p == nil {
		return ""
	}
	return p.side
}

// restored says whether q is one of the databases this restore restores
// (or its side schema).
func (c *checker) restored(q string) bool {
	for _, p := range c.plans {
		if q == p.to || q == p.side {
			return true
		}
	}
	return false
}

// createKind reads what a CREATE statement creates, past OR REPLACE,
// ALGORITHM, DEFINER, SQL SECURITY and the like; it returns the kind and
// its token's index ("" if it is none of those a dump creates).
func createKind(v *view) (string, int) {
	i := 1
	for i < len(v.toks) {
		switch w := v.word(i); w {
		case "OR":
			i += 2
		case "ALGORITHM":
			i++
			if v.punct(i, '=') {
				i++
			}
			i++
		case "DEFINER":
			_, end, _ := userSpec(v, i)
			i = end
		case "SQL":
			i += 3
		case "AGGREGATE", "TEMPORARY", "UNIQUE", "FULLTEXT", "SPATIAL", "ONLINE", "OFFLINE":
			i++
		case "TABLE", "VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT", "SEQUENCE", "INDEX":
			return w, i
		default:
			return "", i
		}
	}
	return "", len(v.toks) - 1
}

// objectSchema returns the qualifier of the object name at i (after IF
// NOT EXISTS), if it has one.
func objectSchema(v *view, i int) (string, bool) {
	if v.word(i) == "IF" {
		i += 3
	}
	if v.isName(i) && v.punct(i+1, '.') && v.isName(i+2) {
		return v.name(i), true
	}
	return "", false
}

// userSpec reads "DEFINER = account" at i: the account as user@host
// (or a role's name, or "" for CURRENT_USER), the index after it and
// the span of the account's text.
func userSpec(v *view, i int) (string, int, [2]int) {
	j := i + 1
	if v.punct(j, '=') {
		j++
	}
	if j >= len(v.toks) {
		return "", j, [2]int{}
	}
	span := [2]int{v.toks[j].start, v.toks[j].end}
	if v.word(j) == "CURRENT_USER" {
		end := j + 1
		if v.punct(end, '(') && v.punct(end+1, ')') {
			end += 2
			span[1] = v.toks[end-1].end
		}
		return "", end, span
	}
	user := v.name(j)
	end := j + 1
	if end < len(v.toks) && v.toks[end].kind == tVar && v.toks[end].start == v.toks[j].end {
		span[1] = v.toks[end].end
		host := unquote(v.s, v.toks[end])
		return user + "@" + strings.ToLower(host), end + 1, span
	}
	return user, end, span
}

// definer handles the DEFINER clause of a CREATE: the object is created
// by the loading account (DEFINER = CURRENT_USER), and the swap gives it
// the definer the dump names, which must be the restoring account or one
// the source's definers setting lists. It returns the statement to run.
func (c *checker) definer(v *view, kind string, at int, refuse func(string, ...any) error) (string, error) {
	var (
		found bool
		acct  string
		span  [2]int
	)
	for i := range v.toks {
		if v.word(i) != "DEFINER" || !v.punct(i+1, '=') {
			continue
		}
		if found {
			return "", refuse("it sets a definer twice (a stored program's body may not)")
		}
		found = true
		acct, _, span = userSpec(v, i)
	}
	if !found {
		return "", nil
	}
	name := ""
	j := at + 1
	if v.word(j) == "IF" {
		j += 3
	}
	if v.isName(j) {
		name = v.name(j)
		if v.punct(j+1, '.') && v.isName(j+2) {
			name = v.name(j + 2)
		}
	}
	if acct != "" && !sameAccount(acct, c.restoring) {
		allowed := false
		for _, d := range c.definers {
			allowed = allowed || sameAccount(acct, d)
		}
		if !allowed {
			return "", refuse("%s %s would run as %s: a restore gives objects the restoring account (%s) as definer, or an account the source's definers setting lists", strings.ToLower(kind), name, acct, c.restoring)
		}
		if c.cur.definers == nil {
			c.cur.definers = map[string]string{}
		}
		c.cur.definers[kind+" "+strings.ToLower(name)] = acct
	}
	return string(v.s[:span[0]]) + "CURRENT_USER" + string(v.s[span[1]:]), nil
}

// sameAccount compares user@host accounts: the user exactly, the host
// without regard to case.
func sameAccount(a, b string) bool {
	au, ah, _ := cutLast(a, "@")
	bu, bh, _ := cutLast(b, "@")
	return au == bu && strings.EqualFold(ah, bh)
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// quoteAccount quotes user@host (or a role's name) for SQL.
func quoteAccount(a string) string {
	u, h, ok := cutLast(a, "@")
	if !ok {
		return quoteName(u)
	}
	return quoteName(u) + "@" + quoteName(h)
}

// alterDatabase lets a dump set the default character set of the
// database it is in (mariadb-dump does, around routines), rewritten to
// the side schema; anything else about a database is refused.
func (c *checker) alterDatabase(v *view, refuse func(string, ...any) error) (outcome, error) {
	i := 2
	if v.isName(i) && v.toks[i].kind == tIdent || v.word(i) != "" && v.word(i) != "DEFAULT" && v.word(i) != "CHARACTER" && v.word(i) != "CHARSET" && v.word(i) != "COLLATE" {
		if n := v.name(i); n != c.cur.from && n != c.cur.side {
			return outcome{}, refuse("it alters database %s, outside the restore's target", n)
		}
		i++
	}
	var charset, collation string
	for i < len(v.toks) {
		w := v.word(i)
		switch w {
		case "DEFAULT":
			i++
			continue
		case "CHARACTER":
			if v.word(i+1) != "SET" {
				return outcome{}, refuse("it alters a database other than by its character set")
			}
			i++
			fallthrough
		case "CHARSET", "COLLATE":
			i++
			if v.punct(i, '=') {
				i++
			}
			if i >= len(v.toks) {
				return outcome{}, refuse("it alters a database other than by its character set")
			}
			val := unquote(v.s, v.toks[i])
			if !plainWord(val) {
				return outcome{}, refuse("it sets a character set or collation that is not a plain name")
			}
			if w == "COLLATE" {
				collation = val
			} else {
				charset = val
			}
			i++
		default:
			return outcome{}, refuse("it alters a database other than by its character set")
		}
	}
	q := "ALTER DATABASE " + quoteName(c.cur.side)
	if charset != "" {
		q += " CHARACTER SET " + charset
	}
	if collation != "" {
		q += " COLLATE " + collation
	}
	if charset == "" && collation == "" {
		return outcome{}, refuse("it alters a database other than by its character set")
	}
	return outcome{run: q}, nil
}

// versionNumber turns VERSION() ("10.11.19-MariaDB-…", "8.0.36") into
// the number /*!NNNNN */ comments compare with (101119, 80036).
func versionNumber(v string) int {
	parts := strings.SplitN(strings.SplitN(v, "-", 2)[0], ".", 3)
	n := 0
	for i, mult := range []int{10000, 100, 1} {
		if i < len(parts) {
			x, _ := strconv.Atoi(parts[i])
			n += x * mult
		}
	}
	return n
}

// loadAccount is the temporary account a dump is loaded as.
type loadAccount struct {
	name, host, password string
}

func (a *loadAccount) sql() string { return quoteString(a.name) + "@" + quoteString(a.host) }

// shown is the account as SHOW CREATE prints a definer.
func (a *loadAccount) shown() string { return quoteName(a.name) + "@" + quoteName(a.host) }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// grantPattern is a database name as GRANT reads it: _ and % are
// wildcards there unless escaped (or unless MySQL's partial_revokes is
// on, which makes them literal).
func grantPattern(db string, partialRevokes bool) string {
	if partialRevokes {
		return db
	}
	return strings.NewReplacer("_", `\_`, "%", `\%`).Replace(db)
}

// createLoadAccount makes the account a dump is loaded as: a random name
// and password, at the host the restoring account connects as, with all
// privileges on the side schemas and nothing else. drop removes it.
func createLoadAccount(ctx context.Context, s *session, host string, plans []*plan) (*loadAccount, func(), error) {
	a := &loadAccount{name: "capsule_r_" + randomHex(8), host: host, password: randomHex(16) + "-Aa1"}
	if _, err := s.db.ExecContext(ctx, "CREATE USER "+a.sql()+" IDENTIFIED BY "+quoteString(a.password)); err != nil {
		return nil, nil, fmt.Errorf("create the temporary account that loads the dump (the restoring account needs the CREATE USER privilege): %w", err)
	}
	drop := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_, _ = s.db.ExecContext(dctx, "DROP USER IF EXISTS "+a.sql())
	}
	var pr sql.NullString
	partialRevokes := s.db.QueryRowContext(ctx, "SELECT @@GLOBAL.partial_revokes").Scan(&pr) == nil && (pr.String == "1" || strings.EqualFold(pr.String, "ON"))
	for _, p := range plans {
		q := "GRANT ALL PRIVILEGES ON " + quoteName(grantPattern(p.side, partialRevokes)) + ".* TO " + a.sql()
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			drop()
			return nil, nil, fmt.Errorf("grant the temporary account that loads the dump its side schema %s (the restoring account needs ALL PRIVILEGES WITH GRANT OPTION on %s): %w", p.side, p.side, err)
		}
	}
	return a, drop, nil
}

// load runs the dump in the side schemas as a temporary account
// confined to them, each statement checked first. It returns when the
// dump is loaded to its completion line, or at the first refused or
// failed statement.
func (e *Engine) load(ctx context.Context, s *session, plans []*plan, dump io.Reader, log logrus.FieldLogger) error {
	var version, restoring string
	var maxPacket int
	if err := s.db.QueryRowContext(ctx, "SELECT VERSION(), CURRENT_USER(), @@max_allowed_packet").Scan(&version, &restoring, &maxPacket); err != nil {
		return fmt.Errorf("read the server's version and the restoring account: %w", err)
	}
	user, host, _ := cutLast(restoring, "@")
	restoring = user + "@" + strings.ToLower(host)
	schemas, err := listSchemas(ctx, s.db)
	if err != nil {
		return err
	}
	acct, drop, err := createLoadAccount(ctx, s, host, plans)
	if err != nil {
		return err
	}
	defer drop()
	tc := s.dc.Clone()
	tc.User, tc.Passwd, tc.DBName = acct.name, acct.password, ""
	tc.MaxAllowedPacket = 0 // the server's
	connector, err := driver.NewConnector(tc)
	if err != nil {
		return fmt.Errorf("mysql connector: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect as the temporary account that loads the dump: %w", err)
	}
	defer conn.Close()

	dr := newDumpReader(dump, maxPacket)
	dr.modes = lexModes{version: versionNumber(version), mariadb: flavor(version) == "mariadb"}
	if err := readModes(ctx, conn, &dr.modes); err != nil {
		return err
	}
	chk := &checker{plans: plans, byFrom: map[string]*plan{}, schemas: schemas, restoring: restoring, definers: s.cfg.Definers, modes: &dr.modes, unchecked: e.unchecked}
	for _, p := range plans {
		chk.byFrom[p.from] = p
		p.definers = nil
	}
	log.WithField("account", acct.name).Debug("mysql restore loads the dump as a temporary account confined to the side schemas")
	for {
		stmt, line, err := dr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		out, err := chk.check(stmt, line)
		if err != nil {
			return err
		}
		if out.run == "" {
			log.WithFields(logrus.Fields{"line": line, "reason": out.skip}).Debug("mysql restore skips a statement")
			continue
		}
		if _, err := conn.ExecContext(ctx, out.run); err != nil {
			var me *driver.MySQLError
			if errors.As(err, &me) && me.Number == 1065 { // a query that is all comments
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("the statement at line %d (%s) failed: %w", line, (&view{s: stmt, toks: chk.toks}).start(), err)
		}
		if out.set {
			if err := readModes(ctx, conn, &dr.modes); err != nil {
				return err
			}
		}
	}
	if !dr.sawEnd {
		return errors.New("the dump has no completion line: it is truncated")
	}
	for _, p := range plans {
		p.loadedBy, p.restoring = acct.shown(), restoring
	}
	return nil
}

// readModes reads the session's sql_mode: NO_BACKSLASH_ESCAPES and
// ANSI_QUOTES change how the next statements are read.
func readModes(ctx context.Context, conn *sql.Conn, m *lexModes) error {
	var mode string
	if err := conn.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read the session's sql_mode: %w", err)
	}
	m.noBackslashEscapes, m.ansiQuotes = false, false
	for _, f := range strings.Split(strings.ToUpper(mode), ",") {
		switch f {
		case "NO_BACKSLASH_ESCAPES":
			m.noBackslashEscapes = true
		case "ANSI_QUOTES":
			m.ansiQuotes = true
		}
	}
	return nil
}

// listSchemas returns the server's databases the restoring account sees,
// by lower-cased name.
func listSchemas(ctx context.Context, db *sql.DB) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	defer rows.Close()
	schemas := map[string]string{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		schemas[strings.ToLower(n)] = n
	}
	return schemas, rows.Err()
}
