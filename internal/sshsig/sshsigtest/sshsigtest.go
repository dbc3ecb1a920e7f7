// Package sshsigtest makes SSH keys for tests of signed backups.
package sshsigtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Key returns a fresh ed25519 signer.
func Key(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// KeyFiles writes a fresh ed25519 key pair into dir as ssh-keygen would
// (name, 0600, OpenSSH format; name.pub, authorized_keys format) and
// returns both paths and the signer.
func KeyFiles(t testing.TB, dir, name string) (priv, pub string, s ssh.Signer) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(key, "capsule-test")
	if err != nil {
		t.Fatal(err)
	}
	if s, err = ssh.NewSignerFromKey(key); err != nil {
		t.Fatal(err)
	}
	priv, pub = filepath.Join(dir, name), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(priv, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, ssh.MarshalAuthorizedKey(s.PublicKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, pub, s
}
