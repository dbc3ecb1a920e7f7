package elasticsearch

import "github.com/cnvrg/capsule/engines"

var _ engines.Documented = (*Engine)(nil)

// Settings implements engines.Documented (docs/engines/elasticsearch.md).
func (e *Engine) Settings() any { return Config{} }

// RestoreOptions implements engines.Documented.
func (e *Engine) RestoreOptions() []engines.RestoreOption {
	return []engines.RestoreOption{{
		Name: "renameSuffix",
		Doc:  "load every index into <index><suffix>-a<attempt> and swap it in with one atomic _aliases call, instead of deleting and recreating it (lowercase letters, digits, '.', '_', '-')",
	}}
}
