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

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
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
	// Compression: zstd (default), zstd-fastest, zstd-better, none.
	Compression string `yaml:"compression"`
	// RetainFor sets an Object Lock retain-until date this far ahead on
	// everything written under backups/ (0: none).
	RetainFor time.Duration `yaml:"retainFor"`
	// MaxControlObject is the size limit, in bytes, of the control
	// objects (requests, leases, results) that workers, the API and the
	// CLI read: a larger request is rejected without being read.
	MaxControlObject int64 `yaml:"maxControlObject"`
}

// Default returns the defaults.
func Default() Config {
	return Config{
		Cluster: requests.DefaultCluster,
		Worker: Worker{
			Concurrency: 2, Poll: 5 * time.Second, Lease: 60 * time.Second, MaxAttempts: 3,
			Grace: 30 * time.Second, Timeout: 24 * time.Hour, Compression: "zstd",
			MaxControlObject: requests.DefaultMaxControlObject,
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
		return err
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
	switch {
	case w.Concurrency < 1:
		return fmt.Errorf("worker.concurrency: must be at least 1, got %d", w.Concurrency)
	case w.Lease < 3*time.Second:
		return fmt.Errorf("worker.lease: must be at least 3s, got %s", w.Lease)
	case w.Poll <= 0:
		return fmt.Errorf("worker.poll: must be positive, got %s", w.Poll)
	case w.MaxAttempts < 1:
		return fmt.Errorf("worker.maxAttempts: must be at least 1, got %d", w.MaxAttempts)
	case w.Timeout <= 0:
		return fmt.Errorf("worker.timeout: must be positive, got %s", w.Timeout)
	case w.RetainFor < 0:
		return fmt.Errorf("worker.retainFor: must not be negative, got %s", w.RetainFor)
	case w.MaxControlObject < requests.MinControlObjectLimit || w.MaxControlObject > requests.MaxControlObjectLimit:
		return fmt.Errorf("worker.maxControlObject: must be between %d (64 KiB) and %d (64 MiB) bytes, got %d",
			requests.MinControlObjectLimit, requests.MaxControlObjectLimit, w.MaxControlObject)
	}
	switch w.Compression {
	case "zstd", "zstd-fastest", "zstd-better", "none":
	default:
		return fmt.Errorf("worker.compression: %q is not one of zstd, zstd-fastest, zstd-better, none", w.Compression)
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
	var engine, pwEnv, pwFile string
	for k, v := range raw {
		switch k {
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
	src := engines.Source{Name: name, Engine: engine, Config: settings}
	switch {
	case pwEnv != "":
		src.Password = func(context.Context) (string, error) {
			v, ok := os.LookupEnv(pwEnv)
			if !ok {
				return "", fmt.Errorf("environment variable %s (passwordEnv) is not set", pwEnv)
			}
			return v, nil
		}
	case pwFile != "":
		src.Password = func(context.Context) (string, error) {
			data, err := os.ReadFile(pwFile)
			if err != nil {
				return "", fmt.Errorf("passwordFile: %w", err)
			}
			return strings.TrimRight(string(data), "\r\n"), nil
		}
	}
	return src, nil
}
