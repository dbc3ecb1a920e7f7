// Package testtool finds the pinned server binaries that tests run
// (versitygw, goaws): an explicit environment variable, then the
// repository's .tools/bin (where scripts/install-tools.sh puts them),
// then $PATH.
package testtool

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Tool describes one pinned binary.
type Tool struct {
	Name    string // file name, e.g. "versitygw"
	Version string // pinned version, for messages
	EnvVar  string // explicit path, e.g. "CAPSULE_VERSITYGW"
	SkipVar string // "1" there skips the tests instead of failing them
	Install string // the command that installs it
}

// Find returns the binary's path. When it is missing the test fails with
// the command that installs it, or is skipped when SkipVar is "1".
func (tool Tool) Find(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(tool.EnvVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", tool.EnvVar, p, err)
		}
		return p
	}
	if root, ok := RepoRoot(); ok {
		p := filepath.Join(root, ".tools", "bin", tool.Name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(tool.Name); err == nil {
		return p
	}
	if os.Getenv(tool.SkipVar) == "1" {
		t.Skipf("%s not found and %s=1", tool.Name, tool.SkipVar)
	}
	t.Fatalf("%s %s not found (looked at $%s, <repo>/.tools/bin, $PATH); install it with: %s (or set %s=1 to skip these tests)",
		tool.Name, tool.Version, tool.EnvVar, tool.Install, tool.SkipVar)
	return ""
}

// RepoRoot is the nearest directory above the working directory (a
// test's package directory) that holds go.mod.
func RepoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}
