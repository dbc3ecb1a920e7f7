package mysql

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// A restore never hands a dump to the mysql or mariadb client: the client
// runs its own commands (\! and system run a shell, \. and source read
// files, connect and use change where the rest goes, delimiter changes how
// the rest is read), and a filter in front of it would have to read every
// line exactly as each version of each client does. Instead capsule reads
// the dump itself, statement by statement, as the client would split it,
// and sends each statement, checked, to the server over its own
// connection (dumpReader, lex, checker in load.go). No statement of a dump
// is ever anything but SQL sent to the server.

// lexModes are what decides how SQL text is read: the session's sql_mode
// (NO_BACKSLASH_ESCAPES, ANSI_QUOTES) and the server's version, against
// which /*!NNNNN … */ comments are run or skipped.
type lexModes struct {
	noBackslashEscapes bool
	ansiQuotes         bool
	version            int // 10.11.19 → 101119, 8.0.36 → 80036
	mariadb            bool
}

// conditional reads a comment opener at b ("/*!NNNNN" or "/*M!NNNNNN"),
// and says how long the opener is and whether the server runs the
// comment's text. ok is false for a plain comment.
func (m lexModes) conditional(b []byte) (n int, runs, ok bool) {
	mariaOnly := false
	switch {
	case bytes.HasPrefix(b, []byte("/*!")):
		n = 3
	case bytes.HasPrefix(b, []byte("/*M!")):
		n, mariaOnly = 4, true
	default:
		return 0, false, false
	}
	// MariaDB reads a version of five or six digits; MySQL is read as
	// taking five, which never runs less than a MySQL that takes six
	// would (a sixth digit only makes the version larger).
	most := 5
	if m.mariadb {
		most = 6
	}
	version, digits := 0, 0
	for digits < most && n+digits < len(b) && b[n+digits] >= '0' && b[n+digits] <= '9' {
		version = version*10 + int(b[n+digits]-'0')
		digits++
	}
	if digits > 0 && digits < 5 {
		// Not a version: the digits are read as SQL.
		digits, version = 0, 0
	}
	runs = version <= m.version && (!mariaOnly || m.mariadb)
	return n + digits, runs, true
}

// dumpReader splits a dump into statements exactly where the mysql client
// would: at the current delimiter outside strings, quoted names and
// comments, with DELIMITER lines changing the delimiter. It keeps the
// statements' text as the server is to see it (comments included) and
// runs nothing.
type dumpReader struct {
	r     io.Reader
	buf   []byte
	start int // the current statement's first byte in buf
	pos   int // the scan's position in buf
	eof   bool
	delim string
	line  int // line of pos, from 1
	max   int // the longest statement accepted
	modes lexModes
	// sawEnd: the dump's completion line ("-- Dump completed") was seen.
	sawEnd bool
}

func newDumpReader(r io.Reader, max int) *dumpReader {
	return &dumpReader{r: r, delim: ";", line: 1, max: max}
}

// errTruncated is a dump that ends inside a string, a quoted name or a
// comment.
var errTruncated = errors.New("the dump ends inside a string or a comment: it is truncated")

// more reads more of the dump into buf.
func (d *dumpReader) more() error {
	if d.eof {
		return nil
	}
	if len(d.buf)-d.start > d.max {
		return d.tooLong(d.line)
	}
	if cap(d.buf)-len(d.buf) < 32<<10 {
		nb := make([]byte, len(d.buf), max(2*cap(d.buf), len(d.buf)+256<<10))
		copy(nb, d.buf)
		d.buf = nb
	}
	for {
		n, err := d.r.Read(d.buf[len(d.buf):cap(d.buf)])
		d.buf = d.buf[:len(d.buf)+n]
		if errors.Is(err, io.EOF) {
			d.eof = true
			return nil
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}

func (d *dumpReader) tooLong(line int) error {
	return fmt.Errorf("the statement at line %d is longer than %d bytes, the most the server accepts (max_allowed_packet)", line, d.max)
}

// peek returns up to n bytes at pos, reading more of the dump as needed;
// fewer only at the end of the dump.
func (d *dumpReader) peek(n int) ([]byte, error) {
	for len(d.buf)-d.pos < n && !d.eof {
		if err := d.more(); err != nil {
			return nil, err
		}
	}
	end := min(d.pos+n, len(d.buf))
	return d.buf[d.pos:end], nil
}

// lineAt returns the rest of the line at pos, without its newline.
func (d *dumpReader) restOfLine() ([]byte, error) {
	for {
		if i := bytes.IndexByte(d.buf[d.pos:], '\n'); i >= 0 {
			return d.buf[d.pos : d.pos+i], nil
		}
		if d.eof {
			return d.buf[d.pos:], nil
		}
		if err := d.more(); err != nil {
			return nil, err
		}
	}
}

type scanState int

const (
	stCode scanState = iota
	stSingle
	stDouble
	stBacktick
	stLineComment
	stBlockComment
)

// next returns the next statement without its delimiter and the line it
// starts on, or io.EOF after the last. The returned bytes are valid until
// the next call.
func (d *dumpReader) next() ([]byte, int, error) {
	if d.start > 0 {
		n := copy(d.buf, d.buf[d.start:])
		d.buf = d.buf[:n]
		d.pos -= d.start
		d.start = 0
	}
	var (
		st        = stCode
		hasCode   bool // the statement has text the server reads
		lineStart = true
		inCond    bool // inside a /*!NNNNN … */ the server runs
		stmtLine  = d.line
	)
	reset := func() {
		d.start = d.pos
		st, hasCode, lineStart, inCond = stCode, false, true, false
		stmtLine = d.line
	}
	for {
		if d.pos >= len(d.buf) {
			if !d.eof {
				if err := d.more(); err != nil {
					return nil, 0, err
				}
				continue
			}
			if st != stCode && st != stLineComment || inCond {
				return nil, 0, fmt.Errorf("line %d: %w", d.line, errTruncated)
			}
			if !hasCode {
				d.start = d.pos
				return nil, 0, io.EOF
			}
			stmt := d.buf[d.start:d.pos]
			d.start = d.pos
			if len(stmt) > d.max {
				return nil, 0, d.tooLong(stmtLine)
			}
			return stmt, stmtLine, nil
		}
		c := d.buf[d.pos]
		if c == '\n' {
			d.line++
		}
		switch st {
		case stCode:
			if lineStart && !hasCode && !inCond && (c == 'd' || c == 'D') {
				ok, err := d.delimiterLine()
				if err != nil {
					return nil, 0, err
				}
				if ok {
					reset()
					continue
				}
			}
			if c == d.delim[0] {
				p, err := d.peek(len(d.delim))
				if err != nil {
					return nil, 0, err
				}
				if string(p) == d.delim {
					stmt := d.buf[d.start:d.pos]
					d.pos += len(d.delim)
					if !hasCode {
						reset()
						continue
					}
					d.start = d.pos
					if len(stmt) > d.max {
						return nil, 0, d.tooLong(stmtLine)
					}
					return stmt, stmtLine, nil
				}
			}
			switch c {
			case '\'':
				st = stSingle
			case '"':
				st = stDouble
			case '`':
				st = stBacktick
			case '#':
				st = stLineComment
			case '-':
				p, err := d.peek(3)
				if err != nil {
					return nil, 0, err
				}
				if len(p) >= 2 && p[1] == '-' && (len(p) == 2 || p[2] <= ' ') {
					if lineStart && !inCond {
						if end, err := d.peek(len(completionLine)); err == nil && string(end) == completionLine {
							d.sawEnd = true
						}
					}
					st = stLineComment
				}
			case '/':
				p, err := d.peek(10)
				if err != nil {
					return nil, 0, err
				}
				if len(p) >= 2 && p[1] == '*' {
					n, runs, ok := d.modes.conditional(p)
					if ok && runs && !inCond {
						inCond = true
						d.pos += n
						lineStart = false
						if !hasCode {
							stmtLine = d.line
						}
						hasCode = true
						continue
					}
					st = stBlockComment
					d.pos += 2
					continue
				}
			case '*':
				if inCond {
					p, err := d.peek(2)
					if err != nil {
						return nil, 0, err
					}
					if len(p) == 2 && p[1] == '/' {
						inCond = false
						d.pos += 2
						continue
					}
				}
			}
			if c == '\n' {
				lineStart = true
			} else if c != ' ' && c != '\t' && c != '\r' {
				lineStart = false
				if !hasCode && st != stLineComment && st != stBlockComment {
					stmtLine = d.line
					hasCode = true
				}
			}
			d.pos++
		case stSingle, stDouble, stBacktick:
			quote := byte('\'')
			escapes := !d.modes.noBackslashEscapes
			switch st {
			case stDouble:
				quote = '"'
				escapes = escapes && !d.modes.ansiQuotes
			case stBacktick:
				quote, escapes = '`', false
			}
			if c == '\\' && escapes {
				p, err := d.peek(2)
				if err != nil {
					return nil, 0, err
				}
				if len(p) == 2 && p[1] == '\n' {
					d.line++
				}
				d.pos += len(p)
				continue
			}
			if c == quote {
				p, err := d.peek(2)
				if err != nil {
					return nil, 0, err
				}
				if len(p) == 2 && p[1] == quote {
					d.pos += 2
					continue
				}
				st = stCode
			}
			d.pos++
		case stLineComment:
			if c == '\n' {
				st = stCode
				lineStart = true
			}
			d.pos++
		case stBlockComment:
			if c == '*' {
				p, err := d.peek(2)
				if err != nil {
					return nil, 0, err
				}
				if len(p) == 2 && p[1] == '/' {
					st = stCode
					d.pos += 2
					continue
				}
			}
			d.pos++
		}
	}
}

// delimiterLine reads a "DELIMITER x" line at pos, if there is one, and
// sets the delimiter. It is read only where the client reads it: at the
// start of a line, before any statement text.
func (d *dumpReader) delimiterLine() (bool, error) {
	l, err := d.restOfLine()
	if err != nil {
		return false, err
	}
	const kw = "delimiter"
	if len(l) <= len(kw) || !strings.EqualFold(string(l[:len(kw)]), kw) || (l[len(kw)] != ' ' && l[len(kw)] != '\t') {
		return false, nil
	}
	f := strings.Fields(string(l[len(kw):]))
	if len(f) == 0 || strings.ContainsAny(f[0], "\\'\"`") {
		return false, fmt.Errorf("line %d: DELIMITER without a usable delimiter", d.line)
	}
	d.delim = f[0]
	d.pos += len(l)
	if d.pos < len(d.buf) {
		d.pos++ // the newline
		d.line++
	}
	return true, nil
}

// tokKind is the kind of a token of SQL text.
type tokKind uint8

const (
	tWord      tokKind = iota // an unquoted word: a keyword or a name
	tIdent                    // a `quoted` name (or "quoted" with ANSI_QUOTES)
	tString                   // a 'string' (or "string")
	tNumber                   // a number
	tVar                      // @name, @'name', @`name`: also the host of user@host
	tSysVar                   // @@name, @@scope.name
	tPunct                    // one other character
	tBackslash                // a backslash outside strings: a client command
)

// token is a span of a statement's text.
type token struct {
	kind       tokKind
	start, end int
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 0x80
}

// lex splits a statement into tokens, as the server reads it: comments
// the server skips are left out, the text of /*!NNNNN … */ comments it
// runs is read as SQL (without the comment's markers).
func lex(s []byte, m lexModes, toks []token) []token {
	toks = toks[:0]
	inCond := false
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '-' && i+1 < len(s) && s[i+1] == '-' && (i+2 == len(s) || s[i+2] <= ' '):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			if n, runs, ok := m.conditional(s[i:]); ok && runs && !inCond {
				inCond = true
				i += n
				continue
			}
			end := bytes.Index(s[i+2:], []byte("*/"))
			if end < 0 {
				i = len(s)
			} else {
				i += 2 + end + 2
			}
		case c == '*' && inCond && i+1 < len(s) && s[i+1] == '/':
			inCond = false
			i += 2
		case c == '\'' || c == '"' || c == '`':
			kind := tString
			escapes := !m.noBackslashEscapes
			if c == '`' || c == '"' && m.ansiQuotes {
				kind, escapes = tIdent, false
			}
			j := quotedEnd(s, i, escapes)
			toks = append(toks, token{kind: kind, start: i, end: j})
			i = j
		case c == '@':
			j := i + 1
			kind := tVar
			if j < len(s) && s[j] == '@' {
				kind = tSysVar
				j++
				for j < len(s) && (isWordByte(s[j]) || s[j] == '.') {
					j++
				}
			} else if j < len(s) && (s[j] == '\'' || s[j] == '"' || s[j] == '`') {
				j = quotedEnd(s, j, s[j] != '`' && !m.noBackslashEscapes)
			} else {
				for j < len(s) && (isWordByte(s[j]) || s[j] == '.') {
					j++
				}
			}
			toks = append(toks, token{kind: kind, start: i, end: j})
			i = j
		case isWordByte(c):
			j := i
			digits := true
			for j < len(s) && isWordByte(s[j]) {
				digits = digits && s[j] >= '0' && s[j] <= '9'
				j++
			}
			kind := tWord
			if digits {
				kind = tNumber
				if j+1 < len(s) && s[j] == '.' && s[j+1] >= '0' && s[j+1] <= '9' {
					j++
					for j < len(s) && isWordByte(s[j]) {
						j++
					}
				}
			}
			toks = append(toks, token{kind: kind, start: i, end: j})
			i = j
		case c == '\\':
			toks = append(toks, token{kind: tBackslash, start: i, end: min(i+2, len(s))})
			i += 2
		default:
			toks = append(toks, token{kind: tPunct, start: i, end: i + 1})
			i++
		}
	}
	return toks
}

// quotedEnd returns the end of the quoted text starting at s[i].
func quotedEnd(s []byte, i int, escapes bool) int {
	q := s[i]
	j := i + 1
	for j < len(s) {
		switch {
		case s[j] == '\\' && escapes:
			j += 2
			continue
		case s[j] == q:
			if j+1 < len(s) && s[j+1] == q {
				j += 2
				continue
			}
			return j + 1
		}
		j++
	}
	return len(s)
}

// unquote returns a token's value: a name or string without its quotes
// and escapes, a variable's name without @.
func unquote(s []byte, t token) string {
	b := s[t.start:t.end]
	if t.kind == tVar && len(b) > 0 {
		b = b[1:]
	}
	if len(b) < 2 {
		return string(b)
	}
	q := b[0]
	if q != '\'' && q != '"' && q != '`' {
		return string(b)
	}
	b = b[1:]
	if b[len(b)-1] == q {
		b = b[:len(b)-1]
	}
	var out strings.Builder
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == q && i+1 < len(b) && b[i+1] == q:
			out.WriteByte(q)
			i++
		case b[i] == '\\' && q != '`' && i+1 < len(b):
			i++
			switch b[i] {
			case 'n':
				out.WriteByte('\n')
			case 't':
				out.WriteByte('\t')
			case 'r':
				out.WriteByte('\r')
			case '0':
				out.WriteByte(0)
			default:
				out.WriteByte(b[i])
			}
		default:
			out.WriteByte(b[i])
		}
	}
	return out.String()
}
