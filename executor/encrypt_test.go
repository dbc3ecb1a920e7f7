package executor_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/crypt/crypttest"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/schemas"
	"github.com/klauspost/compress/zstd"
)

// marker is in the source's data: no stored object may contain it.
const marker = "capsule-plaintext-marker-7f3a"

// withKeys encrypts to recipients and opens with the worker identities
// ids (none when empty).
func withKeys(recipients []string, ids ...[]byte) func(*executor.Config) {
	return func(c *executor.Config) {
		c.Recipients = recipients
		c.Identities = func(context.Context) (*crypt.Identities, error) {
			var all *crypt.Identities
			for _, data := range ids {
				more, err := crypt.ParseIdentities(data, "test")
				if err != nil {
					return nil, err
				}
				all = all.Merge(more)
			}
			return all, nil
		}
	}
}

func TestEncryptedBackupStoresNothingReadable(t *testing.T) {
	for _, compression := range []string{"zstd", "none"} {
		t.Run(compression, func(t *testing.T) {
			x, s := crypttest.X25519(t), crypttest.SSH(t)
			f := newFixtureWith(t, compression, withKeys([]string{x.Recipient, s.Recipient + " ops@example"}, x.Identity))
			must(t, os.WriteFile(filepath.Join(f.data, "d", "marker.txt"), bytes.Repeat([]byte(marker+"\n"), 1000), 0o644))
			want := treeDigest(t, f.data)
			idx := f.backup()
			ctx := context.Background()
			raw, _, err := bucket.GetBytes(ctx, f.b, idx.Key())
			must(t, err)
			var v schemas.Validator
			must(t, v.Validate("backupIndex", raw))
			if idx.Prefix != "capsule/" {
				t.Errorf("index prefix %q, want the bucket prefix capsule/", idx.Prefix)
			}
			if bytes.Contains(raw, []byte("AGE-SECRET-KEY")) || bytes.Contains(raw, []byte("PRIVATE KEY")) {
				t.Fatalf("the index holds a secret key:\n%s", raw)
			}
			for _, a := range idx.Artifacts {
				if a.Encryption == nil || a.Encryption.Scheme != "age" || !slices.Equal(a.Encryption.Recipients, []string{x.Recipient, s.Recipient}) {
					t.Fatalf("artifact %s: encryption %+v, want age to [%s %s] (the SSH key without its comment)", a.Name, a.Encryption, x.Recipient, s.Recipient)
				}
				data, _, err := bucket.GetBytes(ctx, f.b, a.Key)
				must(t, err)
				sum := sha256.Sum256(data)
				if int64(len(data)) != a.StoredSize || hex.EncodeToString(sum[:]) != a.SHA256 {
					t.Errorf("artifact %s: sha256 and storedSize must be of the stored (encrypted) bytes", a.Name)
				}
				if !bytes.HasPrefix(data, []byte("age-encryption.org/v1\n")) {
					t.Errorf("artifact %s does not start with an age header", a.Name)
				}
				if dec, err := zstd.NewReader(bytes.NewReader(data)); err == nil {
					if _, err := dec.DecodeAll(data, nil); err == nil {
						t.Errorf("artifact %s decompresses as zstd", a.Name)
					}
					dec.Close()
				}
			}
			// Nothing anywhere in the bucket's directory reveals the data.
			err = filepath.Walk(filepath.Dir(f.data), func(p string, fi os.FileInfo, err error) error {
				if err != nil || !fi.Mode().IsRegular() || !strings.Contains(p, string(filepath.Separator)+"bucket"+string(filepath.Separator)) {
					return err
				}
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				for _, known := range []string{marker, "capsule keeps backups", "text.txt", "marker.txt"} {
					if bytes.Contains(data, []byte(known)) {
						t.Errorf("stored object %s contains %q", p, known)
					}
				}
				return nil
			})
			must(t, err)
			out := f.run(requests.Request{Kind: requests.KindRestore, BackupID: idx.BackupID, Target: "copy"})
			if out.Result.Status != requests.StatusSucceeded {
				t.Fatalf("restore with the right identity: %s %s", out.Result.Status, out.Result.Error)
			}
			if treeDigest(t, f.copy) != want {
				t.Fatalf("restored tree differs from the source")
			}
			out = f.run(requests.Request{Kind: requests.KindVerify, BackupID: idx.BackupID})
			if out.Result.Status != requests.StatusSucceeded {
				t.Fatalf("verify with the right identity: %s %s", out.Result.Status, out.Result.Error)
			}
		})
	}
}

func TestEncryptedRestoreWithoutTheIdentityFailsBeforeTheTarget(t *testing.T) {
	right, wrong := crypttest.X25519(t), crypttest.SSH(t)
	f := newFixtureWith(t, "zstd", withKeys([]string{right.Recipient}, wrong.Identity))
	idx := f.backup()
	must(t, os.MkdirAll(f.copy, 0o755))
	must(t, os.WriteFile(filepath.Join(f.copy, "precious"), []byte("live data"), 0o644))
	before := treeDigest(t, f.copy)
	for _, kind := range []requests.Kind{requests.KindRestore, requests.KindVerify} {
		req := requests.Request{Kind: kind, BackupID: idx.BackupID}
		if kind == requests.KindRestore {
			req.Target = "copy"
		}
		out := f.run(req)
		if out.Result.Status != requests.StatusFailed || !strings.Contains(out.Result.Error, right.Recipient) || !strings.Contains(out.Result.Error, wrong.Recipient) {
			t.Errorf("%s with the wrong identity: %s %q, want failed naming the recipient %s it needs and the key it has", kind, out.Result.Status, out.Result.Error, right.Recipient)
		}
		if out.Verification != nil {
			t.Errorf("%s with the wrong identity recorded a verification: no verdict about the backup can be made", kind)
		}
		if treeDigest(t, f.copy) != before {
			t.Fatalf("%s with the wrong identity touched the target", kind)
		}
	}
}

// A source's own identities (a Secret's, say) open its backups, and
// rotating the recipients leaves old backups to their own keys.
func TestKeyRotationKeepsOldBackupsToTheirKeys(t *testing.T) {
	old, next := crypttest.X25519(t), crypttest.SSH(t)
	var keys *[]byte
	var src sources
	f := newFixtureWith(t, "zstd", func(c *executor.Config) {
		src = c.Sources.(sources)
		for _, name := range []string{"data", "copy"} {
			s := src[name]
			s.Recipients = []string{old.Recipient}
			s.Identities = func(context.Context) (map[string][]byte, error) {
				return map[string][]byte{"Secret test/keys key identity": *keys}, nil
			}
			src[name] = s
		}
	})
	keys = &old.Identity
	first := f.backup()
	// Rotate: new backups go to the new key.
	for name, s := range src {
		s.Recipients = []string{next.Recipient}
		src[name] = s
	}
	second := f.backup()
	if got := second.Artifacts[0].Encryption.Recipients; !slices.Equal(got, []string{next.Recipient}) {
		t.Fatalf("after rotation: recipients %v, want [%s]", got, next.Recipient)
	}
	if got := first.Artifacts[0].Encryption.Recipients; !slices.Equal(got, []string{old.Recipient}) {
		t.Fatalf("the old backup's recipients changed: %v", got)
	}
	keys = &next.Identity
	if out := f.run(requests.Request{Kind: requests.KindRestore, BackupID: second.BackupID, Target: "copy"}); out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("new backup with the new key: %s %s", out.Result.Status, out.Result.Error)
	}
	out := f.run(requests.Request{Kind: requests.KindRestore, BackupID: first.BackupID, Target: "copy"})
	if out.Result.Status != requests.StatusFailed || !strings.Contains(out.Result.Error, old.Recipient) {
		t.Fatalf("old backup with only the new key: %s %q, want failed naming %s", out.Result.Status, out.Result.Error, old.Recipient)
	}
	keys = &old.Identity
	if out := f.run(requests.Request{Kind: requests.KindRestore, BackupID: first.BackupID, Target: "copy"}); out.Result.Status != requests.StatusSucceeded {
		t.Fatalf("old backup with the old key: %s %s", out.Result.Status, out.Result.Error)
	}
}

func TestBadRecipientsAreRefused(t *testing.T) {
	id := crypttest.X25519(t)
	secret := strings.TrimSpace(strings.Split(string(id.Identity), "\n")[1])
	_, err := executor.New(executor.Config{Bucket: newFixture(t, "none").b, Engines: engines.NewRegistry(), Sources: sources{}, Recipients: []string{secret}})
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "secret key") {
		t.Fatalf("a secret key as recipient: err = %v, want a refusal that does not quote it", err)
	}
	var nie *crypt.NoIdentityError
	ids, _ := crypt.ParseIdentities(id.Identity, "test")
	if err := ids.Check("backup b", []string{crypttest.X25519(t).Recipient}); !errors.As(err, &nie) {
		t.Fatalf("Check with a foreign recipient: %v", err)
	}
}
