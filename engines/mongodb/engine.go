package mongodb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/x/mongo/driver/connstring"
)

// Name is the engine's registry name.
const Name = "mongodb"

// Engine backs up and restores MongoDB databases with the official Go
// driver. It is stateless and safe for concurrent use.
type Engine struct{}

var _ engines.Engine = (*Engine)(nil)

// New returns the engine.
func New() *Engine { return &Engine{} }

// Name implements engines.Engine.
func (e *Engine) Name() string { return Name }

// Config is a source's settings.
type Config struct {
	// URL is a connection string without a password:
	// mongodb://USER@HOST:27017/?authSource=admin.
	URL string `json:"url"`
	// PasswordEnv and PasswordFile are resolved by the worker into the
	// source's secret; the engine accepts and ignores them.
	PasswordEnv  string `json:"passwordEnv,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
	// Databases is a list of database names, or "all" (every database but
	// admin, local and config).
	Databases any `json:"databases"`
	// BatchSize is the number of documents per insert on restore (default
	// 1000; batches also stop at 8 MiB).
	BatchSize int `json:"batchSize,omitempty"`
	// TLS turns on TLS with the server's certificate checked against
	// tls.caFile (default: the system's CAs) for each host's name (or
	// tls.serverName). Without it, the url's own tls options apply
	// (tls=true, tlsCAFile=…), and a mongodb:// url without them is not
	// encrypted.
	TLS *engines.TLS `json:"tls,omitempty"`

	all bool
	dbs []string
}

const defaultBatchSize = 1000

var systemDatabases = map[string]bool{"admin": true, "local": true, "config": true}

// dbNameRe: what MongoDB accepts as a database name.
var dbNameRe = regexp.MustCompile(`^[^/\\. "$*<>:|?\x00]{1,63}$`)

// Validate implements engines.Engine.
func (e *Engine) Validate(src engines.Source) error {
	_, err := decodeConfig(src)
	return err
}

func decodeConfig(src engines.Source) (*Config, error) {
	var cfg Config
	if err := src.Decode(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("source %s (engine %s): %w", src.Name, src.Engine, err)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = defaultBatchSize
	}
	return &cfg, nil
}

func (c *Config) validate() error {
	if c.URL == "" {
		return errors.New("url: required (mongodb://USER@HOST:27017/?authSource=admin)")
	}
	// Look for a password before the driver parses the string: its errors
	// may quote the string.
	if u, err := url.Parse(c.URL); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return errors.New("url: must not hold a password: use passwordEnv or passwordFile")
		}
	}
	if !strings.HasPrefix(c.URL, "mongodb://") && !strings.HasPrefix(c.URL, "mongodb+srv://") {
		return errors.New("url: must start with mongodb:// or mongodb+srv://")
	}
	stripped, _, err := splitAuth(c.URL)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(c.URL, "mongodb+srv://") {
		if _, err := connstring.ParseAndValidate(stripped); err != nil {
			return errors.New("url: not a valid MongoDB connection string")
		}
	}
	if c.TLS != nil {
		if err := c.TLS.Validate(); err != nil {
			return err
		}
		if u, err := url.Parse(c.URL); err == nil {
			for k := range u.Query() {
				if k := strings.ToLower(k); strings.HasPrefix(k, "tls") || strings.HasPrefix(k, "ssl") {
					return fmt.Errorf("url: option %s, and the tls setting: set TLS in one place", k)
				}
			}
		}
	}
	switch d := c.Databases.(type) {
	case nil:
		return errors.New(`databases: required (a list of names, or "all")`)
	case string:
		if d != "all" {
			return fmt.Errorf(`databases: %q, want a list of names or "all"`, d)
		}
		c.all = true
	case []any:
		if len(d) == 0 {
			return errors.New(`databases: empty list (name databases, or say "all")`)
		}
		seen := map[string]bool{}
		for _, x := range d {
			s, ok := x.(string)
			if !ok || !dbNameRe.MatchString(s) {
				return fmt.Errorf("databases: %v is not a database name", x)
			}
			if systemDatabases[s] {
				return fmt.Errorf("databases: %s is a system database", s)
			}
			if seen[strings.ToLower(s)] {
				return fmt.Errorf("databases: %s named twice", s)
			}
			seen[strings.ToLower(s)] = true
			c.dbs = append(c.dbs, s)
		}
	default:
		return fmt.Errorf(`databases: want a list of names or "all", not %s`, jsonType(d))
	}
	if c.BatchSize < 0 || c.BatchSize > 100000 {
		return fmt.Errorf("batchSize: %d, want 1 to 100000", c.BatchSize)
	}
	return nil
}

func jsonType(v any) string {
	raw, _ := json.Marshal(v)
	if len(raw) > 40 {
		raw = append(raw[:40], "..."...)
	}
	return string(raw)
}

// connect opens a client with the source's password.
func connect(ctx context.Context, src engines.Source, cfg *Config) (*mongo.Client, error) {
	pw, err := src.Secret(ctx)
	if err != nil {
		return nil, err
	}
	stripped, cred, err := splitAuth(cfg.URL)
	if err != nil {
		return nil, err
	}
	opts := options.Client().SetAppName("capsule").SetServerSelectionTimeout(30 * time.Second).ApplyURI(stripped)
	if cred != nil {
		cred.Password, cred.PasswordSet = pw, pw != ""
		opts.SetAuth(*cred)
	} else if pw != "" {
		return nil, errors.New("url: names no user, but the source has a password")
	}
	if cfg.TLS != nil {
		// No host here: the driver checks each server against its own
		// name unless tls.serverName says otherwise.
		tc, err := cfg.TLS.Config("")
		if err != nil {
			return nil, err
		}
		opts.SetTLSConfig(tc)
	}
	cl, err := mongo.Connect(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return cl, nil
}

func disconnect(ctx context.Context, cl *mongo.Client) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = cl.Disconnect(cctx)
}

// splitAuth takes the user and authentication options out of a
// connection string, so that the password can be added to the credential
// without ever being part of a string the driver parses (and validates:
// PLAIN without a password in the string is refused).
func splitAuth(raw string) (string, *options.Credential, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, errors.New("url: not a valid MongoDB connection string")
	}
	q := u.Query()
	cred := &options.Credential{}
	for k, vs := range q {
		switch strings.ToLower(k) {
		case "authmechanism":
			cred.AuthMechanism = vs[0]
		case "authsource":
			cred.AuthSource = vs[0]
		case "authmechanismproperties":
			cred.AuthMechanismProperties = map[string]string{}
			for _, kv := range strings.Split(vs[0], ",") {
				k, v, _ := strings.Cut(kv, ":")
				cred.AuthMechanismProperties[k] = v
			}
		default:
			continue
		}
		q.Del(k)
	}
	if u.User != nil {
		cred.Username = u.User.Username()
	}
	if cred.Username == "" && cred.AuthMechanism == "" {
		return raw, nil, nil
	}
	if cred.AuthSource == "" {
		switch db := strings.TrimPrefix(u.Path, "/"); {
		case strings.EqualFold(cred.AuthMechanism, "PLAIN"):
			cred.AuthSource = "$external"
		case db != "":
			cred.AuthSource = db
		default:
			cred.AuthSource = "admin"
		}
	}
	u.User = nil
	u.RawQuery = q.Encode()
	return u.String(), cred, nil
}

// serverVersion names the server: "mongodb 7.0.14", or FerretDB's own
// version where it says it.
func serverVersion(ctx context.Context, cl *mongo.Client) (string, error) {
	var bi struct {
		Version         string `bson:"version"`
		FerretDBVersion string `bson:"ferretdbVersion"`
	}
	if err := cl.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&bi); err != nil {
		return "", fmt.Errorf("buildInfo: %w", err)
	}
	if bi.FerretDBVersion != "" {
		return fmt.Sprintf("ferretdb %s (mongodb %s)", bi.FerretDBVersion, bi.Version), nil
	}
	return "mongodb " + bi.Version, nil
}

// databases lists what to back up.
func databases(ctx context.Context, cl *mongo.Client, cfg *Config) ([]string, error) {
	if !cfg.all {
		return cfg.dbs, nil
	}
	names, err := cl.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("listDatabases: %w", err)
	}
	var out []string
	for _, n := range names {
		if !systemDatabases[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

func logOf(l logrus.FieldLogger) logrus.FieldLogger {
	if l == nil {
		return engines.DiscardLog()
	}
	return l
}

// hostOf is the connection string's host list, without user or options.
func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Host
	}
	return ""
}
