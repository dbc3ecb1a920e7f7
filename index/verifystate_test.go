package index_test

import (
	"context"
	"testing"
	"time"

	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// TestStateOf: a record says restored only when a restore was done and
// checked. Records written before states existed are judged by their
// checks, so an old checksum-only record ("VERIFIED ok" before) is
// checksum, never restored.
func TestStateOf(t *testing.T) {
	checksumOnly := []index.CheckResult{{Name: "sha256 dump.rdb", OK: true, Detail: "checksum only: engine redis has no scratch restore"}}
	restoredChecks := []index.CheckResult{{Name: "row counts", OK: true, Detail: "12 tables"}}
	for _, c := range []struct {
		name string
		v    *index.Verification
		want string
	}{
		{"no record", nil, index.VerifyNever},
		{"old checksum-only record", &index.Verification{OK: true, Checks: checksumOnly}, index.VerifyChecksum},
		{"old restore record", &index.Verification{OK: true, Checks: restoredChecks}, index.VerifyRestored},
		{"old record without checks", &index.Verification{OK: true, Checks: []index.CheckResult{}}, index.VerifyChecksum},
		{"old failed record", &index.Verification{OK: false, Checks: checksumOnly}, index.VerifyFailed},
		{"restored", &index.Verification{OK: true, State: index.VerifyRestored, Checks: restoredChecks}, index.VerifyRestored},
		{"checksum", &index.Verification{OK: true, State: index.VerifyChecksum, Checks: checksumOnly}, index.VerifyChecksum},
		{"not ok but says restored", &index.Verification{OK: false, State: index.VerifyRestored}, index.VerifyFailed},
		{"ok but says failed", &index.Verification{OK: true, State: index.VerifyFailed, Checks: restoredChecks}, index.VerifyFailed},
		{"unknown state, checksum-only checks", &index.Verification{OK: true, State: "trust-me", Checks: checksumOnly}, index.VerifyChecksum},
	} {
		if got := index.StateOf(c.v); got != c.want {
			t.Errorf("%s: StateOf = %s, want %s", c.name, got, c.want)
		}
	}
}

// TestListingDerivesTheState: an old checksum-only record (no state, as
// the executor wrote them for Redis) is listed as checksum, and a record
// with a state keeps it.
func TestListingDerivesTheState(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	old := idx("c", "cnvrg/redis", "old-1", t0)
	fresh := idx("c", "cnvrg/pg", "new-1", t0)
	for _, x := range []*index.BackupIndex{old, fresh} {
		if err := index.Write(ctx, b, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := index.WriteVerification(ctx, b, old, &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification,
		BackupID: "old-1", RequestID: "v-old", OK: true, VerifiedAt: t0.Add(time.Minute),
		Checks: []index.CheckResult{{Name: "sha256 keys.bin", OK: true, Detail: "checksum only: engine redis has no scratch restore"}}}); err != nil {
		t.Fatal(err)
	}
	if err := index.WriteVerification(ctx, b, fresh, &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification,
		BackupID: "new-1", RequestID: "v-new", OK: true, State: index.VerifyRestored, VerifiedAt: t0.Add(time.Minute),
		Checks: []index.CheckResult{{Name: "restore", OK: true}}}); err != nil {
		t.Fatal(err)
	}
	entries, err := index.List(ctx, b, index.Filter{Cluster: "c"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.BackupID] = e.Verification.State
	}
	if got["old-1"] != index.VerifyChecksum || got["new-1"] != index.VerifyRestored {
		t.Errorf("states listed: %v, want old-1 checksum, new-1 restored", got)
	}
}
