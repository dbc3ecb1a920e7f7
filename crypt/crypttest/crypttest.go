// Package crypttest makes age keys for tests: a recipient (public) and
// its identity (secret) content, as a worker would read them from a file,
// an environment variable or a Secret.
package crypttest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"
)

// Key is a test key pair.
type Key struct {
	// Recipient is the public key, as configured and as an index records it.
	Recipient string
	// Identity is the secret key's content: an age identity file or an
	// OpenSSH private key.
	Identity []byte
}

// X25519 returns a new age X25519 key pair.
func X25519(t testing.TB) Key {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return Key{Recipient: id.Recipient().String(), Identity: []byte("# test key\n" + id.String() + "\n")}
}

// SSH returns a new ssh-ed25519 key pair (the public key with no comment).
func SSH(t testing.TB) Key {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "capsule test")
	if err != nil {
		t.Fatal(err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Recipient: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub))), Identity: pem.EncodeToMemory(block)}
}
