package postgres

import "github.com/cnvrg/capsule/engines"

var _ engines.Documented = (*Engine)(nil)

// Settings implements engines.Documented (docs/engines/postgres.md).
func (e *Engine) Settings() any { return config{} }

// RestoreOptions implements engines.Documented.
func (e *Engine) RestoreOptions() []engines.RestoreOption {
	return []engines.RestoreOption{
		{Name: OptDatabase, Doc: "restore only the backed-up database of this name (of a databases: all backup)"},
		{Name: OptRoles, Values: []string{"create-missing", "skip"}, Doc: "whether a restore of a databases: all backup creates the roles the server lacks (default create-missing)"},
		{Name: OptNoOwner, Values: []string{"true", "false"}, Doc: "true restores every object as owned by the restoring role (pg_restore --no-owner), as a restore by a non-superuser does anyway"},
	}
}
