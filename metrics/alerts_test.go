package metrics_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/metrics"
	"gopkg.in/yaml.v3"
)

type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var metricName = regexp.MustCompile(`\bcapsule_[a-z0-9_]+\b`)

// The example alert rules use only names the workers expose, and each is
// complete enough to page someone with.
func TestAlertRulesUseExposedMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f rulesFile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	exposed := map[string]bool{}
	for _, n := range metrics.New(metrics.Options{}).Names() {
		exposed[n] = true
	}
	alerts := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("group %s: a rule without alert or expr: %+v", g.Name, r)
				continue
			}
			if alerts[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = true
			names := metricName.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("alert %s uses no capsule metric: %s", r.Alert, r.Expr)
			}
			for _, n := range names {
				if !exposed[n] {
					t.Errorf("alert %s uses %s, which the workers do not expose", r.Alert, n)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("alert %s: unbalanced parentheses in %s", r.Alert, r.Expr)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s needs a severity label and a summary", r.Alert)
			}
		}
	}
	for _, want := range []string{"CapsuleNoRecentBackup", "CapsuleRequestsFailing", "CapsuleLeaseLosses", "CapsuleVerificationFailed"} {
		if !alerts[want] {
			t.Errorf("alerts.yaml has no %s", want)
		}
	}
}
