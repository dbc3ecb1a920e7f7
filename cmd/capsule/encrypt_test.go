package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/crypt/crypttest"
	"github.com/cnvrg/capsule/requests"
)

// A worker configured with recipients encrypts; describe shows which keys
// open the backup; a restore needs an identity file, and without the
// right one fails naming the recipients, with the target untouched.
func TestEncryptionThroughTheCLI(t *testing.T) {
	e := newCLIEnv(t)
	key, other := crypttest.X25519(t), crypttest.SSH(t)
	idFile := filepath.Join(e.dir, "age.key")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(idFile, other.Identity, 0o600))
	cfg, err := os.ReadFile(e.config)
	must(err)
	cfg = append(cfg, []byte("worker:\n  encryption:\n    recipients:\n      - "+key.Recipient+"\n    identityFile: "+idFile+"\n")...)
	must(os.WriteFile(e.config, cfg, 0o600))

	id := e.backup()
	desc := e.must("describe", id)
	for _, w := range []string{"Encryption:", "age; any identity of these keys opens it: " + key.Recipient, "ENCRYPTION"} {
		if !strings.Contains(desc, w) {
			t.Errorf("describe:\n%s\nwant %q", desc, w)
		}
	}
	copyDir := filepath.Join(e.dir, "copy")
	must(os.MkdirAll(copyDir, 0o755))
	must(os.WriteFile(filepath.Join(copyDir, "precious"), []byte("live"), 0o644))

	// The wrong key: fails before the target is touched.
	rid := strings.TrimSpace(e.must("restore", id, "--to", "copy"))
	e.work("w-restore")
	var st client.Status
	must(json.Unmarshal([]byte(e.must("status", rid, "-o", "json")), &st))
	if st.Status != requests.StatusFailed || st.Result == nil || !strings.Contains(st.Result.Error, key.Recipient) {
		t.Fatalf("restore with the wrong identity: %+v, want failed naming %s", st.Result, key.Recipient)
	}
	if data, err := os.ReadFile(filepath.Join(copyDir, "precious")); err != nil || string(data) != "live" {
		t.Fatalf("the target was touched: %q %v", data, err)
	}

	// The right key.
	must(os.WriteFile(idFile, key.Identity, 0o600))
	rid = strings.TrimSpace(e.must("restore", id, "--to", "copy"))
	e.work("w-restore")
	must(json.Unmarshal([]byte(e.must("status", rid, "-o", "json")), &st))
	if st.Status != requests.StatusSucceeded {
		t.Fatalf("restore with the right identity: %s %+v", st.Status, st.Result)
	}
	got, err := os.ReadFile(filepath.Join(copyDir, "sub", "f1"))
	if err != nil || string(got) != "bbbbbbbbbb" {
		t.Fatalf("restored f1: %q %v", got, err)
	}
}

func TestEncryptionConfigErrors(t *testing.T) {
	e := newCLIEnv(t)
	secret := strings.TrimSpace(strings.Split(string(crypttest.X25519(t).Identity), "\n")[1])
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	bad := append(cfg, []byte("worker:\n  encryption:\n    recipients: ["+secret+"]\n")...)
	if err := os.WriteFile(e.config, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := e.run("worker", "--once", "--unsafe-bucket")
	if code == 0 || !strings.Contains(errOut, "worker.encryption.recipients") || strings.Contains(errOut, secret) {
		t.Fatalf("a secret key as recipient: exit %d %q, want a refusal naming the setting without quoting the key", code, errOut)
	}
}
