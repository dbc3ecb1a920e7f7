package elasticsearch

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/cnvrg/capsule/engines"
)

// Modes of a source.
const (
	ModeLogical  = "logical"
	ModeSnapshot = "snapshot"
)

// Config is a source's settings.
type Config struct {
	// URL of the cluster: https://HOST:9200 (no user or password in it).
	URL string `json:"url"`
	// User for basic authentication; the password comes from the source's
	// secret.
	User string `json:"user,omitempty"`
	// PasswordEnv and PasswordFile are resolved by the worker into the
	// source's secret; the engine accepts and ignores them.
	PasswordEnv  string `json:"passwordEnv,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
	// Indices are index, alias or data stream names or patterns ("logs-*").
	Indices []string `json:"indices"`
	// TLS is the CA, server name and client certificate for an https://
	// url (the cluster's certificate is checked against the system's CAs
	// for the url's host by default).
	TLS *engines.TLS `json:"tls,omitempty"`
	// CAFile is the older spelling of tls.caFile.
	CAFile string `json:"caFile,omitempty"`
	// Mode is "logical" (default) or "snapshot".
	Mode string `json:"mode,omitempty"`
	// Repository is the snapshot repository (snapshot mode only).
	Repository string `json:"repository,omitempty"`
	// Templates are extra index and component template name patterns to
	// back up besides those whose index patterns match a backed-up index.
	Templates []string `json:"templates,omitempty"`
	// Pipelines are extra ingest pipeline id patterns to back up besides
	// those the backed-up indices and templates name as default or final
	// pipeline.
	Pipelines []string `json:"pipelines,omitempty"`
	// BatchSize is the number of documents per search page and per _bulk
	// request (default 1000).
	BatchSize int `json:"batchSize,omitempty"`
	// KeepAlive is how long a point in time or scroll stays open between
	// two pages (default "5m").
	KeepAlive string `json:"keepAlive,omitempty"`
}

const (
	defaultBatchSize = 1000
	defaultKeepAlive = "5m"
)

var (
	esTime       = regexp.MustCompile(`^[1-9][0-9]*(ms|s|m|h|d)$`)
	indexPattern = regexp.MustCompile(`^[^\s,/\\"<>|#]+$`)
	repoName     = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)
	// suffixRe is what a renameSuffix may hold: lowercase index-name
	// characters.
	suffixRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$|^[-_.][a-z0-9._-]{1,63}$`)
)

func decodeConfig(src engines.Source) (*Config, error) {
	var cfg Config
	if err := src.Decode(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("source %s (engine %s): %w", src.Name, src.Engine, err)
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeLogical
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = defaultBatchSize
	}
	if cfg.KeepAlive == "" {
		cfg.KeepAlive = defaultKeepAlive
	}
	return &cfg, nil
}

// tlsSetting is the tls setting, or the older caFile as one.
func (c *Config) tlsSetting() *engines.TLS {
	if c.TLS != nil {
		return c.TLS
	}
	return &engines.TLS{CAFile: c.CAFile}
}

func (c *Config) validate() error {
	if c.URL == "" {
		return errors.New("url: required (https://HOST:9200)")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Parse errors quote the URL; say only which setting.
		return errors.New("url: not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("url: scheme %q, want http or https", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("url: no host")
	}
	if u.User != nil {
		return errors.New("url: must not hold a user or password: use user and passwordEnv or passwordFile")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("url: must not have a query or fragment")
	}
	if len(c.Indices) == 0 {
		return errors.New("indices: required (names or patterns such as \"logs-*\")")
	}
	for _, p := range c.Indices {
		if !indexPattern.MatchString(p) || strings.HasPrefix(p, "-") {
			return fmt.Errorf("indices: %q is not an index name or pattern", p)
		}
	}
	for _, p := range c.Templates {
		if !indexPattern.MatchString(p) {
			return fmt.Errorf("templates: %q is not a name pattern", p)
		}
	}
	for _, p := range c.Pipelines {
		if !indexPattern.MatchString(p) {
			return fmt.Errorf("pipelines: %q is not an id pattern", p)
		}
	}
	if c.CAFile != "" {
		if u.Scheme != "https" {
			return errors.New("caFile: set, but url is not https")
		}
		if c.TLS != nil {
			return errors.New("caFile: set it as tls.caFile, not both ways")
		}
		if _, err := os.Stat(c.CAFile); err != nil {
			return fmt.Errorf("caFile: %w", err)
		}
	}
	if c.TLS != nil {
		if u.Scheme != "https" {
			return errors.New("tls: set, but url is not https")
		}
		if err := c.TLS.Validate(); err != nil {
			return err
		}
	}
	switch c.Mode {
	case "", ModeLogical:
		if c.Repository != "" {
			return errors.New("repository: only for mode snapshot")
		}
	case ModeSnapshot:
		if c.Repository == "" {
			return errors.New("repository: required in mode snapshot (an S3 repository the cluster already has)")
		}
		if !repoName.MatchString(c.Repository) {
			return fmt.Errorf("repository: %q is not a repository name", c.Repository)
		}
	default:
		return fmt.Errorf("mode: %q, want %s or %s", c.Mode, ModeLogical, ModeSnapshot)
	}
	if c.BatchSize < 0 || c.BatchSize > 10000 {
		return fmt.Errorf("batchSize: %d, want 1 to 10000", c.BatchSize)
	}
	if c.KeepAlive != "" && !esTime.MatchString(c.KeepAlive) {
		return fmt.Errorf("keepAlive: %q is not a duration such as 5m", c.KeepAlive)
	}
	return nil
}

// restoreOptions are the engine-specific restore options.
type restoreOptions struct {
	// renameSuffix: restore index I into I+suffix and move I's aliases
	// (and the name I, as an alias) to it in one atomic _aliases call.
	renameSuffix string
}

func parseRestoreOptions(extra map[string]string) (restoreOptions, error) {
	var o restoreOptions
	for k, v := range extra {
		switch k {
		case "renameSuffix":
			if !suffixRe.MatchString(v) {
				return o, fmt.Errorf("restore option renameSuffix: %q is not a valid index name suffix (lowercase letters, digits, '.', '_', '-')", v)
			}
			o.renameSuffix = v
		default:
			return o, fmt.Errorf("unknown restore option %q (known: renameSuffix)", k)
		}
	}
	return o, nil
}
