// Package config loads capsule's configuration: defaults, then a YAML
// file, then environment variables, then flags (applied by the caller),
// validated once. Unknown keys in the file are errors.
//
// Sources name the data services a worker may touch. Their secrets are
// never in the file itself: a source gives passwordEnv (an environment
// variable's name) or passwordFile (a file's path), resolved each time a
// run needs it so rotated secrets are picked up.
package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/maintenance"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
	"github.com/cnvrg/capsule/schedule"
	"github.com/cnvrg/capsule/watcher"
)

// Config is the whole configuration.
type Config struct {
	// Bucket is the bucket URL (s3://… or file://…).
	Bucket string `yaml:"bucket"`
	// Cluster is the default cluster of requests this client makes.
	Cluster string `yaml:"cluster"`
	Worker  Worker `yaml:"worker"`
	// Sources maps a source's name to its settings: "engine" plus the
	// engine's own keys.
	Sources map[string]map[string]any `yaml:"sources"`
	// Legacy is where the old capsule service (cnvrg-capsule 1.x) left
	// its backups, for the commands that read them.
	Legacy Legacy `yaml:"legacy"`
	// Signatures configures signed backups: the key a worker signs with
	// and the keys every reader trusts.
	Signatures Signatures `yaml:"signatures"`
}

// Signatures configures signed backups (docs/verify-signatures.md).
type Signatures struct {
	// SigningKeyFile is the worker's private key, an unencrypted OpenSSH
	// key file (ssh-keygen -t ed25519), kept outside the bucket: every
	// index and verification record the worker writes is signed with
	// it, and its public half is trusted. Env CAPSULE_SIGNING_KEY_FILE,
	// flag --signing-key.
	SigningKeyFile string `yaml:"signingKeyFile"`
	// TrustedKeys are the public keys whose signatures are believed, one
	// per entry, as in authorized_keys ("ssh-ed25519 AAAA… comment") or
	// allowed_signers. Env CAPSULE_TRUSTED_KEYS (one per line).
	TrustedKeys []string `yaml:"trustedKeys"`
	// TrustedKeysFile is a file of such lines (an allowed_signers file
	// serves ssh-keygen -Y verify too). Env CAPSULE_TRUSTED_KEYS_FILE,
	// flag --trusted-keys.
	TrustedKeysFile string `yaml:"trustedKeysFile"`
	// AllowUnsigned accepts backups and verification records that have
	// no signature at all (made before signing): restores, verifications,
	// retention and listings believe them. A signature that is there but
	// does not check out is never accepted. Env CAPSULE_ALLOW_UNSIGNED,
	// flag --allow-unsigned.
	AllowUnsigned bool `yaml:"allowUnsigned"`
}

// Signing returns the signer (nil without a signing key) and the trust
// of this configuration: the trusted keys and the signer's own public
// key. Without any key, the trust checks nothing (every backup is
// "unchecked", as before signing).
func (c *Config) Signing() (*index.Signer, *index.Trust, error) {
	s := c.Signatures
	var signer *index.Signer
	var keys []ssh.PublicKey
	if s.SigningKeyFile != "" {
		var err error
		if signer, err = index.LoadSigner(s.SigningKeyFile); err != nil {
			return nil, nil, fmt.Errorf("signatures.signingKeyFile (--signing-key, CAPSULE_SIGNING_KEY_FILE): %w", err)
		}
		keys = append(keys, signer.PublicKey())
	}
	for i, line := range s.TrustedKeys {
		k, err := index.ParseTrustedKeys([]byte(line))
		if err == nil && len(k) == 0 {
			err = errors.New("no key")
		}
		if err != nil {
			return nil, nil, fmt.Errorf("signatures.trustedKeys[%d]: %w", i, err)
		}
		keys = append(keys, k...)
	}
	if s.TrustedKeysFile != "" {
		data, err := os.ReadFile(s.TrustedKeysFile)
		if err == nil {
			var k []ssh.PublicKey
			if k, err = index.ParseTrustedKeys(data); err == nil && len(k) == 0 {
				err = errors.New("it holds no key")
			}
			keys = append(keys, k...)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("signatures.trustedKeysFile %s (--trusted-keys, CAPSULE_TRUSTED_KEYS_FILE): %w", s.TrustedKeysFile, err)
		}
	}
	return signer, index.NewTrust(keys, s.AllowUnsigned), nil
}

// Legacy locates the old capsule service's backups.
type Legacy struct {
	// DstDir is the prefix of the old service's backups in each bucket:
	// its --dst-dir (env CNVRG_CAPSULE_DST_DIR), default
	// cnvrg-smart-backups. No leading or trailing slash.
	DstDir string `yaml:"dstDir"`
}

// DefaultLegacyDstDir is the old capsule service's --dst-dir default.
const DefaultLegacyDstDir = "cnvrg-smart-backups"

// Worker holds the worker's settings.
type Worker struct {
	Concurrency int           `yaml:"concurrency"`
	Poll        time.Duration `yaml:"poll"`
	Lease       time.Duration `yaml:"lease"`
	MaxAttempts int           `yaml:"maxAttempts"`
	Grace       time.Duration `yaml:"grace"`
	Timeout     time.Duration `yaml:"timeout"`
	// Compression: zstd-fastest (default, executor.DefaultCompression),
	// zstd (smaller, more CPU), zstd-better, none.
	Compression string `yaml:"compression"`
	// RetainFor sets an Object Lock retain-until date this far ahead on
	// everything written under backups/ and on every WAL object under wal/
	// (0: none).
	RetainFor time.Duration `yaml:"retainFor"`
	// Scratch is where point-in-time restores run their temporary
	// PostgreSQL server (default the system's temporary directory): it
	// needs room for the whole recovered cluster.
	Scratch string `yaml:"scratch"`
	// MaxControlObject is the size limit, in bytes, of the control
	// objects (requests, leases, results) that workers, the API and the
	// CLI read: a larger request is rejected without being read.
	MaxControlObject int64 `yaml:"maxControlObject"`
	// Webhooks are told of failed requests, missed schedules and failed
	// verifications (package alert). A source's own webhook (its
	// "webhook" or "webhookEnv" key) hears only about that source.
	Webhooks []Webhook `yaml:"webhooks"`
	// Encryption: whom backups are encrypted to, and where the keys that
	// open them for restores and verifications are.
	Encryption Encryption `yaml:"encryption"`
	// Maintenance is the retention and garbage collection every worker
	// runs, one replica at a time.
	Maintenance Maintenance `yaml:"maintenance"`
}

// Webhook is one webhook of the worker.
type Webhook struct {
	// URL, or URLEnv: the name of an environment variable of the
	// worker's holding it (a Slack webhook's URL is a secret).
	URL    string `yaml:"url"`
	URLEnv string `yaml:"urlEnv"`
	// Events it is sent: failed, verify-failed, missed; all when empty.
	Events []string `yaml:"events"`
}

// Encryption configures client-side encryption with age (package crypt).
// Nothing here is secret: identities are named by file or environment
// variable, never given inline.
type Encryption struct {
	// Recipients are public keys (age1…, ssh-ed25519 …, ssh-rsa …): every
	// backup of a source that names none of its own is encrypted to all
	// of them. Changing them rotates keys for new backups; old backups
	// keep theirs.
	Recipients []string `yaml:"recipients"`
	// IdentityFile is an age identity file or an unencrypted SSH private
	// key that opens backups for restores and verifications.
	IdentityFile string `yaml:"identityFile"`
	// IdentityEnv names an environment variable holding the same content
	// (default CAPSULE_AGE_IDENTITY; read only when set).
	IdentityEnv string `yaml:"identityEnv"`
}

// DefaultIdentityEnv is the environment variable a worker reads age
// identities from unless worker.encryption.identityEnv names another.
const DefaultIdentityEnv = "CAPSULE_AGE_IDENTITY"

// Identities returns the worker's own age identities, read now from
// worker.encryption.identityFile and the identity environment variable;
// nil when neither gives any.
func (c *Config) Identities(context.Context) (*crypt.Identities, error) {
	e := c.Worker.Encryption
	return loadIdentities("worker.encryption", e.IdentityFile, e.IdentityEnv, DefaultIdentityEnv)
}

// loadIdentities parses what readIdentities reads.
func loadIdentities(field, file, envName, defEnv string) (*crypt.Identities, error) {
	found, err := readIdentities(field, file, envName, defEnv)
	if err != nil {
		return nil, err
	}
	var ids *crypt.Identities
	for origin, data := range found {
		more, err := crypt.ParseIdentities(data, origin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		ids = ids.Merge(more)
	}
	return ids, nil
}

// readIdentities reads identity content from a file and an environment
// variable (envName, else defEnv; skipped when unset or blank), keyed by
// origin; field names the setting in errors.
func readIdentities(field, file, envName, defEnv string) (map[string][]byte, error) {
	found := map[string][]byte{}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s.identityFile: %w", field, err)
		}
		found["file "+file] = data
	}
	if envName == "" {
		envName = defEnv
	}
	if envName != "" {
		if v, ok := os.LookupEnv(envName); ok && strings.TrimSpace(v) != "" {
			found["environment variable "+envName] = []byte(v)
		}
	}
	return found, nil
}

// Maintenance is worker.maintenance.
type Maintenance struct {
	// Every is how often the fleet runs a pass (default 1h).
	Every time.Duration `yaml:"every"`
	// GCAfter is how old garbage must be before it goes (default 24h).
	GCAfter time.Duration `yaml:"gcAfter"`
}

// planKeys are a source's own plan, not the engine's settings.
var planKeys = map[string]bool{"schedule": true, "keepLast": true, "keepDaily": true, "keepWeekly": true, "keepMonthly": true, "verifySchedule": true}

// SourcePlan is a source's own plan: a schedule of backups, a retention
// policy and a schedule of verifications, each optional.
type SourcePlan struct {
	Source   string
	Schedule *schedule.Schedule
	Verify   *schedule.Schedule
	// Retention is nil when the source sets no keep*.
	Retention *retention.Policy
}

// Plans returns the plans of the configured sources (those with any
// plan key), in the configured cluster.
func (c *Config) Plans() ([]SourcePlan, error) {
	var out []SourcePlan
	for _, name := range c.SourceNames() {
		raw := c.Sources[name]
		sp := SourcePlan{Source: name}
		keep := retention.Policy{Cluster: c.Cluster, Source: name, Plan: name, IncludeManual: true}
		has := false
		for _, k := range []string{"schedule", "verifySchedule"} {
			v, ok := raw[k]
			if !ok {
				continue
			}
			str, isStr := v.(string)
			if !isStr {
				return nil, fmt.Errorf("sources.%s.%s: must be a period such as 24h or a cron expression", name, k)
			}
			sch, err := schedule.Parse(str)
			if err != nil {
				return nil, fmt.Errorf("sources.%s.%s: %w", name, k, err)
			}
			if k == "schedule" {
				sp.Schedule = &sch
			} else {
				sp.Verify = &sch
			}
			has = true
		}
		ret := false
		for k, dst := range map[string]*int{"keepLast": &keep.Keep, "keepDaily": &keep.KeepDaily, "keepWeekly": &keep.KeepWeekly, "keepMonthly": &keep.KeepMonthly} {
			v, ok := raw[k]
			if !ok {
				continue
			}
			n, isInt := v.(int)
			if !isInt || n < 0 {
				return nil, fmt.Errorf("sources.%s.%s: must be a whole number, at least 0", name, k)
			}
			*dst, ret, has = n, true, true
		}
		if sp.Verify != nil && sp.Schedule == nil {
			return nil, fmt.Errorf("sources.%s.verifySchedule: needs a schedule of backups (sources.%s.schedule) to verify", name, name)
		}
		if ret {
			if err := keep.Validate(); err != nil {
				return nil, fmt.Errorf("sources.%s: %w", name, err)
			}
			sp.Retention = &keep
		}
		if has {
			out = append(out, sp)
		}
	}
	return out, nil
}

// Watcher returns the worker's settings as the watcher takes them
// (without Bucket, Runner, name or hooks).
func (w Worker) Watcher() watcher.Config {
	return watcher.Config{
		Concurrency: w.Concurrency, Poll: w.Poll, Lease: w.Lease, MaxAttempts: w.MaxAttempts,
		Grace: w.Grace, MaxControlObject: w.MaxControlObject,
	}
}

// Default returns the defaults.
func Default() Config {
	return Config{
		Cluster: requests.DefaultCluster,
		Worker: Worker{
			Concurrency: watcher.DefaultConcurrency, Poll: watcher.DefaultPoll, Lease: watcher.DefaultLease,
			MaxAttempts: watcher.DefaultMaxAttempts, Grace: watcher.DefaultGrace, Timeout: 24 * time.Hour, Compression: executor.DefaultCompression,
			MaxControlObject: requests.DefaultMaxControlObject,
			Maintenance:      Maintenance{Every: maintenance.DefaultEvery, GCAfter: maintenance.DefaultGCAfter},
		},
		Legacy: Legacy{DstDir: DefaultLegacyDstDir},
	}
}

// Load reads the YAML file at path over the defaults. An empty path gives
// the defaults.
func Load(path string) (Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	if err := c.parse(data); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse reads YAML over the defaults.
func Parse(data []byte) (Config, error) {
	c := Default()
	err := c.parse(data)
	return c, err
}

func (c *Config) parse(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return explain(data, err)
	}
	return nil
}

// ApplyEnv applies CAPSULE_BUCKET, CAPSULE_CLUSTER, the old service's
// CNVRG_CAPSULE_DST_DIR and the signature settings (CAPSULE_SIGNING_KEY_FILE,
// CAPSULE_TRUSTED_KEYS_FILE, CAPSULE_TRUSTED_KEYS, CAPSULE_ALLOW_UNSIGNED)
// from getenv.
func (c *Config) ApplyEnv(getenv func(string) string) {
	if v := getenv("CAPSULE_BUCKET"); v != "" {
		c.Bucket = v
	}
	if v := getenv("CAPSULE_CLUSTER"); v != "" {
		c.Cluster = v
	}
	if v := getenv(EnvDstDir); v != "" {
		c.SetLegacyDstDir(v)
	}
	if v := getenv("CAPSULE_SIGNING_KEY_FILE"); v != "" {
		c.Signatures.SigningKeyFile = v
	}
	if v := getenv("CAPSULE_TRUSTED_KEYS_FILE"); v != "" {
		c.Signatures.TrustedKeysFile = v
	}
	for _, line := range strings.Split(getenv("CAPSULE_TRUSTED_KEYS"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			c.Signatures.TrustedKeys = append(c.Signatures.TrustedKeys, line)
		}
	}
	if v := getenv("CAPSULE_ALLOW_UNSIGNED"); v == "true" || v == "1" {
		c.Signatures.AllowUnsigned = true
	}
}

// SetLegacyDstDir sets Legacy.DstDir from the old service's --dst-dir,
// which took "dir", "dir/" or "/dir" alike.
func (c *Config) SetLegacyDstDir(v string) { c.Legacy.DstDir = strings.Trim(strings.TrimSpace(v), "/") }

// Validate checks the configuration against the engines it will run
// with, naming the bad setting.
func (c *Config) Validate(reg *engines.Registry) error {
	if err := requests.ValidateName(c.Cluster); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	w := c.Worker
	if err := w.Watcher().CheckSettings(); err != nil {
		var se *watcher.SettingError
		if errors.As(err, &se) {
			return fmt.Errorf("worker.%s: %s", se.Key, se.Problem)
		}
		return err
	}
	switch {
	case w.Timeout <= 0:
		return fmt.Errorf("worker.timeout: must be positive, got %s", w.Timeout)
	case w.RetainFor < 0:
		return fmt.Errorf("worker.retainFor: must not be negative, got %s", w.RetainFor)
	}
	mc := maintenance.Config{Every: w.Maintenance.Every, GCAfter: w.Maintenance.GCAfter}
	if err := mc.Check(); err != nil {
		return err
	}
	if _, err := c.Plans(); err != nil {
		return err
	}
	switch w.Compression {
	case "zstd", "zstd-fastest", "zstd-better", "none":
	default:
		return fmt.Errorf("worker.compression: %q is not one of zstd, zstd-fastest, zstd-better, none", w.Compression)
	}
	if _, err := c.Webhooks(func(string) (string, bool) { return "http://set", true }); err != nil {
		return err
	}
	if _, err := crypt.ParseRecipients(w.Encryption.Recipients); err != nil {
		return fmt.Errorf("worker.encryption.recipients: %w", err)
	}
	if err := checkKeyPrefix(c.Legacy.DstDir); err != nil {
		return fmt.Errorf("legacy.dstDir (--dst-dir, %s): %w", EnvDstDir, err)
	}
	for _, name := range c.SourceNames() {
		src, err := c.source(name)
		if err != nil {
			return err
		}
		if reg == nil {
			continue
		}
		eng, err := reg.Get(src.Engine)
		if err != nil {
			return fmt.Errorf("sources.%s.engine: %w", name, err)
		}
		if err := eng.Validate(src); err != nil {
			return fmt.Errorf("sources.%s: %w", name, err)
		}
	}
	return nil
}

// SourceNames lists the configured sources in order.
func (c *Config) SourceNames() []string {
	names := make([]string, 0, len(c.Sources))
	for n := range c.Sources {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup implements executor.Sources.
func (c *Config) Lookup(name string) (engines.Source, error) {
	if _, ok := c.Sources[name]; !ok {
		known := strings.Join(c.SourceNames(), ", ")
		if known == "" {
			known = "none configured"
		}
		return engines.Source{}, fmt.Errorf("%w %q (known: %s)", executor.ErrUnknownSource, name, known)
	}
	return c.source(name)
}

func (c *Config) source(name string) (engines.Source, error) {
	if err := requests.ValidateName(name); err != nil {
		return engines.Source{}, fmt.Errorf("sources: %w", err)
	}
	raw := c.Sources[name]
	settings := make(map[string]any, len(raw))
	var engine, pwEnv, pwFile, idFile, idEnv string
	var recipients []string
	for k, v := range raw {
		if planKeys[k] {
			continue // the source's plan (Plans), not the engine's
		}
		switch k {
		case "recipients":
			list, ok := v.([]any)
			if !ok {
				return engines.Source{}, fmt.Errorf("sources.%s.recipients: must be a list of public keys", name)
			}
			for _, e := range list {
				s, ok := e.(string)
				if !ok {
					return engines.Source{}, fmt.Errorf("sources.%s.recipients: must be a list of public keys (strings)", name)
				}
				recipients = append(recipients, s)
			}
			if _, err := crypt.ParseRecipients(recipients); err != nil {
				return engines.Source{}, fmt.Errorf("sources.%s.recipients: %w", name, err)
			}
		case "identityFile", "identityEnv":
			s, ok := v.(string)
			if !ok || s == "" {
				return engines.Source{}, fmt.Errorf("sources.%s.%s: must be a non-empty string", name, k)
			}
			if k == "identityFile" {
				idFile = s
			} else {
				idEnv = s
			}
		case "engine", "passwordEnv", "passwordFile":
			s, ok := v.(string)
			if !ok || s == "" {
				return engines.Source{}, fmt.Errorf("sources.%s.%s: must be a non-empty string", name, k)
			}
			switch k {
			case "engine":
				engine = s
			case "passwordEnv":
				pwEnv = s
			case "passwordFile":
				pwFile = s
			}
		case "webhook", "webhookEnv":
			if s, ok := v.(string); !ok || s == "" {
				return engines.Source{}, fmt.Errorf("sources.%s.%s: must be a non-empty string", name, k)
			}
		case "password":
			return engines.Source{}, fmt.Errorf("sources.%s.password: secrets are not kept in the configuration; use passwordEnv or passwordFile", name)
		default:
			settings[k] = v
		}
	}
	if engine == "" {
		return engines.Source{}, fmt.Errorf("sources.%s.engine: is required", name)
	}
	if pwEnv != "" && pwFile != "" {
		return engines.Source{}, fmt.Errorf("sources.%s: give passwordEnv or passwordFile, not both", name)
	}
	src := engines.Source{Name: name, Engine: engine, Config: settings, Recipients: recipients}
	if idFile != "" || idEnv != "" {
		src.Identities = func(context.Context) (map[string][]byte, error) {
			return readIdentities("sources."+name, idFile, idEnv, "")
		}
	}
	switch {
	case pwEnv != "":
		src.Password = func(context.Context) (string, error) {
			v, ok := os.LookupEnv(pwEnv)
			if !ok {
				return "", fmt.Errorf("environment variable %s (sources.%s.passwordEnv) is not set in the worker's environment: set it where the worker runs (its container or service), not where the request was submitted", pwEnv, name)
			}
			return v, nil
		}
	case pwFile != "":
		src.Password = func(context.Context) (string, error) {
			data, err := os.ReadFile(pwFile)
			if err != nil {
				return "", fmt.Errorf("sources.%s.passwordFile: the worker cannot read it: %w", name, err)
			}
			return strings.TrimRight(string(data), "\r\n"), nil
		}
	}
	return src, nil
}
