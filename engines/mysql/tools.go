package mysql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/internal/childproc"
)

// findTool returns the configured program, or the first of names on PATH.
func findTool(configured string, names ...string) (string, error) {
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return "", fmt.Errorf("tool %s: %w", configured, err)
		}
		return p, nil
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("none of %s is installed", strings.Join(names, ", "))
}

// toolVersion returns the first line of `tool --version`.
func toolVersion(ctx context.Context, tool string) string {
	d, err := childproc.New("")
	if err != nil {
		return ""
	}
	defer d.Close()
	out, err := d.Command(ctx, tool, []string{"--version"}).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// toolRun is one run of a client tool: a private directory (childproc)
// that is the tool's HOME and TMPDIR and holds its option file, with the
// connection, the password and the TLS settings, so that none of them is
// in the tool's argv or environment and the worker's own environment
// stays out.
type toolRun struct {
	tool string
	dir  *childproc.Dir
	cnf  string
}

// newToolRun prepares a run of tool (a path from findTool) against s.
// Close it when the tool has ended: it removes the option file.
func (s *session) newToolRun(ctx context.Context, tool string) (*toolRun, error) {
	d, err := childproc.New("")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(tool), err)
	}
	r := &toolRun{tool: tool, dir: d}
	flavor := ""
	if s.cfg.TLS != nil {
		// MariaDB's and MySQL's clients spell server verification
		// differently; an option the tool does not know is an error.
		out, err := d.Command(ctx, tool, []string{"--version"}).Output()
		if err != nil {
			r.close()
			return nil, fmt.Errorf("%s --version: %w", filepath.Base(tool), err)
		}
		flavor = toolFlavor(string(out))
	}
	text, err := optionFile(s.t, s.password, s.cfg.TLS, flavor)
	if err == nil {
		r.cnf, err = d.WriteFile("client.cnf", []byte(text))
	}
	if err != nil {
		r.close()
		return nil, fmt.Errorf("option file: %w", err)
	}
	return r, nil
}

// command is the tool with args after the option file (which must come
// first), in the private directory with the minimal environment.
func (r *toolRun) command(ctx context.Context, args ...string) *exec.Cmd {
	return r.dir.Command(ctx, r.tool, append([]string{"--defaults-file=" + r.cnf}, args...))
}

func (r *toolRun) close() { _ = r.dir.Close() }

// toolFlavor tells a MariaDB client from a MySQL one by its --version.
func toolFlavor(version string) string {
	if strings.Contains(strings.ToLower(version), "mariadb") {
		return "mariadb"
	}
	return "mysql"
}

// optionFile is the text of a client option file: the connection, the
// password and the TLS settings. It is read with --defaults-file, so no
// other option file (the host's /etc/mysql, a ~/.my.cnf) adds to it.
func optionFile(t *target, password string, tc *engines.TLS, flavor string) (string, error) {
	var b strings.Builder
	b.WriteString("[client]\n")
	fmt.Fprintf(&b, "user=%s\n", optionValue(t.user))
	if password != "" {
		fmt.Fprintf(&b, "password=%s\n", optionValue(password))
	}
	fmt.Fprintf(&b, "host=%s\n", optionValue(t.host))
	fmt.Fprintf(&b, "port=%d\n", t.port)
	b.WriteString("protocol=tcp\n")
	if tc == nil {
		return b.String(), nil
	}
	ca := tc.CAFile
	if ca == "" && !tc.InsecureSkipVerify {
		if ca = engines.SystemCAFile(); ca == "" {
			return "", errors.New("setting tls.caFile: required here, no system CA bundle was found")
		}
	}
	for _, o := range [][2]string{{"ssl-ca", ca}, {"ssl-cert", tc.CertFile}, {"ssl-key", tc.KeyFile}} {
		if o[1] != "" {
			fmt.Fprintf(&b, "%s=%s\n", o[0], optionValue(o[1]))
		}
	}
	switch {
	case flavor == "mariadb" && tc.InsecureSkipVerify:
		b.WriteString("ssl\nskip-ssl-verify-server-cert\n")
	case flavor == "mariadb":
		b.WriteString("ssl\nssl-verify-server-cert\n")
	case tc.InsecureSkipVerify:
		b.WriteString("ssl-mode=REQUIRED\n")
	default:
		b.WriteString("ssl-mode=VERIFY_IDENTITY\n")
	}
	return b.String(), nil
}

// optionValue quotes a value for an option file: double quotes, with
// backslash escapes for the characters the parser interprets.
func optionValue(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// tailBuffer keeps the last bytes written to it (a child's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// String returns the kept text, with the secret (should a tool ever echo
// it) masked.
func (t *tailBuffer) text(secret string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(bytes.TrimSpace(t.buf))
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "******")
	}
	return s
}

// quoteName quotes an identifier with backticks.
func quoteName(n string) string { return "`" + strings.ReplaceAll(n, "`", "``") + "`" }

// sideName derives a schema name from db, a marker, the restore id and
// the attempt: <db>_capsule_<marker>_<id>_a<attempt>. It fits MySQL's 64
// characters even as a GRANT pattern, where every "_" is escaped (the
// restore grants its loading account the side schemas by name). The id
// keeps only its letters and digits; an id that does not survive as it
// is (other characters, or too long) is cut and given a hash of itself,
// so different ids keep different names. The attempt is never cut; db is
// cut (and given a hash) only when even a hashed id leaves no room.
func sideName(db, marker, id string, attempt int) string {
	var clean strings.Builder
	for _, r := range strings.ToLower(id) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			clean.WriteRune(r)
		}
	}
	idPart := clean.String()
	head, tail := "_capsule_"+marker+"_", "_a"+strconv.Itoa(attempt)
	// The id gets what db leaves (at most 40 for the whole suffix), so
	// that db, which the restoring account's grants may name, stays whole
	// where it can.
	room := min(40-len(head)-len(tail), 64-grantLen(db)-grantLen(head)-grantLen(tail))
	if idPart != id || len(idPart) > room {
		h := strconv.FormatUint(uint64(fnv32(id)), 36)
		idPart = idPart[:max(0, min(len(idPart), room-len(h)-2))] + "_" + h
	}
	suffix := head + idPart + tail
	if grantLen(db)+grantLen(suffix) > 64 {
		// Keep names unique when two long names share a prefix.
		h := "_" + strconv.FormatUint(uint64(fnv32(db)), 36)
		cut := len(db)
		for cut > 0 && (grantLen(db[:cut])+grantLen(h)+grantLen(suffix) > 64 || !utf8.RuneStart(db[cut%len(db)])) {
			cut--
		}
		db = db[:cut] + h
	}
	return db + suffix
}

// grantLen is the length of a name as a GRANT pattern, "_" and "%"
// escaped.
func grantLen(s string) int {
	return len(s) + strings.Count(s, "_") + strings.Count(s, "%")
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
