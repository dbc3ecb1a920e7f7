package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/cnvrg/capsule/requests"
)

// TestSignedBackupsThroughTheCLI: a worker with a signing key signs its
// backup; ssh-keygen -Y verify, the standard tool, accepts the
// signature of the stored index with an allowed_signers file holding the
// worker's public key. A forged copy (unsigned, checksums right) is
// listed by capsule ls as untrusted, described with the reason, refused at
// the prompt of restore and verify, and, submitted with --no-check,
// rejected by the worker; --allow-unsigned accepts it.
func TestSignedBackupsThroughTheCLI(t *testing.T) {
	e := newCLIEnv(t)
	priv, pub, signer := sshsigtest.KeyFiles(t, e.dir, "capsule_signing")
	e.extraEnv = map[string]string{"CAPSULE_SIGNING_KEY_FILE": priv, "CAPSULE_TRUSTED_KEYS_FILE": pub}
	id := e.backup()
	b := e.bucket()
	ctx := context.Background()
	x, err := index.Find(ctx, b, id)
	if err != nil {
		t.Fatal(err)
	}

	// The standard tool checks what capsule wrote, from the bucket's
	// bytes alone.
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Log("ssh-keygen is not installed: the signature is not checked with it")
	} else {
		dir := t.TempDir()
		allowed := filepath.Join(dir, "allowed_signers")
		if err := os.WriteFile(allowed, append([]byte("capsule "), ssh.MarshalAuthorizedKey(signer.PublicKey())...), 0o600); err != nil {
			t.Fatal(err)
		}
		sig, _, err := bucket.GetBytes(ctx, b, index.SignatureKey(x.ListedKey))
		if err != nil {
			t.Fatal(err)
		}
		sigPath := filepath.Join(dir, "backupIndex.json.sig")
		if err := os.WriteFile(sigPath, sig, 0o600); err != nil {
			t.Fatal(err)
		}
		raw, _, err := bucket.GetBytes(ctx, b, x.ListedKey)
		if err != nil {
			t.Fatal(err)
		}
		verify := func(data []byte) (string, error) {
			cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "capsule", "-n", index.IndexNamespace, "-s", sigPath)
			cmd.Stdin = bytes.NewReader(data)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		if out, err := verify(raw); err != nil {
			t.Errorf("ssh-keygen -Y verify refused the signature capsule wrote: %v\n%s", err, out)
		}
		if out, err := verify(bytes.Replace(raw, []byte(x.Artifacts[0].SHA256), []byte(strings.Repeat("0", 64)), 1)); err == nil {
			t.Errorf("ssh-keygen -Y verify accepted an index whose sha256 was edited:\n%s", out)
		}
	}

	// A forged copy under a new id: artifacts and index copied, the ids
	// edited, every checksum right, no signature.
	y := *x.BackupIndex
	y.BackupID, y.RequestID = "forged-1", "forged-1"
	y.Artifacts = nil
	for _, a := range x.Artifacts {
		data, _, err := bucket.GetBytes(ctx, b, a.Key)
		if err != nil {
			t.Fatal(err)
		}
		a.Key = requests.ArtifactKey(y.Cluster, y.Source, y.BackupID, y.Attempt, a.Name)
		if _, err := bucket.PutBytes(ctx, b, a.Key, data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		y.Artifacts = append(y.Artifacts, a)
	}
	if err := index.Write(ctx, b, &y); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := e.run("ls", "-o", "wide")
	if code != 0 {
		t.Fatalf("ls: exit %d %s", code, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "forged-1") && !strings.Contains(line, "untrusted"):
			t.Errorf("ls shows the forged backup as %q, want it marked untrusted", line)
		case strings.HasPrefix(line, id) && (strings.Contains(line, "untrusted") || !strings.Contains(line, "signed")):
			t.Errorf("ls shows the real backup as %q, want it signed", line)
		}
	}
	if !strings.Contains(errOut, "1 untrusted backup") {
		t.Errorf("ls says %q, want it to count 1 untrusted backup", errOut)
	}
	if out := e.must("describe", "forged-1"); !strings.Contains(out, "UNTRUSTED: no signature") {
		t.Errorf("describe forged-1:\n%s\nwant it to say UNTRUSTED: no signature", out)
	}
	var entry struct {
		Signature index.Signature `json:"signature"`
	}
	if err := json.Unmarshal([]byte(e.must("describe", id, "-o", "json")), &entry); err != nil || entry.Signature.State != index.SigSigned || entry.Signature.Signer != ssh.FingerprintSHA256(signer.PublicKey()) {
		t.Errorf("describe %s -o json: signature %+v, %v", id, entry.Signature, err)
	}

	for _, kind := range []string{"restore", "verify"} {
		_, errOut, code := e.run(kind, "forged-1")
		if code != exitRefused || !strings.Contains(errOut, "backup forged-1 is untrusted") || !strings.Contains(errOut, "--allow-unsigned") {
			t.Errorf("%s forged-1: exit %d %q, want refused at the prompt naming it untrusted", kind, code, errOut)
		}
	}
	// Past the prompt, the worker refuses it too.
	rid := strings.TrimSpace(e.must("verify", "forged-1", "--no-check"))
	e.work("w-verify")
	var st client.Status
	if err := json.Unmarshal([]byte(e.must("status", rid, "-o", "json")), &st); err != nil || st.Status != requests.StatusRejected || st.Result == nil || !strings.Contains(st.Result.Error, "untrusted") {
		t.Errorf("verify forged-1 --no-check: %+v %v, want rejected as untrusted", st, err)
	}
	// --allow-unsigned accepts a backup that has no signature at all.
	rid = strings.TrimSpace(e.must("verify", "forged-1", "--allow-unsigned"))
	e.work("w-verify")
	if err := json.Unmarshal([]byte(e.must("status", rid, "-o", "json")), &st); err != nil || st.Status != requests.StatusSucceeded {
		t.Errorf("verify forged-1 --allow-unsigned: %+v %v, want succeeded", st, err)
	}
}
