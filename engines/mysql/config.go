package mysql

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/cnvrg/capsule/engines"
)

// Config is a mysql source's settings.
type Config struct {
	// URL is mysql://USER@HOST:PORT/DB; DB is the database backed up when
	// databases is not set. It must not hold a password.
	URL string `json:"url"`
	// PasswordEnv and PasswordFile are resolved by the worker into
	// Source.Password; accepted here so a source may carry them.
	PasswordEnv  string `json:"passwordEnv,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
	// Databases lists the databases, or "all" (every one but the
	// server's own: mysql, sys, information_schema, performance_schema).
	Databases Databases `json:"databases,omitempty"`
	// DumpTool names the dump program (default: mariadb-dump, else
	// mysqldump, from PATH).
	DumpTool string `json:"dumpTool,omitempty"`
	// ClientTool is accepted for older configurations and ignored: a
	// restore sends the dump's statements over the driver itself, never
	// through the mysql client (see the package doc).
	ClientTool string `json:"clientTool,omitempty"`
	// Definers lists accounts (user@host) that objects a restore
	// recreates (triggers, views, routines, events) may run as, besides
	// the restoring account itself.
	Definers []string `json:"definers,omitempty"`
	// TLS turns on TLS, the server's certificate checked against
	// tls.caFile (default: the system's CAs) for the url's host, for the
	// driver and the tools alike. Without it the connection is not
	// encrypted.
	TLS *engines.TLS `json:"tls,omitempty"`
}

// Databases is either "all" or a list of names.
type Databases struct {
	All  bool
	List []string
}

// UnmarshalJSON accepts "all" or a list of names.
func (d *Databases) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*d = Databases{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != "all" {
			return fmt.Errorf("setting databases: %q is neither \"all\" nor a list of names", s)
		}
		*d = Databases{All: true}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("setting databases: want \"all\" or a list of names, got %s", b)
	}
	*d = Databases{List: l}
	return nil
}

// systemSchemas are never backed up.
var systemSchemas = []string{"mysql", "sys", "information_schema", "performance_schema"}

// target is where and as whom to connect, without the password.
type target struct {
	addr string
	host string
	port int
	user string
	db   string // the URL's database, if any
}

func (c *Config) validate() error {
	if c.URL == "" {
		return errors.New("setting url is required (mysql://USER@HOST:PORT/DB)")
	}
	t, err := c.target()
	if err != nil {
		return err
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if c.TLS != nil && c.TLS.ServerName != "" && !strings.EqualFold(c.TLS.ServerName, t.host) {
		return errors.New("setting tls.serverName: the MySQL and MariaDB client tools check the url's host and cannot be told another name; put the certificate's name in url instead")
	}
	if c.Databases.List != nil && len(c.Databases.List) == 0 {
		return errors.New("setting databases: empty list (use \"all\" or name at least one)")
	}
	if !c.Databases.All && c.Databases.List == nil && t.db == "" {
		return errors.New("setting databases: no databases named and the url names none")
	}
	for _, d := range c.Definers {
		if u, h, ok := strings.Cut(d, "@"); !ok || u == "" || h == "" || strings.ContainsAny(d, "`'\"\n") {
			return fmt.Errorf("setting definers: %q is not an account as user@host", d)
		}
	}
	seen := map[string]bool{}
	for _, n := range c.Databases.List {
		if err := checkName(n); err != nil {
			return fmt.Errorf("setting databases: %w", err)
		}
		if slices.Contains(systemSchemas, strings.ToLower(n)) {
			return fmt.Errorf("setting databases: %s is a system schema", n)
		}
		if seen[n] {
			return fmt.Errorf("setting databases: %s is listed twice", n)
		}
		seen[n] = true
	}
	return nil
}

// checkName refuses names this engine does not handle: empty, too long,
// or with characters that need more than backtick quoting.
func checkName(n string) error {
	if n == "" || len(n) > 64 {
		return fmt.Errorf("database name %q must have 1 to 64 characters", n)
	}
	for _, r := range n {
		if r < 0x20 || r == '`' || r == '/' || r == '\\' || r == '.' {
			return fmt.Errorf("database name %q has a character this engine does not handle", n)
		}
	}
	return nil
}

func (c *Config) target() (*target, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, errors.New("setting url is not a valid URL")
	}
	if u.Scheme != "mysql" && u.Scheme != "mariadb" {
		return nil, fmt.Errorf("setting url: scheme %q is not mysql", u.Scheme)
	}
	if _, has := u.User.Password(); has {
		return nil, errors.New("setting url must not hold a password: use passwordEnv or passwordFile")
	}
	if u.User.Username() == "" {
		return nil, errors.New("setting url: no user (mysql://USER@HOST:PORT/DB)")
	}
	if u.Hostname() == "" {
		return nil, errors.New("setting url: no host")
	}
	port := 3306
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("setting url: bad port %q", p)
		}
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("setting url: no query or fragment allowed")
	}
	db := strings.Trim(u.Path, "/")
	if strings.Contains(db, "/") {
		return nil, errors.New("setting url: the path is one database name")
	}
	if db != "" {
		if err := checkName(db); err != nil {
			return nil, fmt.Errorf("setting url: %w", err)
		}
	}
	return &target{addr: net.JoinHostPort(u.Hostname(), strconv.Itoa(port)), host: u.Hostname(), port: port, user: u.User.Username(), db: db}, nil
}
