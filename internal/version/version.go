// Package version reports capsule's version: the value set at link time
// (-ldflags "-X github.com/cnvrg/capsule/internal/version.version=v1.2.3"),
// else the module version or VCS revision the Go toolchain recorded.
package version

import "runtime/debug"

// version is set at link time; empty in a plain `go build`.
var version string

// String returns the version, "devel" when nothing better is known.
func String() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "devel-" + s.Value[:12]
			}
		}
	}
	return "devel"
}
