package executor_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/cnvrg/capsule/requests"
)

// signing makes an executor sign with s and trust only s's key.
func signing(s *index.Signer) func(*executor.Config) {
	return func(c *executor.Config) {
		c.Signer = s
		c.Trust = index.NewTrust([]ssh.PublicKey{s.PublicKey()}, false)
	}
}

// forge plants a copy of the real backup x under a new id, as someone
// with write access to backups/ can: artifacts copied, index edited to
// match (every sha256 and size right), signed by forger when set, else
// unsigned.
func forge(t *testing.T, b bucket.Bucket, x *index.BackupIndex, id string, forger *index.Signer) {
	t.Helper()
	ctx := context.Background()
	y := *x
	y.BackupID, y.RequestID = id, id
	y.Artifacts = nil
	for _, a := range x.Artifacts {
		data, _, err := bucket.GetBytes(ctx, b, a.Key)
		must(t, err)
		a.Key = requests.ArtifactKey(y.Cluster, y.Source, id, y.Attempt, a.Name)
		_, err = bucket.PutBytes(ctx, b, a.Key, data, bucket.PutOptions{})
		must(t, err)
		y.Artifacts = append(y.Artifacts, a)
	}
	must(t, index.WriteSigned(ctx, b, &y, forger))
}

// TestUntrustedBackupsAreRefused performs the attack of whoever can write
// backups/: backups that are well-formed, with right checksums, but that
// no trusted key signed (no signature, another key's, or a real signed
// backup whose artifact was swapped with a matching index edit). Restores
// and verifications of each are rejected naming the backup and the
// reason, the target untouched, and no verification record vouches for
// them; the real backup restores and its verification record is signed.
func TestUntrustedBackupsAreRefused(t *testing.T) {
	worker := index.NewSigner(sshsigtest.Key(t))
	f := newFixture(t, "zstd", signing(worker))
	ctx := context.Background()
	real := f.backup()
	if _, _, err := bucket.GetBytes(ctx, f.b, index.SignatureKey(real.Key())); err != nil {
		t.Fatalf("the worker wrote no signature beside its index: %v", err)
	}
	forge(t, f.b, real, "unsigned", nil)
	forge(t, f.b, real, "forged", index.NewSigner(sshsigtest.Key(t)))

	must(t, os.MkdirAll(f.copy, 0o755))
	must(t, os.WriteFile(filepath.Join(f.copy, "precious"), []byte("live data"), 0o644))
	before := treeDigest(t, f.copy)
	// A real signed backup of other data, then its artifact swapped for
	// the real backup's and the index edited to match, in place.
	swapped := f.run(requests.Request{Kind: requests.KindBackup, Source: "copy"})
	if swapped.Result.Status != requests.StatusSucceeded {
		t.Fatalf("backup of copy: %s", swapped.Result.Error)
	}
	y := *swapped.Index
	y.Artifacts = append([]index.Artifact(nil), real.Artifacts...)
	for i, a := range y.Artifacts {
		data, _, err := bucket.GetBytes(ctx, f.b, a.Key)
		must(t, err)
		a.Key = requests.ArtifactKey(y.Cluster, y.Source, y.BackupID, y.Attempt, a.Name)
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != a.SHA256 {
			t.Fatal("copied artifact's sha256 differs")
		}
		_, err = bucket.PutBytes(ctx, f.b, a.Key, data, bucket.PutOptions{})
		must(t, err)
		y.Artifacts[i] = a
	}
	edited, err := json.MarshalIndent(&y, "", "  ")
	must(t, err)
	_, err = bucket.PutBytes(ctx, f.b, y.Key(), append(edited, '\n'), bucket.PutOptions{})
	must(t, err)

	for id, reason := range map[string]string{
		"unsigned": "no signature",
		"forged":   "a key this reader does not trust",
		y.BackupID: "does not match",
	} {
		for _, kind := range []requests.Kind{requests.KindRestore, requests.KindVerify} {
			out := f.run(requests.Request{Kind: kind, BackupID: id, Target: "copy"})
			if out.Result.Status != requests.StatusRejected || !strings.Contains(out.Result.Error, "backup "+id+" is untrusted") || !strings.Contains(out.Result.Error, reason) {
				t.Errorf("%s of %s: %s %q, want rejected naming it untrusted: %s", kind, id, out.Result.Status, out.Result.Error, reason)
			}
			if out.Verification != nil {
				t.Errorf("%s of %s: a verification record would be written", kind, id)
			}
			if treeDigest(t, f.copy) != before {
				t.Fatalf("%s of %s: the target changed", kind, id)
			}
		}
	}
	// allowUnsigned accepts a backup without a signature, never one whose
	// signature does not check out.
	out := f.run(requests.Request{Kind: requests.KindVerify, BackupID: "forged", AllowUnsigned: true})
	if out.Result.Status != requests.StatusRejected {
		t.Errorf("verify forged with allowUnsigned: %s %s, want rejected", out.Result.Status, out.Result.Error)
	}
	out = f.run(requests.Request{Kind: requests.KindVerify, BackupID: "unsigned", AllowUnsigned: true})
	if out.Result.Status != requests.StatusSucceeded {
		t.Errorf("verify unsigned with allowUnsigned: %s %s, want succeeded", out.Result.Status, out.Result.Error)
	}

	// The real backup restores, and its verification record is signed.
	want := treeDigest(t, f.data)
	out = f.run(requests.Request{Kind: requests.KindRestore, BackupID: real.BackupID, Target: "copy", DropPrevious: true})
	if out.Result.Status != requests.StatusSucceeded || treeDigest(t, f.copy) != want {
		t.Fatalf("restore of the real backup: %s %s", out.Result.Status, out.Result.Error)
	}
	out = f.run(requests.Request{Kind: requests.KindVerify, BackupID: real.BackupID})
	if out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("verify of the real backup: %s %s", out.Result.Status, out.Result.Error)
	}
	e, err := index.FindTrusted(ctx, f.b, real.BackupID, index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false))
	must(t, err)
	if e.Signature.State != index.SigSigned || e.Verification == nil || e.Verification.RequestID != out.Result.ID {
		t.Errorf("the real backup: signature %+v, verification %+v; want signed, verified by %s", e.Signature, e.Verification, out.Result.ID)
	}
}

// TestARetrySignsTheIndexAnEarlierAttemptWrote: an attempt that wrote the
// index and stopped before its signature is finished by the next attempt's
// commit, which signs the stored index.
func TestARetrySignsTheIndexAnEarlierAttemptWrote(t *testing.T) {
	worker := index.NewSigner(sshsigtest.Key(t))
	f := newFixture(t, "zstd", signing(worker))
	ctx := context.Background()
	req := requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Source: "data"}
	first := f.x.Run(ctx, &req, 1, executor.NewTracker())
	must(t, index.Write(ctx, f.b, first.Index)) // the index, and then a crash
	second := f.x.Run(ctx, &req, 2, executor.NewTracker())
	must(t, f.x.Commit(ctx, second))
	e, err := index.FindTrusted(ctx, f.b, req.ID, index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false))
	must(t, err)
	if e.Signature.State != index.SigSigned || e.Attempt != 1 {
		t.Errorf("after the retry: attempt %d, signature %+v; want attempt 1's index, signed", e.Attempt, e.Signature)
	}
}
