package redis

import "github.com/cnvrg/capsule/engines"

var _ engines.Documented = (*Engine)(nil)

// Settings implements engines.Documented (docs/engines/redis.md).
func (e *Engine) Settings() any { return Config{} }

// RestoreOptions implements engines.Documented.
func (e *Engine) RestoreOptions() []engines.RestoreOption {
	return []engines.RestoreOption{{
		Name: OptFunctions, Values: []string{"replace", "flush", "skip"},
		Doc: "the target's function libraries: replace (default: the backup's replace same-named ones, others stay), flush (exactly the backup's) or skip",
	}}
}
