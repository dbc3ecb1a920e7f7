package mysql

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
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
	out, err := exec.CommandContext(ctx, tool, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// defaultsFile writes a private (0600) option file with the connection
// and the password, so neither appears in a child's argv or environment.
// The returned func removes it.
func defaultsFile(t *target, password string) (string, func(), error) {
	f, err := os.CreateTemp("", "capsule-my-*.cnf")
	if err != nil {
		return "", nil, fmt.Errorf("option file: %w", err)
	}
	remove := func() { os.Remove(f.Name()) }
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		remove()
		return "", nil, fmt.Errorf("option file: %w", err)
	}
	var b strings.Builder
	b.WriteString("[client]\n")
	fmt.Fprintf(&b, "user=%s\n", optionValue(t.user))
	if password != "" {
		fmt.Fprintf(&b, "password=%s\n", optionValue(password))
	}
	fmt.Fprintf(&b, "host=%s\n", optionValue(t.host))
	fmt.Fprintf(&b, "port=%d\n", t.port)
	b.WriteString("protocol=tcp\n")
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		remove()
		return "", nil, fmt.Errorf("option file: %w", err)
	}
	if err := f.Close(); err != nil {
		remove()
		return "", nil, fmt.Errorf("option file: %w", err)
	}
	return f.Name(), remove, nil
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
