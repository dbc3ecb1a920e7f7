package mongodb

import "github.com/cnvrg/capsule/engines"

var _ engines.Documented = (*Engine)(nil)

// Settings implements engines.Documented (docs/engines/mongodb.md).
func (e *Engine) Settings() any { return Config{} }

// RestoreOptions implements engines.Documented: the engine takes none.
func (e *Engine) RestoreOptions() []engines.RestoreOption { return nil }
