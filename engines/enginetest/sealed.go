package enginetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"filippo.io/age"
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/crypt/crypttest"
	"github.com/cnvrg/capsule/engines"
)

// NewSealedStore returns an empty store that encrypts every artifact with
// age to a fresh X25519 key and an SSH key, as the executor does for a
// source with recipients, and opens them with the X25519 identity.
func NewSealedStore(t testing.TB) *Store {
	t.Helper()
	x, s := crypttest.X25519(t), crypttest.SSH(t)
	r, err := crypt.ParseRecipients([]string{x.Recipient, s.Recipient})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := crypt.ParseIdentities(x.Identity, "test key")
	if err != nil {
		t.Fatal(err)
	}
	st := NewStore()
	st.seal, st.ids = r, ids
	return st
}

// WithIdentities returns a copy of the store that opens its artifacts
// with ids only.
func (s *Store) WithIdentities(ids *crypt.Identities) *Store {
	c := s.Clone()
	c.ids = ids
	return c
}

// Sealed reports whether the store encrypts its artifacts.
func (s *Store) Sealed() bool { return s.seal != nil }

// openedReader yields the decryption of an artifact's stored bytes and,
// like the executor, drains the stored bytes at the end so the checksum's
// verdict arrives with the last Read, and prefers it to a decryption
// error.
type openedReader struct {
	r, stored io.Reader
	name      string
}

func (o *openedReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	switch {
	case err == io.EOF:
		if _, derr := io.Copy(io.Discard, o.stored); derr != nil {
			return n, derr
		}
	case err != nil:
		return n, checksumOr(o.stored, fmt.Errorf("decrypt artifact %s: %w", o.name, err))
	}
	return n, err
}

// checksumOr reads the rest of the stored bytes and returns their
// *engines.ChecksumError if they are damaged, else err.
func checksumOr(stored io.Reader, err error) error {
	var ce *engines.ChecksumError
	if _, derr := io.Copy(io.Discard, stored); errors.As(derr, &ce) {
		return derr
	}
	return err
}

// runEncrypted runs the round trip, the corrupt artifact and the
// verification with sealed stores, and checks that the wrong identity
// fails without touching the target.
func runEncrypted(ctx context.Context, t *testing.T, eng engines.Engine, svc Service, opts Options) {
	opts.Encrypt = true
	t.Run("RoundTrip", func(t *testing.T) { roundTrip(ctx, t, eng, svc, opts) })
	t.Run("CorruptArtifactLeavesTargetUntouched", func(t *testing.T) { corruptArtifact(ctx, t, eng, svc, opts) })
	if v, ok := eng.(engines.Verifier); ok {
		t.Run("Verify", func(t *testing.T) { verifyCase(ctx, t, v, svc, opts) })
	}
	t.Run("WrongIdentityLeavesTargetUntouched", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
		svc.Seed(ctx, t)
		store, info := opts.backup(ctx, t, eng, svc.Source(t))
		for _, name := range store.Names() {
			data := store.Bytes(name)
			if !bytes.HasPrefix(data, []byte("age-encryption.org/v1\n")) {
				t.Fatalf("artifact %s is not stored as an age file", name)
			}
		}
		svc.Damage(ctx, t)
		before := svc.Snapshot(ctx, t)
		other, err := crypt.ParseIdentities(crypttest.X25519(t).Identity, "another key")
		if err != nil {
			t.Fatal(err)
		}
		wrong := store.WithIdentities(other)
		_, err = eng.Restore(ctx, wrong.RestoreJob(t, "wrongkey", svc.Source(t), info, opts.Restore))
		var nomatch *age.NoIdentityMatchError
		if !errors.As(err, &nomatch) {
			t.Fatalf("Restore with the wrong identity: err = %v, want an *age.NoIdentityMatchError", err)
		}
		if diff := opts.Compare(before, svc.Snapshot(ctx, t)); diff != "" {
			t.Fatalf("a restore with the wrong identity changed the target: %s", diff)
		}
		if v, ok := eng.(engines.Verifier); ok {
			rep, err := v.Verify(ctx, wrong.RestoreJob(t, "wrongkeyv", svc.Source(t), info, opts.Restore))
			if err == nil && rep != nil && rep.OK {
				t.Fatalf("Verify with the wrong identity reported ok")
			}
			if diff := opts.Compare(before, svc.Snapshot(ctx, t)); diff != "" {
				t.Fatalf("a verification with the wrong identity changed the target: %s", diff)
			}
		}
	})
}
