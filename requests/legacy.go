package requests

import (
	"fmt"
	"regexp"
	"strings"
)

// LegacyPrefix starts the backupId of a Restore or Verify that names a
// backup made by the old cnvrg-capsule service (package legacy), as
// "legacy:postgresql-3WxuRkPVz3pKPmCH9ZDy5e". Capsule's own backup ids
// are lower case and could look like an old one ("postgresql-…" is a
// valid id for a plan named postgresql), so an old backup is named with
// the prefix, never by its id alone.
const LegacyPrefix = "legacy:"

// legacyID is the form of the old service's backup ids:
// "<serviceType>-<shortuuid>", mixed case; postgresql is the only
// service type it ever wrote.
var legacyID = regexp.MustCompile(`^postgresql-[A-Za-z0-9]{1,64}$`)

// ValidateLegacyID checks an id of the old service:
// postgresql-[A-Za-z0-9]{1,64}. Mixed case is allowed here only.
func ValidateLegacyID(id string) error {
	if id == "" {
		return fmt.Errorf("is empty")
	}
	if !legacyID.MatchString(id) {
		return fmt.Errorf("%q is not a backup id of the old cnvrg-capsule service: want postgresql- and 1-64 letters or digits", clipString(id))
	}
	return nil
}

// LegacyBackupID returns the old service's backup id that a Restore's or
// Verify's backupId names with LegacyPrefix, and whether it names one.
// The id is not validated (Validate does that).
func LegacyBackupID(backupID string) (string, bool) {
	return strings.CutPrefix(backupID, LegacyPrefix)
}

// validateBackupRef checks the backupId of a Restore or Verify: a
// capsule backup id, or LegacyPrefix and an old service's id.
func validateBackupRef(ref string) error {
	if id, ok := LegacyBackupID(ref); ok {
		return ValidateLegacyID(id)
	}
	return ValidateID(ref)
}
