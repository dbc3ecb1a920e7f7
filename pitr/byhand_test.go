package pitr

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/crypt/crypttest"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"golang.org/x/crypto/ssh"
)

// byHandBlock is the first command block of the point-in-time part of
// docs/restore-without-capsule.md, from its head line on (the download
// before it needs a bucket).
func byHandBlock(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../docs/restore-without-capsule.md")
	if err != nil {
		t.Fatal(err)
	}
	_, part, ok := strings.Cut(string(data), "### PostgreSQL point in time")
	if !ok {
		t.Fatal("the document has no point-in-time part")
	}
	m := regexp.MustCompile("(?s)```text\n(.*?)```").FindStringSubmatch(part)
	if m == nil {
		t.Fatal("the point-in-time part has no command block")
	}
	_, rest, ok := strings.Cut(m[1], "\nhead -n 1 piece.obj")
	if !ok {
		t.Fatal("the block has no head line")
	}
	return "head -n 1 piece.obj" + rest
}

// The document's commands take a signed WAL object apart with standard
// tools: ssh-keygen accepts the signature, the payload matches its
// checksum and decompresses to the WAL; an edited header fails. Where the
// age command is at hand (PATH or the project's .tools/bin), an encrypted
// and signed object is opened the same way with the identity.
func TestWALByHand(t *testing.T) {
	path := os.Getenv("PATH")
	if abs, err := filepath.Abs("../.tools/bin"); err == nil {
		path = abs + ":" + path
	}
	for _, tool := range []string{"bash", "ssh-keygen", "jq", "zstd", "awk", "sha256sum", "tail"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s: %v", tool, err)
		}
	}
	script := "set -euo pipefail\n" + byHandBlock(t)
	f := newWALFixture(t)
	key := sshsigtest.Key(t)
	age := crypttest.X25519(t)
	run := func(obj []byte) (string, []byte, error) {
		dir := t.TempDir()
		allowed := "capsule " + string(ssh.MarshalAuthorizedKey(key.PublicKey()))
		if err := os.WriteFile(filepath.Join(dir, "allowed_signers"), []byte(allowed), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "identity"), age.Identity, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "piece.obj"), obj, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+path, "AGE_IDENTITY=identity")
		out, err := cmd.CombinedOutput()
		wal, _ := os.ReadFile(filepath.Join(dir, "piece.wal"))
		return string(out), wal, err
	}
	obj := f.seal(t, nil, index.NewSigner(key))
	out, wal, err := run(obj)
	if err != nil || !bytes.Equal(wal, f.wal) {
		t.Fatalf("by hand: %v (%d bytes of WAL, want %d): %s", err, len(wal), len(f.wal), out)
	}
	if !strings.Contains(out, `Good "capsule-wal" signature`) {
		t.Errorf("ssh-keygen said: %s", out)
	}
	edited := bytes.Replace(obj, []byte(`"attempt":1`), []byte(`"attempt":2`), 1)
	if out, _, err := run(edited); err == nil {
		t.Fatalf("an edited header passed: %s", out)
	}

	t.Run("encrypted", func(t *testing.T) {
		if _, err := lookPathIn("age", path); err != nil {
			t.Skip("age is not installed (scripts/install-tools.sh)")
		}
		rec, err := crypt.ParseRecipients([]string{age.Recipient})
		if err != nil {
			t.Fatal(err)
		}
		out, wal, err := run(f.seal(t, rec, index.NewSigner(key)))
		if err != nil || !bytes.Equal(wal, f.wal) {
			t.Fatalf("by hand, encrypted: %v (%d bytes of WAL, want %d): %s", err, len(wal), len(f.wal), out)
		}
	})
}

// lookPathIn finds an executable named name in the directories of path.
func lookPathIn(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}
