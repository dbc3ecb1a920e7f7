package pitr_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/crypt/crypttest"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/pgserver"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/jackc/pglogrepl"
	"golang.org/x/crypto/ssh"
)

// sealFixture: a server with database app and table notes, a source of
// it, and a bucket.
type sealFixture struct {
	srv *pgserver.Server
	b   bucket.Bucket
	src engines.Source
}

func newSealFixture(t *testing.T) *sealFixture {
	f := &sealFixture{srv: startServer(t), b: newBucket(t)}
	execPG(t, f.srv, `CREATE DATABASE app`)
	f.src = engines.Source{Name: "pg", Engine: "postgres", Config: map[string]any{"url": f.srv.URL("app"), "pitr": true, "allowSuperuser": true}}
	return f
}

func (f *sealFixture) stream(t *testing.T, holder string, signer *index.Signer) *running {
	return runStreamCfg(t, pitr.StreamConfig{Bucket: f.b, Source: f.src, Signer: signer,
		Leaser: &pitr.BucketLeaser{Bucket: f.b, Holder: holder, Length: 6 * time.Second}})
}

// note inserts n rows holding text into app.notes (made when missing).
func (f *sealFixture) note(t *testing.T, text string, n int) {
	t.Helper()
	conn, err := f.srv.Connect(context.Background(), "app")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{`CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)`,
		`INSERT INTO notes (body) SELECT $1 || ' ' || g FROM generate_series(1, $2) g`} {
		args := []any{}
		if strings.HasPrefix(q, "INSERT") {
			args = []any{text, n}
		}
		if _, err := conn.Exec(context.Background(), q, args...); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *sealFixture) count(t *testing.T, text string) int {
	t.Helper()
	conn, err := f.srv.Connect(context.Background(), "app")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM notes WHERE body LIKE $1 || '%'`, text).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func randomMarker(t *testing.T) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "capsule-marker-" + hex.EncodeToString(b[:])
}

// The WAL of a source with recipients is stored encrypted: no object in
// the bucket holds a marker inserted in the database (which the WAL
// itself holds: the test finds it there after decryption). A restore
// with the identity recovers the markers; one without fails naming the
// missing identity.
func TestEncryptedStreamRestore(t *testing.T) {
	f := newSealFixture(t)
	key := crypttest.X25519(t)
	f.src.Recipients = []string{key.Recipient}
	ids, err := crypt.ParseIdentities(key.Identity, "test key")
	if err != nil {
		t.Fatal(err)
	}
	r := f.stream(t, "w1", nil)
	f.note(t, "before", 1)
	bi := baseBackup(t, f.b, f.src)
	if bi.Artifacts[0].Encryption == nil {
		t.Fatal("the base backup of a source with recipients is not encrypted")
	}
	marker := randomMarker(t)
	f.note(t, marker, 50)
	r.waitFor(t, currentLSN(t, f.srv))
	r.stop()

	ctx := context.Background()
	segs, err := pitr.ListSegments(ctx, f.b, cluster, "pg")
	if err != nil || len(segs) == 0 {
		t.Fatalf("WAL objects: %d %v", len(segs), err)
	}
	var plain []byte
	for _, s := range segs {
		obj, _, err := bucket.GetBytesLimit(ctx, f.b, s.Key, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(obj, []byte(marker)) {
			t.Errorf("%s holds the marker in plain text", s.Key)
		}
		if !bytes.Contains(obj[:bytes.IndexByte(obj, '\n')], []byte(`"encryption":"age"`)) {
			t.Errorf("%s: header does not name age: %.300s", s.Key, obj)
		}
		wal, err := pitr.ReadSegment(ctx, f.b, cluster, "pg", s, ids, nil)
		if err != nil {
			t.Fatalf("read %s with the identity: %v", s.Key, err)
		}
		plain = append(plain, wal...)
	}
	if !bytes.Contains(plain, []byte(marker)) {
		t.Fatal("the decrypted WAL does not hold the marker: the test proves nothing")
	}

	// The verification of the encrypted base backup opens its archive
	// and its WAL with the worker's identity.
	x := newExecutor(t, f.b, f.src, func(c *executor.Config) {
		c.Identities = func(context.Context) (*crypt.Identities, error) { return ids, nil }
	})
	if v := verifyBackup(t, x, bi.BackupID); !v.OK {
		t.Fatalf("verification of the encrypted base backup: %s", v.Error)
	}

	execPG(t, f.srv, `DROP DATABASE app WITH (FORCE)`)
	execPG(t, f.srv, `CREATE DATABASE app`)
	cfg := pitr.RestoreConfig{Bucket: f.b, Cluster: cluster, Source: "pg", Target: pitr.Target{Latest: true},
		Into: &f.src, ID: requests.NewID(), Log: enginetest.TestLog(t)}
	var noID *crypt.NoIdentityError
	if _, err := pitr.Restore(ctx, cfg); !errors.As(err, &noID) || !strings.Contains(err.Error(), key.Recipient) {
		t.Fatalf("restore without an identity: %v", err)
	} else {
		t.Logf("without an identity: %v", err)
	}
	cfg.Identities, cfg.ID = ids, requests.NewID()
	if _, err := pitr.Restore(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if n := f.count(t, marker); n != 50 {
		t.Fatalf("restored %d markers, want 50", n)
	}
}

// With signing on, a restore that requires signatures uses the signed
// WAL; WAL a holder wrote unsigned is refused unless --allow-unsigned,
// and WAL signed by a key the reader does not trust is refused even
// then.
func TestSignedStreamRefusesUnsignedAndForged(t *testing.T) {
	f := newSealFixture(t)
	key := sshsigtest.Key(t)
	signer := index.NewSigner(key)
	trust := index.NewTrust([]ssh.PublicKey{key.PublicKey()}, false)
	ctx := context.Background()
	restore := func(tr *index.Trust) error {
		_, err := pitr.Restore(ctx, pitr.RestoreConfig{Bucket: f.b, Cluster: cluster, Source: "pg", Target: pitr.Target{Latest: true},
			Into: &f.src, ID: requests.NewID(), Log: enginetest.TestLog(t), Trust: tr})
		return err
	}

	r := f.stream(t, "w1", signer)
	f.note(t, "before", 1)
	baseBackupBy(t, newExecutor(t, f.b, f.src, func(c *executor.Config) { c.Signer = signer }), f.src)
	f.note(t, "signed", 10)
	r.waitFor(t, currentLSN(t, f.srv))
	r.stop()
	if err := restore(trust); err != nil {
		t.Fatalf("restore of signed WAL: %v", err)
	}
	if n := f.count(t, "signed"); n != 10 {
		t.Fatalf("restored %d signed rows, want 10", n)
	}
	window := func(tr *index.Trust) *pitr.Window {
		t.Helper()
		w, err := pitr.RecoverableWindow(ctx, f.b, cluster, "pg", tr)
		if err != nil || w == nil {
			t.Fatalf("window: %v, %v", w, err)
		}
		return w
	}
	signedEnd := window(trust)

	r = f.stream(t, "w2", nil) // a holder without the signing key
	f.note(t, "unsigned", 10)
	r.waitFor(t, currentLSN(t, f.srv))
	r.stop()
	var ue *pitr.UntrustedError
	if err := restore(trust); !errors.As(err, &ue) || !ue.Unsigned || !strings.Contains(err.Error(), "--allow-unsigned") {
		t.Fatalf("restore over unsigned WAL: %v", err)
	} else {
		t.Logf("unsigned: %v", err)
	}
	if err := restore(trust.WithUnsigned(true)); err != nil {
		t.Fatalf("restore over unsigned WAL with --allow-unsigned: %v", err)
	}
	if n := f.count(t, "unsigned"); n != 10 {
		t.Fatalf("restored %d unsigned rows, want 10", n)
	}
	// The window where signatures are required ends where the signed
	// WAL does; the unsigned objects count only when they are accepted.
	if w := window(trust); w.LatestLSN != signedEnd.LatestLSN || !w.Latest.Equal(signedEnd.Latest) {
		t.Errorf("window under trust ends at %s (%s), want the signed WAL's end %s", w.LatestLSN, w.Latest, signedEnd.LatestLSN)
	}
	unsignedEnd := window(trust.WithUnsigned(true))
	if lsnOf(t, unsignedEnd.LatestLSN) <= lsnOf(t, signedEnd.LatestLSN) {
		t.Errorf("window accepting unsigned WAL ends at %s, not after the signed WAL's %s", unsignedEnd.LatestLSN, signedEnd.LatestLSN)
	}

	r = f.stream(t, "w3", index.NewSigner(sshsigtest.Key(t))) // someone else's key
	f.note(t, "forged", 10)
	r.waitFor(t, currentLSN(t, f.srv))
	r.stop()
	if err := restore(trust.WithUnsigned(true)); !errors.Is(err, pitr.ErrUntrusted) || !strings.Contains(err.Error(), "does not trust") {
		t.Fatalf("restore over WAL signed by an untrusted key: %v", err)
	} else {
		t.Logf("forged: %v", err)
	}
	if w := window(trust.WithUnsigned(true)); w.LatestLSN != unsignedEnd.LatestLSN {
		t.Errorf("window ends at %s past WAL signed by another key, want the accepted WAL's end %s", w.LatestLSN, unsignedEnd.LatestLSN)
	}
	if w := window(nil); lsnOf(t, w.LatestLSN) <= lsnOf(t, unsignedEnd.LatestLSN) {
		t.Errorf("window checking no signature ends at %s, not past the forged WAL's start %s", w.LatestLSN, unsignedEnd.LatestLSN)
	}
}

// WAL encrypted to the worker's recipients (the source names none) under
// a base backup in the clear: a restore without the identity fails
// naming the WAL object and its recipient.
func TestRestoreWithoutIdentityNamesWAL(t *testing.T) {
	f := newSealFixture(t)
	key := crypttest.X25519(t)
	r := runStreamCfg(t, pitr.StreamConfig{Bucket: f.b, Source: f.src, Recipients: []string{key.Recipient},
		Leaser: &pitr.BucketLeaser{Bucket: f.b, Holder: "w1", Length: 6 * time.Second}})
	f.note(t, "before", 1)
	baseBackup(t, f.b, f.src)
	f.note(t, "after", 5)
	r.waitFor(t, currentLSN(t, f.srv))
	r.stop()
	_, err := pitr.Restore(context.Background(), pitr.RestoreConfig{Bucket: f.b, Cluster: cluster, Source: "pg",
		Target: pitr.Target{Latest: true}, Into: &f.src, ID: requests.NewID(), Log: enginetest.TestLog(t)})
	var noID *crypt.NoIdentityError
	if !errors.As(err, &noID) || !strings.HasPrefix(noID.What, "WAL wal/") || !strings.Contains(err.Error(), key.Recipient) {
		t.Fatalf("restore without the WAL's identity: %v", err)
	}
	t.Log(err)
}

func lsnOf(t *testing.T, s string) pglogrepl.LSN {
	t.Helper()
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatalf("LSN %q: %v", s, err)
	}
	return l
}
