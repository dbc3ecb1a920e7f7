package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/config"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
)

// TestSigningSettings: the signing key and the trusted keys come from the
// file, the environment and inline lines; the signer's own key is
// trusted; a bad key names the setting.
func TestSigningSettings(t *testing.T) {
	dir := t.TempDir()
	priv, pub, signer := sshsigtest.KeyFiles(t, dir, "worker")
	other := sshsigtest.Key(t)
	c, err := config.Parse([]byte("signatures:\n  trustedKeys:\n    - " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other.PublicKey()))) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CAPSULE_SIGNING_KEY_FILE": priv, "CAPSULE_ALLOW_UNSIGNED": "true"}
	c.ApplyEnv(func(k string) string { return env[k] })
	s, trust, err := c.Signing()
	if err != nil {
		t.Fatal(err)
	}
	if s == nil || s.Fingerprint() != ssh.FingerprintSHA256(signer.PublicKey()) || !trust.AllowUnsigned {
		t.Fatalf("signer %v, trust %+v", s, trust)
	}
	if got := trust.Fingerprints(); len(got) != 2 {
		t.Errorf("trusted %v, want the inline key and the signer's own", got)
	}

	c = config.Default()
	if _, trust, err = c.Signing(); err != nil || trust.Checks() {
		t.Errorf("no keys: %v, checks %v; want nothing checked", err, trust.Checks())
	}
	c.Signatures.TrustedKeysFile = pub
	if _, trust, err = c.Signing(); err != nil || !trust.Checks() {
		t.Errorf("trustedKeysFile: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []config.Config{
		{Signatures: config.Signatures{TrustedKeysFile: bad}},
		{Signatures: config.Signatures{SigningKeyFile: pub}},
		{Signatures: config.Signatures{TrustedKeys: []string{"ssh-ed25519 nope"}}},
	} {
		if _, _, err := c.Signing(); err == nil || !strings.Contains(err.Error(), "signatures.") {
			t.Errorf("%+v: %v, want an error naming the setting", c.Signatures, err)
		}
	}
}
