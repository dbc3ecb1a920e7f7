package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The environment variables of the old capsule service (cnvrg-capsule
// 1.x): each flag of its "start" had a CNVRG_CAPSULE_<FLAG> twin. The ones
// "capsule start" honours:
const (
	// EnvDstDir is --dst-dir: the prefix of the old service's backups in
	// each bucket (Legacy.DstDir).
	EnvDstDir = "CNVRG_CAPSULE_DST_DIR"
	// EnvNsWhitelist is --ns-whitelist: the namespaces to serve, "*" (the
	// default) for all.
	EnvNsWhitelist = "CNVRG_CAPSULE_NS_WHITELIST"
	// EnvDumpDir is --dumpdir: where PostgreSQL restores stage archives
	// (the old service dumped there); default /tmp/capsule-data, the
	// operator's PVC, when it is there.
	EnvDumpDir = "CNVRG_CAPSULE_DUMPDIR"
	// EnvAPIBindAddr is --api-bind-addr: where the API, /metrics and the
	// probes are served (default :8080, the old service's API port).
	EnvAPIBindAddr = "CNVRG_CAPSULE_API_BIND_ADDR"
	// EnvKubeconfig is --kubeconfig (default: in-cluster, else $KUBECONFIG
	// or ~/.kube/config).
	EnvKubeconfig = "CNVRG_CAPSULE_KUBECONFIG"
	// EnvVerbose is --verbose: debug logging.
	EnvVerbose = "CNVRG_CAPSULE_VERBOSE"
)

// Defaults of "capsule start".
const (
	// DefaultDumpDir is where the operator mounts the capsule PVC.
	DefaultDumpDir = "/tmp/capsule-data"
	// DefaultAPIBindAddr is the old service's API address.
	DefaultAPIBindAddr = ":8080"
)

// Start is what "capsule start" reads from the old service's environment
// variables (the flags of the same names override them).
type Start struct {
	// Namespaces to serve; nil for all.
	Namespaces []string
	// DumpDir is the staging directory of PostgreSQL restores; "" for the
	// default (DefaultDumpDir when usable, else $TMPDIR).
	DumpDir    string
	Listen     string
	Kubeconfig string
	Verbose    bool
}

// StartFromEnv reads the CNVRG_CAPSULE_* variables, with an error that
// names the bad one.
func StartFromEnv(getenv func(string) string) (Start, error) {
	s := Start{Listen: DefaultAPIBindAddr, Kubeconfig: getenv(EnvKubeconfig)}
	var err error
	if s.Namespaces, err = ParseNamespaces(getenv(EnvNsWhitelist)); err != nil {
		return s, fmt.Errorf("%s: %w", EnvNsWhitelist, err)
	}
	if v := getenv(EnvDumpDir); v != "" {
		if !filepath.IsAbs(v) {
			return s, fmt.Errorf("%s: %q is not an absolute path", EnvDumpDir, v)
		}
		s.DumpDir = filepath.Clean(v)
	}
	if v := getenv(EnvAPIBindAddr); v != "" {
		s.Listen = v
	}
	if v := getenv(EnvVerbose); v != "" {
		if s.Verbose, err = strconv.ParseBool(v); err != nil {
			return s, fmt.Errorf("%s: %q is not true or false", EnvVerbose, v)
		}
	}
	return s, nil
}

// ParseNamespaces reads the old service's namespace whitelist: "*" or
// nothing for all namespaces, else namespace names separated by commas or
// spaces. (The old service matched a namespace against the list as a
// substring; capsule matches names exactly.)
func ParseNamespaces(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "*" {
		return nil, nil
	}
	seen := map[string]bool{}
	var out []string
	for _, ns := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == ';' }) {
		if ns == "*" {
			return nil, errors.New(`"*" (all namespaces) cannot be combined with namespace names`)
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("%q is not a namespace name: %s", ns, errs[0])
		}
		if !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	sort.Strings(out)
	return out, nil
}

// checkKeyPrefix accepts a relative key prefix of plain segments: no
// leading slash, no empty, "." or ".." segment.
func checkKeyPrefix(p string) error {
	if p == "" {
		return errors.New("must not be empty")
	}
	if strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("%q: no leading or trailing slash", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%q: a key prefix of plain segments (no empty, . or .. segment)", p)
		}
	}
	return nil
}
