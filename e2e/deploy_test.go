package e2e

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/config"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/engines/mysql"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/engines/redis"
	"gopkg.in/yaml.v3"
)

// No Docker engine runs here: the compose file and the Dockerfile are
// checked by reading them, and every capsule command they run is checked
// against the real binary.

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Configs     []struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		} `yaml:"configs"`
		Secrets   []string  `yaml:"secrets"`
		DependsOn dependsOn `yaml:"depends_on"`
	} `yaml:"services"`
	Configs map[string]struct {
		Content string `yaml:"content"`
	} `yaml:"configs"`
	Secrets map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

// dependsOn is a service's depends_on in either of its forms: a list of
// services, or a map of each to its condition.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	*d = dependsOn{}
	if n.Kind == yaml.SequenceNode {
		var names []string
		if err := n.Decode(&names); err != nil {
			return err
		}
		for _, s := range names {
			(*d)[s] = "service_started"
		}
		return nil
	}
	var m map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	for s, c := range m {
		(*d)[s] = c.Condition
	}
	return nil
}

func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	capsuleServices := 0
	for name, s := range c.Services {
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
		}
		for _, sec := range s.Secrets {
			f, ok := c.Secrets[sec]
			if !ok {
				t.Errorf("service %s uses undeclared secret %s", name, sec)
			} else if _, err := os.Stat("../" + strings.TrimPrefix(f.File, "./")); err != nil {
				t.Errorf("secret %s: %v", sec, err)
			}
		}
		if s.Image != "" && !regexp.MustCompile(`:[^:/]+$`).MatchString(s.Image) {
			t.Errorf("service %s: image %s is not pinned to a tag", name, s.Image)
		}
		if s.Build == nil {
			continue
		}
		capsuleServices++
		// The command is a real capsule command line: --help must work.
		args := append(append([]string{}, s.Command...), "--help")
		if out, err := exec.Command(binary, args...).CombinedOutput(); err != nil {
			t.Errorf("service %s: capsule %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		for _, cf := range s.Configs {
			content, ok := c.Configs[cf.Source]
			if !ok {
				t.Errorf("service %s uses undeclared config %s", name, cf.Source)
				continue
			}
			if s.Environment["CAPSULE_CONFIG"] != cf.Target {
				t.Errorf("service %s mounts its config at %s but CAPSULE_CONFIG is %q", name, cf.Target, s.Environment["CAPSULE_CONFIG"])
			}
			cfg, err := config.Parse([]byte(content.Content))
			if err != nil {
				t.Errorf("config %s: %v", cf.Source, err)
				continue
			}
			if err := cfg.Validate(engines.NewRegistry(files.New(), postgres.New(), redis.New(), mysql.New())); err != nil {
				t.Errorf("config %s: %v", cf.Source, err)
			}
		}
		if !strings.HasPrefix(s.Environment["CAPSULE_BUCKET"], "s3://") {
			t.Errorf("service %s: CAPSULE_BUCKET %q is not an s3 URL", name, s.Environment["CAPSULE_BUCKET"])
		}
	}
	if capsuleServices < 2 {
		t.Errorf("%d capsule services, want workers and the API", capsuleServices)
	}
	// The bucket exists before anything uses it: an init service runs
	// "capsule bucket create" on the same bucket, and every other capsule
	// service waits for it to complete.
	var inits []string
	for name, s := range c.Services {
		if s.Build != nil && len(s.Command) >= 2 && s.Command[0] == "bucket" && s.Command[1] == "create" {
			inits = append(inits, name)
		}
	}
	if len(inits) != 1 {
		t.Fatalf("services running capsule bucket create: %v, want one", inits)
	}
	init := c.Services[inits[0]]
	for name, s := range c.Services {
		if s.Build == nil || name == inits[0] {
			continue
		}
		if s.DependsOn[inits[0]] != "service_completed_successfully" {
			t.Errorf("service %s does not wait for %s to complete (depends_on: %v)", name, inits[0], s.DependsOn)
		}
		if s.Environment["CAPSULE_BUCKET"] != init.Environment["CAPSULE_BUCKET"] {
			t.Errorf("service %s uses bucket %q, %s creates %q", name, s.Environment["CAPSULE_BUCKET"], inits[0], init.Environment["CAPSULE_BUCKET"])
		}
	}
	if _, ok := init.DependsOn["s3"]; !ok {
		t.Errorf("%s does not wait for the S3 server", inits[0])
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	// The image builds with the Go that tests capsule: go.mod's toolchain
	// line when it has one, else its go line.
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(gomod))[1]
	if m := regexp.MustCompile(`(?m)^toolchain go(\d+\.\d+(\.\d+)?)`).FindStringSubmatch(string(gomod)); m != nil {
		goVersion = m[1]
	}
	froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(text, -1)
	if len(froms) != 2 {
		t.Fatalf("want a build stage and a runtime stage, got FROM lines %v", froms)
	}
	if !strings.HasPrefix(froms[0][1], "golang:"+goVersion) {
		t.Errorf("build stage %s does not use Go %s (go.mod's toolchain, else go line)", froms[0][1], goVersion)
	}
	// "/opt/app-root/capsule": the path the cnvrg operator's Deployment
	// runs ("capsule start" in place of the old service).
	for _, want := range []string{"./cmd/capsule", "postgresql-client", "mariadb-client", "ENTRYPOINT", "USER ", "/opt/app-root/capsule"} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// Every supported PostgreSQL major's client tools, from PGDG, where
	// the postgres engine looks for them.
	if !strings.Contains(text, "apt.postgresql.org") {
		t.Errorf("Dockerfile does not add the PGDG apt repository")
	}
	m := regexp.MustCompile(`ARG PG_MAJORS="([0-9 ]+)"`).FindStringSubmatch(text)
	if m == nil || m[1] != "12 13 14 15 16 17" {
		t.Errorf("Dockerfile's PG_MAJORS: %v, want 12 to 17", m)
	}
	if !strings.Contains(text, "postgresql-client-$v") || !strings.Contains(text, "/usr/lib/postgresql/$v/bin/pg_dump --version") {
		t.Errorf("Dockerfile does not install and check postgresql-client-<major> for each major")
	}
	// The server programs of every major, which a point-in-time restore
	// starts as its temporary server (pitr; postgres.BinDir looks in
	// /usr/lib/postgresql/<major>/bin), with no cluster created at install.
	if m := regexp.MustCompile(`ARG PG_SERVER_MAJORS="([0-9 ]*)"`).FindStringSubmatch(text); m == nil || m[1] != "12 13 14 15 16 17" {
		t.Errorf("Dockerfile's PG_SERVER_MAJORS: %v, want 12 to 17", m)
	}
	for _, want := range []string{"echo postgresql-$v; done", "for v in $PG_SERVER_MAJORS",
		"/usr/lib/postgresql/$v/bin/postgres --version", "/usr/lib/postgresql/$v/bin/initdb --version", "/usr/lib/postgresql/$v/bin/pg_ctl --version",
		"create_main_cluster = false"} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile does not install and check the server programs of each major: it lacks %q", want)
		}
	}
	if _, err := postgres.BinDir(150000); err == nil {
		// Where the image puts them is where a restore looks.
		if dir, _ := postgres.BinDir(150000); !strings.HasPrefix(dir, "/usr/lib/postgresql/") && os.Getenv("CAPSULE_PG_BINDIR") == "" {
			t.Errorf("postgres.BinDir found the server programs in %s, not /usr/lib/postgresql/<major>/bin where the image puts them", dir)
		}
	}
	if !slices.Contains(postgres.BinGlobs, "/usr/lib/postgresql/*/bin") {
		t.Errorf("the postgres engine does not look in /usr/lib/postgresql/*/bin, where the image puts the tools: %v", postgres.BinGlobs)
	}
	if m := regexp.MustCompile(`version\.version=`).FindString(text); m == "" {
		t.Errorf("Dockerfile does not stamp the version")
	}
	if _, err := os.Stat("../internal/version/version.go"); err != nil {
		t.Errorf("the version variable the Dockerfile stamps is gone: %v", err)
	}
}
