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
	"github.com/cnvrg/capsule/crypt/crypttest"
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

// TestConfigTyposNameTheKeyAndLine is a mistyped key or a value of the
// wrong kind as an operator meets it: the message gives the file's line,
// the key's path and what was expected, never Go type names.
func TestConfigTyposNameTheKeyAndLine(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"bucket: x\nclustr: prod\n", `line 2: unknown key "clustr" at the top level (known: bucket, cluster, `},
		{"worker:\n  concurrency: 2\n  clustr: prod\n", `line 3: unknown key "clustr" in worker (known: compression, concurrency, `},
		{"legacy:\n  dstdir: x\n", `line 2: unknown key "dstdir" in legacy (known: dstDir)`},
		{"worker:\n  poll: often\n", `line 2: worker.poll: "often" is not a duration (like 30s or 5m)`},
		{"worker:\n  concurrency: many\n", `line 2: worker.concurrency: "many" is not a whole number`},
	} {
		// Known-key lists grow with the config: rows ending in ", "
		// check their beginning.
		_, err := config.Parse([]byte(c.yaml))
		if err == nil || err.Error() != c.want && !(strings.HasSuffix(c.want, ", ") && strings.HasPrefix(err.Error(), c.want)) {
			t.Errorf("%q:\n got  %v\n want %s", c.yaml, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "config.") {
			t.Errorf("%q: %v names a Go type", c.yaml, err)
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

func TestEncryptionSettings(t *testing.T) {
	worker, own, ssh := crypttest.X25519(t), crypttest.X25519(t), crypttest.SSH(t)
	dir := t.TempDir()
	wfile, sfile := filepath.Join(dir, "worker.key"), filepath.Join(dir, "source.key")
	if err := os.WriteFile(wfile, worker.Identity, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sfile, own.Identity, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CAPSULE_AGE_IDENTITY", string(ssh.Identity))
	c, err := config.Parse([]byte(`
worker:
  encryption:
    recipients: [` + worker.Recipient + `]
    identityFile: ` + wfile + `
sources:
  data:
    engine: files
    path: /srv/data
    recipients: ["` + own.Recipient + `"]
    identityFile: ` + sfile + `
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(reg); err != nil {
		t.Fatal(err)
	}
	ids, err := c.Identities(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := ids.Keys(); len(got) != 2 || !strings.Contains(strings.Join(got, " "), worker.Recipient) || !strings.Contains(strings.Join(got, " "), ssh.Recipient) {
		t.Errorf("worker identities open %v, want the file's and CAPSULE_AGE_IDENTITY's", got)
	}
	src, err := c.Lookup("data")
	if err != nil {
		t.Fatal(err)
	}
	if len(src.Recipients) != 1 || src.Recipients[0] != own.Recipient || src.Identities == nil {
		t.Fatalf("source: recipients %v, identities set %v", src.Recipients, src.Identities != nil)
	}
	found, err := src.Identities(context.Background())
	if err != nil || string(found["file "+sfile]) != string(own.Identity) {
		t.Fatalf("source identities: %v %v", found, err)
	}

	for _, bad := range []struct{ yaml, want string }{
		{"worker:\n  encryption:\n    recipients: [age1notakey]\n", "worker.encryption.recipients"},
		{"sources:\n  data:\n    engine: files\n    path: /srv\n    recipients: age1x\n", "sources.data.recipients: must be a list"},
		{"sources:\n  data:\n    engine: files\n    path: /srv\n    recipients: [\"ssh-dss AAAA\"]\n", "sources.data.recipients"},
	} {
		c, err := config.Parse([]byte(bad.yaml))
		if err == nil {
			err = c.Validate(reg)
		}
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want it to name %s", bad.yaml, err, bad.want)
		}
	}
}

// TestWebhooks resolves the worker's and a source's webhooks, and names
// the setting of each mistake.
func TestWebhooks(t *testing.T) {
	c, err := config.Parse([]byte("worker:\n  webhooks:\n    - urlEnv: HOOK\n      events: [failed]\nsources:\n  data:\n    engine: files\n    path: /x\n    webhook: https://h.example/data\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(reg); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOOK": "https://hooks.example/T/B/X"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	hooks, err := c.Webhooks(lookup)
	if err != nil || len(hooks) != 2 || hooks[0].URL != env["HOOK"] || hooks[0].Events[0] != "failed" ||
		hooks[1].URL != "https://h.example/data" || hooks[1].Sources[0] != "data" {
		t.Errorf("Webhooks = %+v, %v", hooks, err)
	}
	if src, _ := c.Lookup("data"); src.Config["webhook"] != nil {
		t.Errorf("webhook left in the engine's settings: %v", src.Config)
	}
	if _, err := c.Webhooks(func(string) (string, bool) { return "", false }); err == nil ||
		!strings.Contains(err.Error(), "worker.webhooks[0]") || !strings.Contains(err.Error(), "HOOK") || !strings.Contains(err.Error(), "worker's environment") {
		t.Errorf("unset urlEnv: %v", err)
	}
	for _, c := range []struct{ yaml, want string }{
		{"worker:\n  webhooks:\n    - url: https://a/b\n      urlEnv: X\n", "worker.webhooks[0]: give url or urlEnv, not both"},
		{"worker:\n  webhooks:\n    - events: [failed]\n", "worker.webhooks[0]: url or urlEnv is required"},
		{"worker:\n  webhooks:\n    - url: hooks.slack.com/x\n", "worker.webhooks[0]: url: want http(s)://HOST/PATH"},
		{"worker:\n  webhooks:\n    - url: https://a/b\n      events: [fail]\n", `worker.webhooks[0].events: "fail" is not one of failed, verify-failed, missed`},
		{"sources:\n  d:\n    engine: files\n    path: /x\n    webhook: nope\n", "sources.d: url: want http(s)://HOST/PATH"},
	} {
		cfg, err := config.Parse([]byte(c.yaml))
		if err == nil {
			err = cfg.Validate(reg)
		}
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: got %v, want %s", c.yaml, err, c.want)
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
