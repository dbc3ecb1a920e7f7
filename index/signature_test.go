package index_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/cnvrg/capsule/requests"
)

// commitSigned writes a real backup signed by s.
func commitSigned(t *testing.T, b bucket.Bucket, x *index.BackupIndex, s *index.Signer) {
	t.Helper()
	for _, a := range x.Artifacts {
		plant(t, b, a.Key, []byte("data of "+a.Key))
	}
	if err := index.WriteSigned(context.Background(), b, x, s); err != nil {
		t.Fatal(err)
	}
}

// TestForgedSignaturesAreUntrusted plants backups that someone with write
// access to backups/ can make (well-formed, checksums right) beside a
// signed one: without a signature, with the signature of another key,
// with a signature copied from the real backup, and a real signed backup
// whose artifact was swapped with a matching index edit. A reader that
// trusts the worker's key marks each untrusted (naming the backup and the
// reason) and believes only the real one; --allow-unsigned accepts only
// the one with no signature at all.
func TestForgedSignaturesAreUntrusted(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-48 * time.Hour)
	worker := index.NewSigner(sshsigtest.Key(t))
	forger := index.NewSigner(sshsigtest.Key(t))
	trust := index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false)

	commitSigned(t, b, idx("c", "pg", "real", t0), worker)
	commit(t, b, idx("c", "pg", "nosig", t0.Add(time.Hour)))
	commitSigned(t, b, idx("c", "pg", "otherkey", t0.Add(time.Hour)), forger)
	copied := idx("c", "pg", "copied", t0.Add(time.Hour))
	commit(t, b, copied)
	realSig, _, err := bucket.GetBytes(ctx, b, index.SignatureKey(requests.IndexKey("c", "pg", "real")))
	must(t, err)
	plant(t, b, index.SignatureKey(copied.Key()), realSig)
	plant(t, b, index.SignatureKey(requests.IndexKey("c", "pg", "garbage")), []byte("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"))
	commit(t, b, idx("c", "pg", "garbage", t0.Add(time.Hour)))

	// A real signed backup, then its artifact swapped for another and its
	// index edited to match (sha256 and size), in place: the signature no
	// longer covers the bytes.
	swapped := idx("c", "pg", "swapped", t0.Add(time.Hour))
	commitSigned(t, b, swapped, worker)
	evil := []byte("DROP TABLE users;")
	swapped.Artifacts[0].SHA256, swapped.Artifacts[0].StoredSize = sha(evil), int64(len(evil))
	plant(t, b, swapped.Artifacts[0].Key, evil)
	data, err := jsonIndent(swapped)
	must(t, err)
	plant(t, b, swapped.Key(), data)

	want := map[string]string{
		"real":     index.SigSigned,
		"nosig":    index.SigUntrusted,
		"otherkey": index.SigUntrusted,
		"copied":   index.SigUntrusted,
		"garbage":  index.SigUntrusted,
		"swapped":  index.SigUntrusted,
	}
	reasons := map[string]string{
		"nosig":    "no signature",
		"otherkey": "a key this reader does not trust",
		"copied":   "does not match",
		"garbage":  "invalid SSH signature",
		"swapped":  "does not match",
	}
	l, err := index.ListAll(ctx, b, index.Filter{Trust: trust})
	must(t, err)
	if len(l.Entries) != len(want) || len(l.Damaged) != 0 {
		t.Fatalf("listed %d entries, %d damaged; want %d entries", len(l.Entries), len(l.Damaged), len(want))
	}
	for _, e := range l.Entries {
		if e.Signature.State != want[e.BackupID] {
			t.Errorf("%s: signature %+v, want %s", e.BackupID, e.Signature, want[e.BackupID])
		}
		if e.Signature.State == index.SigSigned && e.Signature.Signer != worker.Fingerprint() {
			t.Errorf("%s: signer %s, want the worker's %s", e.BackupID, e.Signature.Signer, worker.Fingerprint())
		}
	}
	for id, reason := range reasons {
		t.Run(id, func(t *testing.T) {
			e, err := index.FindTrusted(ctx, b, id, trust)
			must(t, err)
			err = e.TrustError()
			if !errors.Is(err, index.ErrUntrusted) || !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), reason) {
				t.Errorf("TrustError = %v, want ErrUntrusted naming %s and %q", err, id, reason)
			}
			// Only a backup with no signature at all is accepted when
			// unsigned ones are allowed.
			e, err = index.FindTrusted(ctx, b, id, trust.WithUnsigned(true))
			must(t, err)
			if got, wantOK := e.Trusted(), id == "nosig"; got != wantOK {
				t.Errorf("with allowUnsigned: trusted = %v (%+v), want %v", got, e.Signature, wantOK)
			}
		})
	}
	e, err := index.FindTrusted(ctx, b, "real", trust)
	must(t, err)
	if err := e.TrustError(); err != nil {
		t.Errorf("the real backup: %v", err)
	}
	// Without trusted keys, nothing is checked: as before signing.
	e, err = index.Find(ctx, b, "nosig")
	if err != nil || e.Signature.State != index.SigUnchecked || !e.Trusted() {
		t.Errorf("Find without trust: %+v, %v", e.Signature, err)
	}
}

// TestAForgedCopyDoesNotMakeARealBackupAmbiguous: an index under another
// source with the real backup's id, unsigned, whose catalog pointer was
// written first (so the pointer names the forged folder), would make a
// restore by id ambiguous or find the forgery; with trust, the one signed
// backup is found (the pointer's index is not signed: FindTrusted walks).
func TestAForgedCopyDoesNotMakeARealBackupAmbiguous(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-time.Hour)
	worker := index.NewSigner(sshsigtest.Key(t))
	commit(t, b, idx("c", "other", "b1", t0))
	commitSigned(t, b, idx("c", "pg", "b1", t0), worker)
	// Without trust nothing is checked: the write-once pointer names the
	// first committed folder.
	if e, err := index.Find(ctx, b, "b1"); err != nil || e.Source != "other" {
		t.Fatalf("without trust: %s, %v; want the pointer's (other)", e.Source, err)
	}
	e, err := index.FindTrusted(ctx, b, "b1", index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false))
	if err != nil || e.Source != "pg" || !e.Trusted() {
		t.Errorf("with trust: %s %+v, %v; want the signed pg backup", e.Source, e.Signature, err)
	}
}

// TestVerificationsMustBeSigned: a verification record planted without a
// signature (or signed by another key) does not make a backup look
// verified to a reader that checks signatures.
func TestVerificationsMustBeSigned(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-48 * time.Hour)
	worker := index.NewSigner(sshsigtest.Key(t))
	trust := index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false)
	x := idx("c", "s", "b1", t0)
	commitSigned(t, b, x, worker)
	rec := func(id string, at time.Time, ok bool) *index.Verification {
		return &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: "b1", RequestID: id,
			OK: ok, VerifiedAt: at, Checks: []index.CheckResult{{Name: "restore", OK: ok}}}
	}
	must(t, index.WriteVerificationSigned(ctx, b, x, rec("v-real", t0.Add(time.Hour), false), worker))
	must(t, index.WriteVerification(ctx, b, x, rec("v-unsigned", t0.Add(2*time.Hour), true)))
	must(t, index.WriteVerificationSigned(ctx, b, x, rec("v-forger", t0.Add(3*time.Hour), true), index.NewSigner(sshsigtest.Key(t))))
	e, err := index.FindTrusted(ctx, b, "b1", trust)
	must(t, err)
	if e.Verification == nil || e.Verification.RequestID != "v-real" {
		t.Errorf("verification %+v, want the signed v-real", e.Verification)
	}
	e, err = index.FindTrusted(ctx, b, "b1", trust.WithUnsigned(true))
	must(t, err)
	if e.Verification == nil || e.Verification.RequestID != "v-unsigned" {
		t.Errorf("with allowUnsigned: verification %+v, want v-unsigned (never the forger's)", e.Verification)
	}
}

// TestSignStoredFinishesAnInterruptedCommit: an attempt that wrote the
// index and stopped before its signature is finished by the next, which
// signs the stored bytes; a signature planted there by someone else is
// an error, never overwritten.
func TestSignStoredFinishesAnInterruptedCommit(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	worker := index.NewSigner(sshsigtest.Key(t))
	trust := index.NewTrust([]ssh.PublicKey{worker.PublicKey()}, false)
	x := idx("c", "s", "b1", time.Now().UTC().Add(-time.Hour))
	commit(t, b, x)
	must(t, index.SignStored(ctx, b, x.Key(), worker))
	must(t, index.SignStored(ctx, b, x.Key(), worker)) // already signed: nothing to do
	e, err := index.FindTrusted(ctx, b, "b1", trust)
	if err != nil || e.Signature.State != index.SigSigned {
		t.Errorf("after SignStored: %+v, %v", e.Signature, err)
	}
	y := idx("c", "s", "b2", time.Now().UTC().Add(-time.Hour))
	commit(t, b, y)
	plant(t, b, index.SignatureKey(y.Key()), []byte("planted"))
	if err := index.SignStored(ctx, b, y.Key(), worker); err == nil || !strings.Contains(err.Error(), "not written by capsule") {
		t.Errorf("SignStored over a planted signature: %v", err)
	}
}

func TestParseTrustedKeys(t *testing.T) {
	a, c := sshsigtest.Key(t).PublicKey(), sshsigtest.Key(t).PublicKey()
	line := func(k ssh.PublicKey) string { return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) }
	keys, err := index.ParseTrustedKeys([]byte("# workers\n\n" + line(a) + " prod\n" +
		`capsule,backup@example namespaces="capsule-index" ` + line(c) + "\n"))
	if err != nil || len(keys) != 2 || ssh.FingerprintSHA256(keys[0]) != ssh.FingerprintSHA256(a) || ssh.FingerprintSHA256(keys[1]) != ssh.FingerprintSHA256(c) {
		t.Fatalf("ParseTrustedKeys = %d keys, %v", len(keys), err)
	}
	if _, err := index.ParseTrustedKeys([]byte(line(a) + "\nnot a key\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a bad line: %v, want an error naming line 2", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sha(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

func jsonIndent(x *index.BackupIndex) ([]byte, error) {
	data, err := json.MarshalIndent(x, "", "  ")
	return append(data, '\n'), err
}
