package config_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/config"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/executor"
)

var reg = engines.NewRegistry(files.New())

func TestParseAndValidate(t *testing.T) {
	c, err := config.Parse([]byte(`
bucket: file:///tmp/b
cluster: prod
worker:
  concurrency: 4
  lease: 30s
sources:
  data:
    engine: files
    path: /srv/data
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(reg); err != nil {
		t.Fatal(err)
	}
	if c.Worker.Concurrency != 4 || c.Worker.Lease != 30*time.Second || c.Worker.Poll != 5*time.Second || c.Worker.MaxControlObject != 1<<20 {
		t.Errorf("worker settings %+v: file values over defaults", c.Worker)
	}
	limited, err := config.Parse([]byte("worker:\n  maxControlObject: 262144\n"))
	if err != nil || limited.Validate(reg) != nil || limited.Worker.MaxControlObject != 256<<10 {
		t.Errorf("worker.maxControlObject: 262144 gave %d, %v", limited.Worker.MaxControlObject, err)
	}
	src, err := c.Lookup("data")
	if err != nil || src.Engine != "files" || src.Config["path"] != "/srv/data" || src.Password != nil {
		t.Errorf("Lookup(data) = %+v, %v", src, err)
	}
	if _, err := c.Lookup("nope"); !errors.Is(err, executor.ErrUnknownSource) || !strings.Contains(err.Error(), "data") {
		t.Errorf("Lookup(nope) = %v, want ErrUnknownSource listing the known sources", err)
	}
}

func TestErrorsNameTheSetting(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"bucket: x\nbukcet: y\n", "bukcet"},
		{"worker:\n  lease: 1s\n", "worker.lease"},
		{"worker:\n  concurrency: 0\n", "worker.concurrency"},
		{"worker:\n  compression: lz4\n", "worker.compression"},
		{"worker:\n  maxControlObject: 1024\n", "worker.maxControlObject"},
		{"worker:\n  maxControlObject: 1073741824\n", "worker.maxControlObject"},
		{"cluster: 'a b'\n", "cluster"},
		{"worker:\n  maintenance:\n    every: 1s\n", "worker.maintenance.every"},
		{"worker:\n  maintenance:\n    gcAfter: -1h\n", "worker.maintenance.gcAfter"},
		{"sources:\n  s:\n    engine: files\n    path: /x\n    schedule: often\n", "sources.s.schedule"},
		{"sources:\n  s:\n    engine: files\n    path: /x\n    keepLast: -1\n", "sources.s.keepLast"},
		{"sources:\n  s:\n    engine: files\n    path: /x\n    verifySchedule: 24h\n", "sources.s.verifySchedule"},
		{"sources:\n  s:\n    path: /x\n", "sources.s.engine"},
		{"sources:\n  s:\n    engine: nope\n", "sources.s.engine"},
		{"sources:\n  s:\n    engine: files\n    path: relative\n", "sources.s"},
		{"sources:\n  s:\n    engine: files\n    path: /x\n    colour: red\n", "colour"},
		{"sources:\n  s:\n    engine: files\n    path: /x\n    password: hunter2\n", "sources.s.password"},
		{"sources:\n  s:\n    engine: files\n    path: /x\n    passwordEnv: A\n    passwordFile: /b\n", "not both"},
	} {
		cfg, err := config.Parse([]byte(c.yaml))
		if err == nil {
			err = cfg.Validate(reg)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one naming %q", c.yaml, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error repeats the secret: %v", err)
		}
	}
}

func TestPasswordsAreResolvedWhenUsed(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse([]byte("sources:\n  a:\n    engine: files\n    path: /x\n    passwordEnv: CAPSULE_TEST_PW\n  b:\n    engine: files\n    path: /y\n    passwordFile: " + pwFile + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := c.Lookup("a")
	if _, ok := a.Config["passwordEnv"]; ok {
		t.Errorf("passwordEnv left in the engine's settings")
	}
	if _, err := a.Secret(context.Background()); err == nil || !strings.Contains(err.Error(), "CAPSULE_TEST_PW") {
		t.Errorf("unset passwordEnv: %v", err)
	}
	t.Setenv("CAPSULE_TEST_PW", "from-env")
	if pw, err := a.Secret(context.Background()); pw != "from-env" || err != nil {
		t.Errorf("Secret() = %q, %v", pw, err)
	}
	b, _ := c.Lookup("b")
	if pw, _ := b.Secret(context.Background()); pw != "s3cret" {
		t.Errorf("passwordFile: %q", pw)
	}
	// Rotation: the file is read again on use.
	_ = os.WriteFile(pwFile, []byte("rotated"), 0o600)
	if pw, _ := b.Secret(context.Background()); pw != "rotated" {
		t.Errorf("after rotation: %q", pw)
	}
}

func TestEnvOverridesFile(t *testing.T) {
	c, _ := config.Parse([]byte("bucket: file:///a\ncluster: one\n"))
	c.ApplyEnv(func(k string) string {
		return map[string]string{"CAPSULE_BUCKET": "s3://b/p", "CAPSULE_CLUSTER": "two"}[k]
	})
	if c.Bucket != "s3://b/p" || c.Cluster != "two" {
		t.Errorf("after env: %q %q", c.Bucket, c.Cluster)
	}
}

func TestOldServiceEnvironment(t *testing.T) {
	env := map[string]string{
		config.EnvNsWhitelist: "cnvrg, cnvrg-infra,cnvrg", config.EnvDumpDir: "/data/capsule/", config.EnvAPIBindAddr: "127.0.0.1:9090",
		config.EnvKubeconfig: "/kube/config", config.EnvVerbose: "true", config.EnvDstDir: "/old-backups/",
	}
	getenv := func(k string) string { return env[k] }
	s, err := config.StartFromEnv(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Namespaces, ",") != "cnvrg,cnvrg-infra" || s.DumpDir != "/data/capsule" || s.Listen != "127.0.0.1:9090" ||
		s.Kubeconfig != "/kube/config" || !s.Verbose {
		t.Errorf("start settings %+v", s)
	}
	c := config.Default()
	if c.Legacy.DstDir != config.DefaultLegacyDstDir {
		t.Errorf("default legacy.dstDir %q", c.Legacy.DstDir)
	}
	c.ApplyEnv(getenv)
	if err := c.Validate(reg); err != nil || c.Legacy.DstDir != "old-backups" {
		t.Errorf("legacy.dstDir %q from %s=/old-backups/: %v", c.Legacy.DstDir, config.EnvDstDir, err)
	}
	def, err := config.StartFromEnv(func(string) string { return "" })
	if err != nil || def.Namespaces != nil || def.Listen != config.DefaultAPIBindAddr || def.DumpDir != "" {
		t.Errorf("defaults %+v, %v", def, err)
	}
	for _, all := range []string{"*", " * ", ""} {
		if ns, err := config.ParseNamespaces(all); err != nil || ns != nil {
			t.Errorf("ParseNamespaces(%q) = %v, %v; want all", all, ns, err)
		}
	}
	for _, c := range []struct{ key, value, want string }{
		{config.EnvNsWhitelist, "cnvrg,Bad_NS", config.EnvNsWhitelist + `: "Bad_NS" is not a namespace name`},
		{config.EnvNsWhitelist, "*,cnvrg", "cannot be combined"},
		{config.EnvDumpDir, "relative/dir", config.EnvDumpDir + `: "relative/dir" is not an absolute path`},
		{config.EnvVerbose, "loud", config.EnvVerbose},
	} {
		if _, err := config.StartFromEnv(func(k string) string {
			if k == c.key {
				return c.value
			}
			return ""
		}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%s: %v, want an error with %q", c.key, c.value, err, c.want)
		}
	}
	for _, bad := range []string{"a/../b", "a//b", "./a"} {
		c := config.Default()
		c.Legacy.DstDir = bad
		if err := c.Validate(reg); err == nil || !strings.Contains(err.Error(), "legacy.dstDir") {
			t.Errorf("legacy.dstDir %q: %v, want an error naming it", bad, err)
		}
	}
}

// A source's own plan is read by Plans and kept out of the engine's
// settings.
func TestSourcePlans(t *testing.T) {
	c, err := config.Parse([]byte("cluster: prod\nsources:\n  s:\n    engine: files\n    path: /x\n    schedule: '0 3 * * *'\n    keepLast: 2\n    keepWeekly: 4\n  t:\n    engine: files\n    path: /y\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(engines.NewRegistry(files.New())); err != nil {
		t.Fatal(err)
	}
	plans, err := c.Plans()
	if err != nil || len(plans) != 1 {
		t.Fatalf("plans %+v, %v: want the one of source s", plans, err)
	}
	p := plans[0]
	if p.Source != "s" || p.Schedule == nil || !p.Schedule.IsCron() || p.Retention == nil ||
		p.Retention.Keep != 2 || p.Retention.KeepWeekly != 4 || p.Retention.Cluster != "prod" {
		t.Errorf("plan %+v (retention %+v)", p, p.Retention)
	}
	src, err := c.Lookup("s")
	if err != nil || src.Config["schedule"] != nil || src.Config["keepLast"] != nil {
		t.Errorf("the engine got the plan's keys: %+v %v", src.Config, err)
	}
	if c.Worker.Maintenance.Every != time.Hour || c.Worker.Maintenance.GCAfter != 24*time.Hour {
		t.Errorf("maintenance defaults %+v", c.Worker.Maintenance)
	}
}
