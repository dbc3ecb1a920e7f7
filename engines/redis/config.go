package redis

import (
	"bytes"
	"crypto/tls"
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

// Modes of backup.
const (
	ModeLogical = "logical"
	ModeRDB     = "rdb"
)

// How logical mode reads the keyspace (setting logicalRead).
const (
	ReadAuto = "auto"
	ReadSync = "sync"
	ReadScan = "scan"
)

// How a restore loads the keys (setting restoreLoad).
const (
	LoadAuto      = "auto"
	LoadReplicate = "replicate"
	LoadReplay    = "replay"
)

const defaultBatchSize = 2000

// Config is a redis source's settings.
type Config struct {
	// URL is redis://[user@]HOST:PORT or rediss://[user@]HOST:PORT (TLS).
	// It must not hold a password.
	URL string `json:"url"`
	// PasswordEnv and PasswordFile are resolved by the worker into
	// Source.Password; accepted here so a source may carry them.
	PasswordEnv  string `json:"passwordEnv,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
	// Databases selects the logical databases: a list of numbers, or
	// "all" (the default).
	Databases Databases `json:"databases,omitempty"`
	// Mode is "logical" (default: every key's DUMP payload and expiry,
	// read as LogicalRead says) or "rdb" (the server's snapshot over the
	// replication protocol, stored as it came).
	Mode string `json:"mode,omitempty"`
	// LogicalRead is how logical mode reads the keyspace: "auto" (the
	// default: the replication stream, SYNC, falling back to SCAN and
	// DUMP when the server refuses it), "sync" (the replication stream
	// only: a refusal fails the backup) or "scan" (SCAN and DUMP only,
	// for servers that must not fork).
	LogicalRead string `json:"logicalRead,omitempty"`
	// RestoreLoad is how a restore into this source loads the backup:
	// "auto" (the default: a full sync with the worker as the target's
	// master when that means the same as the replay and the target can
	// reach the worker, else the replay, logging why), "replicate" (the
	// full sync only: fail instead of replaying) or "replay" (flush the
	// backed-up databases and replay the keys with commands).
	RestoreLoad string `json:"restoreLoad,omitempty"`
	// BatchSize is how many keys go in one pipelined round trip (default
	// 2000): SCAN's COUNT, and as many DUMPs or RESTOREs.
	BatchSize int `json:"batchSize,omitempty"`
	// TLS is the CA, server name and client certificate for rediss://
	// (the server's certificate is checked against the system's CAs for
	// the url's host by default).
	TLS *engines.TLS `json:"tls,omitempty"`
	// CAFile and TLSServerName are the older spellings of tls.caFile and
	// tls.serverName.
	CAFile        string `json:"caFile,omitempty"`
	TLSServerName string `json:"tlsServerName,omitempty"`
	// RedisServer is the redis-server binary a verification starts its
	// scratch server with (default "redis-server" on the worker's PATH).
	RedisServer string `json:"redisServer,omitempty"`
}

// Databases is either "all" or a list of database numbers.
type Databases struct {
	All  bool
	List []int
}

// UnmarshalJSON accepts "all" or a list of non-negative numbers.
func (d *Databases) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*d = Databases{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != "all" {
			return fmt.Errorf("setting databases: %q is neither \"all\" nor a list of numbers", s)
		}
		*d = Databases{All: true}
		return nil
	}
	var l []int
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("setting databases: want \"all\" or a list of numbers, got %s", b)
	}
	*d = Databases{List: l}
	return nil
}

// MarshalJSON writes "all" or the list.
func (d Databases) MarshalJSON() ([]byte, error) {
	if d.all() {
		return json.Marshal("all")
	}
	return json.Marshal(d.List)
}

// all reports whether every database is selected (explicitly or by
// default).
func (d Databases) all() bool { return d.All || d.List == nil }

func (d Databases) String() string {
	if d.all() {
		return "all"
	}
	s := make([]string, len(d.List))
	for i, n := range d.List {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (d Databases) has(db int) bool { return d.all() || slices.Contains(d.List, db) }

// decodeConfig decodes and validates a source's settings.
func decodeConfig(src engines.Source) (*Config, error) {
	var c Config
	if err := src.Decode(&c); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("source %s (engine redis): %w", src.Name, err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	if c.URL == "" {
		return errors.New("setting url is required (redis://[user@]HOST:PORT)")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Parse quotes the input, which might hold a password.
		return errors.New("setting url is not a valid URL")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("setting url: scheme %q is not redis or rediss", u.Scheme)
	}
	if _, has := u.User.Password(); has {
		return errors.New("setting url must not hold a password: use passwordEnv or passwordFile")
	}
	if u.Hostname() == "" {
		return errors.New("setting url: no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("setting url: bad port %q", p)
		}
	}
	if strings.Trim(u.Path, "/") != "" {
		return errors.New("setting url: no database path allowed; select databases with the databases setting")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("setting url: no query or fragment allowed")
	}
	if c.Databases.List != nil && len(c.Databases.List) == 0 {
		return errors.New("setting databases: empty list (use \"all\" or name at least one)")
	}
	seen := map[int]bool{}
	for _, n := range c.Databases.List {
		if n < 0 {
			return fmt.Errorf("setting databases: %d is negative", n)
		}
		if seen[n] {
			return fmt.Errorf("setting databases: %d is listed twice", n)
		}
		seen[n] = true
	}
	switch c.Mode {
	case "", ModeLogical, ModeRDB:
	default:
		return fmt.Errorf("setting mode: %q is neither %q nor %q", c.Mode, ModeLogical, ModeRDB)
	}
	switch c.LogicalRead {
	case "", ReadAuto, ReadSync, ReadScan:
	default:
		return fmt.Errorf("setting logicalRead: %q is not %q, %q or %q", c.LogicalRead, ReadAuto, ReadSync, ReadScan)
	}
	if c.LogicalRead != "" && c.mode() != ModeLogical {
		return fmt.Errorf("setting logicalRead is for mode %q only", ModeLogical)
	}
	switch c.RestoreLoad {
	case "", LoadAuto, LoadReplicate, LoadReplay:
	default:
		return fmt.Errorf("setting restoreLoad: %q is not %q, %q or %q", c.RestoreLoad, LoadAuto, LoadReplicate, LoadReplay)
	}
	if c.BatchSize < 0 || c.BatchSize > 100000 {
		return fmt.Errorf("setting batchSize: %d is outside 1..100000", c.BatchSize)
	}
	if (c.CAFile != "" || c.TLSServerName != "") && u.Scheme != "rediss" {
		return errors.New("settings caFile and tlsServerName need a rediss:// url")
	}
	if c.TLS != nil {
		if c.CAFile != "" || c.TLSServerName != "" {
			return errors.New("settings caFile and tlsServerName: set them as tls.caFile and tls.serverName, not both ways")
		}
		if u.Scheme != "rediss" {
			return errors.New("setting tls needs a rediss:// url")
		}
		if err := c.TLS.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// tlsSetting is the tls setting, or the older caFile and tlsServerName
// as one.
func (c *Config) tlsSetting() *engines.TLS {
	if c.TLS != nil {
		return c.TLS
	}
	return &engines.TLS{CAFile: c.CAFile, ServerName: c.TLSServerName}
}

func (c *Config) redisServer() string {
	if c.RedisServer == "" {
		return "redis-server"
	}
	return c.RedisServer
}

func (c *Config) mode() string {
	if c.Mode == "" {
		return ModeLogical
	}
	return c.Mode
}

func (c *Config) logicalRead() string {
	if c.LogicalRead == "" {
		return ReadAuto
	}
	return c.LogicalRead
}

func (c *Config) restoreLoad() string {
	if c.RestoreLoad == "" {
		return LoadAuto
	}
	return c.RestoreLoad
}

func (c *Config) batchSize() int {
	if c.BatchSize == 0 {
		return defaultBatchSize
	}
	return c.BatchSize
}

// endpoint is where and how to connect, without the password.
type endpoint struct {
	network  string // "" for tcp, "unix" for a socket (a scratch server)
	addr     string
	host     string
	user     string
	tls      *tls.Config
	password string
}

func (c *Config) endpoint(password string) (*endpoint, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, errors.New("setting url is not a valid URL")
	}
	port := u.Port()
	if port == "" {
		port = "6379"
	}
	e := &endpoint{addr: net.JoinHostPort(u.Hostname(), port), host: u.Hostname(), user: u.User.Username(), password: password}
	if u.Scheme == "rediss" {
		if e.tls, err = c.tlsSetting().Config(u.Hostname()); err != nil {
			return nil, err
		}
	}
	return e, nil
}
