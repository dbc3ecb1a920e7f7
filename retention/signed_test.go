package retention_test

import (
	"slices"
	"sort"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
)

// TestUnsignedBackupsPushNoRealOneOut plants newer, well-formed backups
// of the plan that no trusted key signed (one unsigned, one signed by
// another key) beside signed real ones. Retention that trusts the
// worker's key counts neither, deletes neither, keeps the newest real
// ones and reports the forged ones as untrusted; with allowUnsigned the
// unsigned one counts like any backup made before signing.
func TestUnsignedBackupsPushNoRealOneOut(t *testing.T) {
	b := newFS(t)
	worker := index.NewSigner(sshsigtest.Key(t))
	for _, s := range scheduled(4) {
		x := writeBackup(t, b, s)
		if err := index.SignStored(t.Context(), b, x.Key(), worker); err != nil {
			t.Fatal(err)
		}
	}
	writeBackup(t, b, spec{id: "nightly-10", plan: plan, hour: 10})
	forged := writeBackup(t, b, spec{id: "nightly-11", plan: plan, hour: 11})
	if err := index.SignStored(t.Context(), b, forged.Key(), index.NewSigner(sshsigtest.Key(t))); err != nil {
		t.Fatal(err)
	}
	before := keysUnder(t, b, dir("nightly-10"))
	trust := index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false)
	runner := func(trust *index.Trust) *retention.Runner {
		r, err := retention.New(retention.Config{Bucket: b, Holder: "a", Lease: 10 * time.Second, Log: testLogger(t), Trust: trust})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	rep := apply(t, runner(trust), policy(2))
	wantIDs(t, "kept", rep.Kept, []string{"nightly-03", "nightly-02"})
	wantIDs(t, "deleted", rep.Deleted, []string{"nightly-00", "nightly-01"})
	var untrusted []string
	for id, reason := range rep.Untrusted {
		untrusted = append(untrusted, id)
		if reason == "" {
			t.Errorf("untrusted %s without a reason", id)
		}
	}
	sort.Strings(untrusted)
	wantIDs(t, "untrusted", untrusted, []string{"nightly-10", "nightly-11"})
	if after := keysUnder(t, b, dir("nightly-10")); !slices.Equal(after, before) || len(after) == 0 {
		t.Errorf("retention touched the untrusted backup: %q, was %q", after, before)
	}
	if _, _, err := bucket.GetBytes(t.Context(), b, requests.IndexKey(cluster, source, "nightly-11")); err != nil {
		t.Errorf("retention deleted the backup signed by another key: %v", err)
	}

	// Backups made before signing count where they are allowed.
	rep = apply(t, runner(index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, true)), policy(2))
	wantIDs(t, "kept with allowUnsigned", rep.Kept, []string{"nightly-10", "nightly-03"})
	wantIDs(t, "deleted with allowUnsigned", rep.Deleted, []string{"nightly-02"})
	if _, ok := rep.Untrusted["nightly-11"]; !ok || len(rep.Untrusted) != 1 {
		t.Errorf("with allowUnsigned: untrusted %v, want only nightly-11", rep.Untrusted)
	}
}
