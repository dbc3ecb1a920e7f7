package crypt_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/crypt/crypttest"
	"golang.org/x/crypto/ssh"
)

// Every recipient's identity opens what was encrypted to all of them; an
// identity of none is told apart before anything is read.
func TestEachRecipientOpens(t *testing.T) {
	x, s := crypttest.X25519(t), crypttest.SSH(t)
	r, err := crypt.ParseRecipients([]string{x.Recipient, " " + s.Recipient + " laptop ", x.Recipient})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Keys(); len(got) != 2 || got[0] != x.Recipient || got[1] != s.Recipient {
		t.Fatalf("keys %v: want deduplicated, SSH without its comment", got)
	}
	var sealed bytes.Buffer
	w, err := r.Encrypt(&sealed)
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("capsule "), 20000)
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []crypttest.Key{x, s} {
		ids, err := crypt.ParseIdentities(k.Identity, "test")
		if err != nil {
			t.Fatal(err)
		}
		if err := ids.Check("backup b", r.Keys()); err != nil {
			t.Fatalf("Check with %s: %v", k.Recipient, err)
		}
		pr, err := ids.Decrypt(bytes.NewReader(sealed.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(pr)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("decrypt with %s: %v", k.Recipient, err)
		}
	}
	other, _ := crypt.ParseIdentities(crypttest.X25519(t).Identity, "other")
	var nie *crypt.NoIdentityError
	if err := other.Check("backup b", r.Keys()); !errors.As(err, &nie) || !strings.Contains(err.Error(), x.Recipient) || !strings.Contains(err.Error(), s.Recipient) {
		t.Fatalf("Check with a stranger's key: %v, want a NoIdentityError naming both recipients", err)
	}
}

func TestIdentityErrorsQuoteNoSecret(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crypt.ParseIdentities(pem.EncodeToMemory(block), "Secret ns/k"); err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Errorf("a passphrase-protected SSH key: %v", err)
	}
	if _, err := crypt.ParseIdentities([]byte("hunter2-not-a-key"), "file f"); err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "file f") {
		t.Errorf("garbage identity: %v", err)
	}
	secret := strings.TrimSpace(strings.Split(string(crypttest.X25519(t).Identity), "\n")[1])
	if _, err := crypt.ParseRecipients([]string{secret}); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("secret key as recipient: %v", err)
	}
}

// BenchmarkEncrypt is age's cost per byte on the backup path
// (bench/README.md, "With encryption").
func BenchmarkEncrypt(b *testing.B) {
	r, err := crypt.ParseRecipients([]string{crypttest.X25519(b).Recipient})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	w, err := r.Encrypt(io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}
