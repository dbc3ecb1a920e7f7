package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// TestStagingDir: restores stage on the operator's PVC mount when it is a
// writable directory, else in $TMPDIR, saying why; a --dumpdir that is
// not usable is an error naming the setting.
func TestStagingDir(t *testing.T) {
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)
	mount := t.TempDir()
	if got, err := stagingDir("", mount, log); err != nil || got != mount {
		t.Errorf("mount %s: staging %q, %v; want the mount", mount, got, err)
	}
	missing := filepath.Join(t.TempDir(), "capsule-data")
	if got, err := stagingDir("", missing, log); err != nil || got != "" {
		t.Errorf("no mount: staging %q, %v; want $TMPDIR (\"\")", got, err)
	}
	if !strings.Contains(logs.String(), "PostgreSQL restores stage archives in $TMPDIR") || !strings.Contains(logs.String(), missing) {
		t.Errorf("the fallback is not logged with the reason: %s", logs.String())
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := stagingDir("", file, log); err != nil || got != "" {
		t.Errorf("a file at the mount: staging %q, %v; want $TMPDIR", got, err)
	}
	if _, err := stagingDir(missing, mount, log); err == nil || !strings.Contains(err.Error(), "--dumpdir (CNVRG_CAPSULE_DUMPDIR)") {
		t.Errorf("a --dumpdir that does not exist: %v, want an error naming the setting", err)
	}
	if got, err := stagingDir(mount, missing, log); err != nil || got != mount {
		t.Errorf("--dumpdir %s: %q, %v", mount, got, err)
	}
	if entries, _ := os.ReadDir(mount); len(entries) != 0 {
		t.Errorf("the write check left %v behind", entries)
	}
}

// TestStartRefusesBadSettings: the old service's settings are checked
// before anything starts, and the error names the setting.
func TestStartRefusesBadSettings(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"CNVRG_CAPSULE_NS_WHITELIST": "cnvrg,Not_A_Namespace"}, nil, `CNVRG_CAPSULE_NS_WHITELIST: "Not_A_Namespace" is not a namespace name`},
		{nil, []string{"--ns-whitelist", "*,cnvrg"}, "--ns-whitelist: "},
		{map[string]string{"CNVRG_CAPSULE_DUMPDIR": "capsule-data"}, nil, `CNVRG_CAPSULE_DUMPDIR: "capsule-data" is not an absolute path`},
		{nil, []string{"--dumpdir", "/nonexistent/capsule-data"}, "--dumpdir (CNVRG_CAPSULE_DUMPDIR): stat /nonexistent/capsule-data"},
		{map[string]string{"CNVRG_CAPSULE_DST_DIR": "a/../b"}, nil, "legacy.dstDir (--dst-dir, CNVRG_CAPSULE_DST_DIR)"},
		{nil, []string{"now"}, `unknown command "now" for "capsule start"`},
	} {
		var errOut bytes.Buffer
		a := newApp(io.Discard, &errOut, func(k string) string { return c.env[k] })
		cmd := a.root()
		cmd.SetArgs(append([]string{"start", "--log-format", "text"}, c.args...))
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("env %v args %v: %v, want an error with %q", c.env, c.args, err, c.want)
		}
	}
}
