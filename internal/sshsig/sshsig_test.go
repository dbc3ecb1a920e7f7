package sshsig_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cnvrg/capsule/internal/sshsig"
	"golang.org/x/crypto/ssh"
)

// keygen makes a key pair of the given type with the real ssh-keygen and
// returns its private key file's path and the signer.
func keygen(t *testing.T, typ string) (string, ssh.Signer) {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen is not installed")
	}
	path := filepath.Join(t.TempDir(), "id_"+typ)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", typ, "-N", "", "-C", "capsule-test", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	return path, s
}

// TestSsh_keygenVerifiesWhatSignMakes signs with Sign and checks the
// signature with `ssh-keygen -Y verify`, for each key type, and the
// other way round: Verify accepts what `ssh-keygen -Y sign` made.
func TestSsh_keygenVerifiesWhatSignMakes(t *testing.T) {
	msg := []byte("{\"backupId\": \"x\"}\n")
	for _, typ := range []string{"ed25519", "ecdsa", "rsa"} {
		t.Run(typ, func(t *testing.T) {
			keyPath, key := keygen(t, typ)
			dir := t.TempDir()
			sig, err := sshsig.Sign(key, "capsule-index", msg)
			if err != nil {
				t.Fatal(err)
			}
			msgPath, sigPath, allowed := filepath.Join(dir, "msg"), filepath.Join(dir, "msg.sig"), filepath.Join(dir, "allowed_signers")
			must(t, os.WriteFile(msgPath, msg, 0o600))
			must(t, os.WriteFile(sigPath, sig, 0o600))
			must(t, os.WriteFile(allowed, append([]byte("capsule "), ssh.MarshalAuthorizedKey(key.PublicKey())...), 0o600))
			verify := func(ns string, message []byte) error {
				cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "capsule", "-n", ns, "-s", sigPath)
				cmd.Stdin = bytes.NewReader(message)
				out, err := cmd.CombinedOutput()
				t.Logf("ssh-keygen -Y verify -n %s: %s", ns, bytes.TrimSpace(out))
				return err
			}
			if err := verify("capsule-index", msg); err != nil {
				t.Fatalf("ssh-keygen refused capsule's signature: %v", err)
			}
			if verify("capsule-verification", msg) == nil {
				t.Error("ssh-keygen accepted the signature in another namespace")
			}
			if verify("capsule-index", append([]byte(" "), msg...)) == nil {
				t.Error("ssh-keygen accepted the signature of another message")
			}

			// The other way: ssh-keygen signs, Verify checks.
			cmd := exec.Command("ssh-keygen", "-Y", "sign", "-f", keyPath, "-n", "capsule-index", msgPath)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen -Y sign: %v\n%s", err, out)
			}
			theirs, err := os.ReadFile(msgPath + ".sig")
			must(t, err)
			pub, err := sshsig.Verify(theirs, msg, "capsule-index")
			if err != nil {
				t.Fatalf("Verify refused ssh-keygen's signature: %v", err)
			}
			if !bytes.Equal(pub.Marshal(), key.PublicKey().Marshal()) {
				t.Error("Verify returned another key")
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	_, key := keygen(t, "ed25519")
	msg := []byte("index")
	sig, err := sshsig.Sign(key, "capsule-index", msg)
	must(t, err)
	if pub, err := sshsig.Verify(sig, msg, "capsule-index"); err != nil || !bytes.Equal(pub.Marshal(), key.PublicKey().Marshal()) {
		t.Fatalf("own signature: %v", err)
	}
	flipped := bytes.Clone(sig)
	flipped[60] ^= 1
	for name, c := range map[string]struct {
		sig, msg []byte
		ns       string
	}{
		"other message":   {sig, []byte("index!"), "capsule-index"},
		"other namespace": {sig, msg, "capsule-verification"},
		"not armored":     {[]byte("hello"), msg, "capsule-index"},
		"damaged":         {flipped, msg, "capsule-index"},
		"empty":           {nil, msg, "capsule-index"},
		"huge":            {bytes.Repeat([]byte("A"), sshsig.MaxSize+1), msg, "capsule-index"},
	} {
		if _, err := sshsig.Verify(c.sig, c.msg, c.ns); !errors.Is(err, sshsig.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
