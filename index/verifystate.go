package index

import "strings"

// The states of a backup's verification, from the strongest claim to
// none. Only VerifyRestored says the backup was restored and checked;
// the page's "restored" badge and capsule ls show nothing stronger for
// any other.
const (
	// VerifyRestored: the backup was restored into scratch space and the
	// engine's checks of the restored data passed.
	VerifyRestored = "restored"
	// VerifyChecksum: every artifact's stored bytes were read and match
	// the sha256 the index recorded; nothing was restored (the engine
	// has no scratch restore).
	VerifyChecksum = "checksum"
	// VerifyFailed: the verification ran and found the backup bad, or
	// could not complete.
	VerifyFailed = "failed"
	// VerifyNever: no verification is recorded.
	VerifyNever = "never"
)

// checksumOnlyDetail starts the detail of every check that the executor's
// checksum-only path wrote before records carried a state.
const checksumOnlyDetail = "checksum only"

// StateOf is what a verification record proves: VerifyNever for none,
// VerifyFailed for any record that is not ok (or says failed), whatever
// else it says, and otherwise the recorded state. A record written before states
// existed (or with a state this version does not know) is judged by its
// checks: one whose checks say "checksum only", or that has no check at
// all, proves the bytes at most (VerifyChecksum); one with checks proves
// a restore, since only engines with a scratch restore wrote such
// records.
func StateOf(v *Verification) string {
	switch {
	case v == nil:
		return VerifyNever
	case !v.OK || v.State == VerifyFailed:
		return VerifyFailed
	case v.State == VerifyRestored || v.State == VerifyChecksum:
		return v.State
	case len(v.Checks) == 0:
		return VerifyChecksum
	}
	for _, c := range v.Checks {
		if strings.HasPrefix(c.Detail, checksumOnlyDetail) {
			return VerifyChecksum
		}
	}
	return VerifyRestored
}
