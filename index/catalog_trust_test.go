package index_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/reqcount"
	"github.com/cnvrg/capsule/internal/sshsig"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/cnvrg/capsule/requests"
)

// states maps each listed backup id to its signature state.
func states(l *index.Listing) map[string]string {
	out := map[string]string{}
	for _, e := range l.Entries {
		out[e.BackupID] = e.Signature.State
	}
	return out
}

// newestSnapshotKey returns the key of the cluster's newest snapshot.
func newestSnapshotKey(t *testing.T, b bucket.Bucket, cluster string) string {
	t.Helper()
	newest := ""
	err := bucket.Walk(context.Background(), b, requests.CatalogClusterDir(cluster)+"snapshot-", func(o bucket.ObjectInfo) error {
		if !strings.HasSuffix(o.Key, ".sig") && o.Key > newest {
			newest = o.Key
		}
		return nil
	})
	if err != nil || newest == "" {
		t.Fatalf("no snapshot of %s: %v", cluster, err)
	}
	return newest
}

// TestCatalogSnapshotsAreBelievedOnlyWhenSigned: with a Trust that checks
// signatures, a listing through the catalog gives every backup the state
// the walk gives it. A snapshot signed by the compacting worker is used
// (a bounded number of requests, no index read); a snapshot forged by
// someone who can write the bucket (unsigned, signed by another key, or
// carrying the real snapshot's signature) that lists a planted backup and
// calls an unsigned one signed is not believed: the listing walks, and the
// planted backup is not listed, the unsigned one stays untrusted.
func TestCatalogSnapshotsAreBelievedOnlyWhenSigned(t *testing.T) {
	raw := newBucket(t)
	b := &reqcount.Bucket{B: raw}
	ctx := context.Background()
	const cluster = "c1"
	t0 := time.Now().Add(-time.Hour).UTC()
	worker := index.NewSigner(sshsigtest.Key(t))
	trust := index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false)
	f := index.Filter{Cluster: cluster, Trust: trust}
	for i := range 4 {
		commitSigned(t, raw, idx(cluster, "pg", fmt.Sprintf("s%d", i), t0.Add(time.Duration(i)*time.Minute)), worker)
	}
	commit(t, raw, idx(cluster, "pg", "unsigned", t0.Add(5*time.Minute))) // planted: no signature
	v := &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: "s0", RequestID: "v1", OK: true, VerifiedAt: time.Now().UTC(), Checks: []index.CheckResult{}}
	if err := index.WriteVerificationSigned(ctx, raw, idx(cluster, "pg", "s0", t0), v, worker); err != nil {
		t.Fatal(err)
	}

	signing := index.Catalog{Bucket: b, Writer: b, Signer: worker}
	reader := index.Catalog{Bucket: b, Writer: b} // the API's: no signing key
	// The first listing walks and writes a signed snapshot.
	got := states(sameAsWalk(t, raw, signing, f))
	if got["s0"] != index.SigSigned || got["unsigned"] != index.SigUntrusted {
		t.Fatalf("states %v", got)
	}
	real := newestSnapshotKey(t, raw, cluster)
	if _, err := raw.Head(ctx, index.SignatureKey(real)); err != nil {
		t.Fatalf("the worker's snapshot is not signed: %v", err)
	}
	// New backups: events newer than the snapshot, judged by their own
	// signatures.
	commitSigned(t, raw, idx(cluster, "pg", "s9", t0.Add(9*time.Minute)), worker)
	commit(t, raw, idx(cluster, "pg", "unsigned2", t0.Add(10*time.Minute)))
	b.Reset()
	got = states(sameAsWalk(t, raw, reader, f))
	if got["s9"] != index.SigSigned || got["unsigned2"] != index.SigUntrusted || len(got) != 7 {
		t.Fatalf("states %v", got)
	}
	// A LIST, the snapshot and its signature, each event and its index's
	// signature: no walk.
	if n := b.Counts(); n.Total() > 8 || n.List > 1 {
		t.Fatalf("a listing through the signed snapshot made %+v requests, want at most 8 and one LIST", n)
	}
	l, err := reader.List(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Entries {
		if e.BackupID == "s0" && e.Verification == nil {
			t.Errorf("s0's signed verification is not listed")
		}
	}
	// Without trust nothing is checked, and the signed snapshot is used
	// all the same.
	if got := states(sameAsWalk(t, raw, reader, index.Filter{Cluster: cluster})); got["s0"] != index.SigUnchecked {
		t.Fatalf("without trust: %v", got)
	}

	// The forgery: the real snapshot with a planted backup and the
	// unsigned one, both recorded as validly signed by the worker.
	data, _, err := bucket.GetBytes(ctx, raw, real)
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	fp := worker.Fingerprint()
	entries := s["entries"].([]any)
	for _, e := range entries {
		m := e.(map[string]any)
		m["signature"] = map[string]any{"validBy": fp}
	}
	planted := idx(cluster, "pg", "planted", t0.Add(30*time.Minute))
	entries = append(entries, map[string]any{"index": planted, "written": time.Now().UTC().Add(-time.Minute), "signature": map[string]any{"validBy": fp}})
	s["entries"] = entries
	forged, _ := json.Marshal(s)
	other := sshsigtest.Key(t)
	otherSig, err := sshsig.Sign(other, index.CatalogNamespace, forged)
	if err != nil {
		t.Fatal(err)
	}
	realSig, _, err := bucket.GetBytes(ctx, raw, index.SignatureKey(real))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		name string
		sig  []byte
	}{{"unsigned", nil}, {"signed by another key", otherSig}, {"with the real snapshot's signature", realSig}} {
		t.Run(c.name, func(t *testing.T) {
			key := requests.CatalogClusterDir(cluster) + fmt.Sprintf("snapshot-29991231T000000.00000000%dZ-forged.json", i)
			if c.sig != nil {
				plant(t, raw, index.SignatureKey(key), c.sig)
			}
			plant(t, raw, key, forged)
			for _, cat := range []index.Catalog{reader, signing} {
				got := states(sameAsWalk(t, raw, cat, f))
				if _, ok := got["planted"]; ok {
					t.Fatalf("the planted backup is listed: %v", got)
				}
				if got["unsigned"] != index.SigUntrusted {
					t.Fatalf("the unsigned backup is %s, want untrusted", got["unsigned"])
				}
			}
		})
	}
}
