package redact

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestString(t *testing.T) {
	long := "postgres://user:" + strings.Repeat("s", 70) + "secretpw@db/x"
	cases := []struct {
		name, in, want string
	}{
		// URL user information.
		{"url password", `postgres://user:secretpw@db/x`, `postgres://user:REDACTED@db/x`},
		{"url in a rejection", `invalid request: source: "postgres://user:secretpw@db/x" is not a valid name`,
			`invalid request: source: "postgres://user:REDACTED@db/x" is not a valid name`},
		{"url password with @ and :", `mysql://root:p@ss:w@rd@10.0.0.1:3306/app`, `mysql://root:REDACTED@10.0.0.1:3306/app`},
		{"url password with a slash", `redis://u:pa/ss@cache:6379`, `redis://u:REDACTED@cache:6379`},
		{"empty user", `redis://:secretpw@cache:6379`, `redis://:REDACTED@cache:6379`},
		{"url clipped before its @", `"` + long[:80] + `…"`, `"postgres://user:REDACTED…"`},
		{"two urls", `from postgres://a:secretpw@h1/x to mysql://b:secretpw2@h2/y`, `from postgres://a:REDACTED@h1/x to mysql://b:REDACTED@h2/y`},
		{"mongodb hosts", `mongodb://u:secretpw@h1:27017,h2:27017/?authSource=admin`, `mongodb://u:REDACTED@h1:27017,h2:27017/?authSource=admin`},
		{"url inside a query", `s3://b/p?endpoint=http://k:secretpw@127.0.0.1:7070`, `s3://b/p?endpoint=http://k:REDACTED@127.0.0.1:7070`},
		// Key/value forms.
		{"conninfo", `host=db port=5432 user=u password=secretpw dbname=x`, `host=db port=5432 user=u password=REDACTED dbname=x`},
		{"quoted conninfo", `password='secret pw' host=db`, `password='REDACTED' host=db`},
		{"query string", `?user=u&password=secretpw&sslmode=verify-full`, `?user=u&password=REDACTED&sslmode=verify-full`},
		{"environment", `PGPASSWORD=secretpw AWS_SECRET_ACCESS_KEY=abc/def+ghi MYSQL_PWD=x1`, `PGPASSWORD=REDACTED AWS_SECRET_ACCESS_KEY=REDACTED MYSQL_PWD=REDACTED`},
		{"spaces around =", `token = abc123`, `token = REDACTED`},
		{"json", `{"user":"u","password":"secret\"pw","port":5432}`, `{"user":"u","password":"REDACTED","port":5432}`},
		{"json with spaces", `{"client_secret": "s3cr3t", "id": 1}`, `{"client_secret": "REDACTED", "id": 1}`},
		{"go map", `map[note:x password:secretpw]`, `map[note:x password:REDACTED`},
		{"flag", `--password=secretpw --host=db`, `--password=REDACTED --host=db`},
		{"api key", `x-api-key=abc&api_key=def`, `x-api-key=REDACTED&api_key=REDACTED`},
		{"presigned url", `https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA/x&X-Amz-Signature=deadbeef`, `https://b.s3.amazonaws.com/k?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED`},
		// Headers and tokens.
		{"authorization bearer", `Authorization: Bearer eyJhbGciOi.x.y`, `Authorization: Bearer REDACTED`},
		{"authorization basic", `authorization=Basic dXNlcjpwYXNz`, `authorization=Basic REDACTED`},
		{"header map", `map[Authorization:[Bearer abcdefghijk]]`, `map[Authorization:[Bearer REDACTED`},
		{"bearer alone", `sent bearer abcdefgh1234 to the api`, `sent bearer REDACTED to the api`},
		{"pem key", "key: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY----- done", "key: -----BEGIN EC PRIVATE KEY-----REDACTED-----END EC PRIVATE KEY----- done"},
		{"pem key cut", "-----BEGIN PRIVATE KEY-----\nMIIEvQIB", "-----BEGIN PRIVATE KEY-----REDACTED-----END PRIVATE KEY-----"},
		// Left alone.
		{"user only", `postgres://cnvrg@postgres.cnvrg:5432/cnvrg`, ``},
		{"host and port", `connect to http://127.0.0.1:9200/_bulk failed`, ``},
		{"bucket url", `s3://backups/capsule/?endpoint=http://127.0.0.1:7070&region=us-east-1`, ``},
		{"ipv6", `https://[::1]:9200/x`, ``},
		{"port then text", `dial http://db:5432: connection refused`, ``},
		{"prose colon", `url: must not contain a password: use passwordEnv or passwordFile`, ``},
		{"setting names", `passwordFile: open /run/secrets/pw: no such file or directory; passwordEnv=PG_PASSWORD is unset`, ``},
		{"auth failure", `FATAL: password authentication failed for user "capsule" (SQLSTATE 28P01)`, ``},
		{"tokens count", `tokens=5 secrets: 0 tokenizer=word`, ``},
		{"plain", `request finished status=succeeded bytes=1234`, ``},
		{"bearer word", `the bearer of news`, ``},
		{"already redacted", `postgres://u:REDACTED@h/x password=REDACTED Authorization: Bearer REDACTED`, ``},
		{"empty", ``, ``},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			if want == "" {
				want = c.in
			}
			if got := String(c.in); got != want {
				t.Errorf("String(%q)\n got %q\nwant %q", c.in, got, want)
			}
			if got := String(String(c.in)); got != want {
				t.Errorf("not idempotent: %q", got)
			}
		})
	}
}

func TestField(t *testing.T) {
	if got := Field("password", "hunter2"); got != Mask {
		t.Errorf("password field: %v", got)
	}
	if got := Field("PGPASSWORD", 12345); got != Mask {
		t.Errorf("PGPASSWORD field: %v", got)
	}
	if got := Field("password", ""); got != "" {
		t.Errorf("an empty password field became %v", got)
	}
	if got := Field("error", errors.New("dial postgres://u:secretpw@h/x: refused")); got != "dial postgres://u:REDACTED@h/x: refused" {
		t.Errorf("error field: %v", got)
	}
	plain := errors.New("plain")
	if got := Field("error", plain); got != plain {
		t.Errorf("an error without a secret was replaced: %#v", got)
	}
	if got := Field("bytes", int64(5)); got != int64(5) {
		t.Errorf("a number changed: %#v", got)
	}
	m := Map(map[string]string{"password": "secretpw", "note": "token=secretpw", "team": "ml"})
	if m["password"] != Mask || m["note"] != "token="+Mask || m["team"] != "ml" {
		t.Errorf("Map: %v", m)
	}
	if Map(nil) != nil {
		t.Errorf("Map(nil) is not nil")
	}
	type conn struct{ Host, Password string }
	if got := fmt.Sprint(Field("conn", conn{"db", "secretpw"})); strings.Contains(got, "secretpw") {
		t.Errorf("a struct's secret survived: %s", got)
	}
	nested := Field("details", map[string]any{"api_key": "k1", "list": []any{"password=secretpw"}, "n": 3}).(map[string]any)
	if nested["api_key"] != Mask || nested["list"].([]any)[0] != "password="+Mask || nested["n"] != 3 {
		t.Errorf("nested: %v", nested)
	}
}

func TestFormatter(t *testing.T) {
	for _, f := range []logrus.Formatter{&logrus.JSONFormatter{}, &logrus.TextFormatter{DisableColors: true}} {
		var buf bytes.Buffer
		l := logrus.New()
		l.SetOutput(&buf)
		l.SetFormatter(f)
		Logger(l)
		Logger(l) // twice wraps once
		base := l.WithField("source", "postgres://u:secretpw@db/x")
		base.WithError(errors.New("auth failed: password=secretpw")).
			WithFields(logrus.Fields{"password": "secretpw", "labels": map[string]string{"token": "secretpw"}, "request_id": "r1"}).
			Warn("rejecting source postgres://u:secretpw@db/x")
		out := buf.String()
		if strings.Contains(out, "secretpw") {
			t.Errorf("%T: the secret is in the log line: %s", f, out)
		}
		if !strings.Contains(out, "r1") || !strings.Contains(out, "postgres://u:REDACTED@db/x") {
			t.Errorf("%T: the line lost what is not secret: %s", f, out)
		}
		// The caller's entry is untouched.
		if base.Data["source"] != "postgres://u:secretpw@db/x" {
			t.Errorf("the formatter changed the caller's entry")
		}
	}
}
