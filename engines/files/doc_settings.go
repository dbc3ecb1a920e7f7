package files

import "github.com/cnvrg/capsule/engines"

var _ engines.Documented = (*Engine)(nil)

// Settings implements engines.Documented (docs/engines/files.md).
func (e *Engine) Settings() any { return config{} }

// RestoreOptions implements engines.Documented.
func (e *Engine) RestoreOptions() []engines.RestoreOption {
	return []engines.RestoreOption{{
		Name: "keepPrevious", Values: []string{"true"},
		Doc: "the old name of the default: the replaced tree is kept beside the target; refused with --drop-previous",
	}}
}
