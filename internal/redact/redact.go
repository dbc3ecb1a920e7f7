// Package redact removes credentials from text before capsule writes it
// where others read it: a result in the bucket, a log line. A client may
// put a connection string with a password in a request field, a driver
// may quote a DSN in its error, a tool may echo an option; whatever the
// path, what looks like a secret is replaced by Mask.
//
// It is conservative: it masks URL passwords
// (scheme://user:pass@host), the values of secret-looking keys
// (password=…, PGPASSWORD=…, "token": "…", AWS_SECRET_ACCESS_KEY=…),
// authorization headers and bearer tokens, and PEM private keys, and
// leaves everything else as it was (hosts, ports, user names, paths,
// "password authentication failed", "passwordFile: no such file").
package redact

import (
	"fmt"
	"regexp"
	"strings"
)

// Mask replaces a secret.
const Mask = "REDACTED"

// secretWord is the end of a key whose value is a secret: password,
// PGPASSWORD, db_password, MYSQL_PWD, client_secret, api-key, auth_token,
// AWS_SECRET_ACCESS_KEY, private_key, X-Amz-Signature, credentials.
const secretWord = `(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|signature|sig)`

var (
	// pemKey is a PEM private key block, or its start when it was cut.
	pemKey = regexp.MustCompile(`-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)`)
	// urlAuth is scheme://user: followed by the rest of the token, where
	// a password may be (decided by redactURL).
	urlAuth = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)([^\s:/?#@\[\]"'<>` + "`" + `]*):([^\s"'<>` + "`" + `]*)`)
	// port is what follows host: in a URL without user information.
	port = regexp.MustCompile(`^[0-9]{1,5}(?:[^0-9]|$)`)
	// authHeader is an Authorization header or setting, with its scheme.
	authHeader = regexp.MustCompile(`(?i)\b((?:proxy-)?authorization"?\s*[:=]\s*\[?"?)(?:(bearer|basic|token|digest|negotiate|aws4-hmac-sha256)\s+)?([^\s"]+)`)
	// bearer is a bearer token anywhere else.
	bearer = regexp.MustCompile(`(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{8,}=*`)
	// keyValue is KEY=VALUE (spaces around = allowed), KEY:VALUE (no
	// space after the colon: "password: use passwordFile" is prose) and
	// "KEY": "VALUE" (JSON), for a KEY that ends in a secret word. The
	// value is quoted, or runs to a space, a quote or &.
	keyValue = regexp.MustCompile(`(?i)([A-Za-z0-9_.\-]*` + secretWord + `)("?)(\s*=\s*|:|"?\s*:\s*)("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s"'&` + "`" + `]+)`)
	// secretKey matches a key (a field name, a map key) whose whole value
	// is a secret.
	secretKey = regexp.MustCompile(`(?i)^[A-Za-z0-9_.\-]*` + secretWord + `$|^(?:proxy-)?authorization$`)
)

// String returns s with every secret it recognizes replaced by Mask.
func String(s string) string {
	if s == "" {
		return s
	}
	s = pemKey.ReplaceAllString(s, "-----BEGIN ${1}PRIVATE KEY-----"+Mask+"-----END ${1}PRIVATE KEY-----")
	if strings.Contains(s, "://") {
		s = urlAuth.ReplaceAllStringFunc(s, redactURL)
	}
	s = authHeader.ReplaceAllStringFunc(s, func(m string) string {
		g := authHeader.FindStringSubmatch(m)
		if g[3] == Mask {
			return m
		}
		if g[2] != "" {
			return g[1] + g[2] + " " + Mask
		}
		return g[1] + Mask
	})
	s = bearer.ReplaceAllString(s, "${1}"+Mask)
	s = keyValue.ReplaceAllStringFunc(s, redactKeyValue)
	return s
}

// redactURL masks the password of scheme://user:password@host. Without
// an @ the part after the colon is a port (left alone) unless the text
// was cut there ("…"), where it may be the start of a password.
func redactURL(m string) string {
	g := urlAuth.FindStringSubmatch(m)
	prefix, rest := g[1]+g[2]+":", g[3]
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if rest[:at] == Mask {
			return m
		}
		return prefix + Mask + rest[at:]
	}
	if port.MatchString(rest) || rest == "" || rest == Mask {
		return m
	}
	if strings.HasSuffix(rest, "…") || strings.HasSuffix(rest, "...") {
		return prefix + Mask + "…"
	}
	return m
}

func redactKeyValue(m string) string {
	g := keyValue.FindStringSubmatch(m)
	key, quote, sep, val := g[1], g[2], g[3], g[4]
	// A ':' separator needs a value right after it or a JSON key: "a
	// token: see above" is prose, "token:abc" and "token": "abc" are not.
	if strings.Contains(sep, ":") && quote == "" && strings.TrimSpace(sep) != sep {
		return m
	}
	switch {
	case strings.Trim(val, `"'`) == Mask:
		return m
	case strings.HasPrefix(val, `"`):
		return key + quote + sep + `"` + Mask + `"`
	case strings.HasPrefix(val, `'`):
		return key + quote + sep + `'` + Mask + `'`
	}
	return key + quote + sep + Mask
}

// IsSecretKey reports whether a field or map key names a secret
// ("password", "PGPASSWORD", "api_key", "Authorization"), so that its
// whole value is masked.
func IsSecretKey(key string) bool { return secretKey.MatchString(key) }

// Map returns a copy of m with the values of secret keys masked and every
// other value passed through String. A nil map stays nil.
func Map(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = Field(k, v).(string)
	}
	return out
}

// Field returns v, the value of key, with secrets masked: all of it when
// key names a secret, else what String finds in its text. Strings,
// errors, maps and slices come back redacted in the same shape (an error
// becomes its text); other values come back as they were unless their
// printed form holds a secret, then as that form redacted.
func Field(key string, v any) any {
	if IsSecretKey(key) && !empty(v) {
		return Mask
	}
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return String(x)
	case error:
		if s := x.Error(); String(s) != s {
			return String(s)
		}
		return x
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return x
	case []string:
		out := make([]string, len(x))
		for i, s := range x {
			out[i] = String(s)
		}
		return out
	case map[string]string:
		return Map(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = Field(k, e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = Field("", e)
		}
		return out
	case fmt.Stringer:
		if s := x.String(); String(s) != s {
			return String(s)
		}
		return x
	}
	if s := fmt.Sprintf("%+v", v); String(s) != s {
		return String(s)
	}
	return v
}

func empty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	}
	return false
}
