package pitr

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/crypt/crypttest"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig/sshsigtest"
	"github.com/jackc/pglogrepl"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/ssh"
)

// walFixture: a bucket, a WAL piece with a marker in it, and its name.
type walFixture struct {
	b   bucket.Bucket
	wal []byte
	seg Segment
	h   Header
}

const unitMarker = "capsule-unit-marker-7f3a"

func newWALFixture(t *testing.T) *walFixture {
	t.Helper()
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	wal := bytes.Repeat([]byte("some WAL "+unitMarker+" "), 300)
	start := pglogrepl.LSN(0x3000000)
	end := start + pglogrepl.LSN(len(wal))
	f := &walFixture{b: bucket.Prefixed(fb, "capsule/"), wal: wal,
		h: Header{Timeline: 1, Start: start.String(), End: end.String(), ServerTime: time.Now().UTC(), SystemID: "1", Attempt: 1}}
	f.seg = Segment{Key: SegmentKey("c", "pg", 1, start, end, 1), Timeline: 1, Start: start, End: end, Attempt: 1}
	return f
}

func (f *walFixture) seal(t *testing.T, rec *crypt.Recipients, signer *index.Signer) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := (&sealer{enc: enc, recipients: rec, signer: signer, cluster: "c", source: "pg"}).encode(f.h, f.wal)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

func (f *walFixture) put(t *testing.T, key string, obj []byte) {
	t.Helper()
	if _, err := bucket.PutBytes(context.Background(), f.b, key, obj, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (f *walFixture) read(source string, ids *crypt.Identities, trust *index.Trust) ([]byte, error) {
	return ReadSegment(context.Background(), f.b, "c", source, f.seg, ids, trust)
}

// An encrypted object's header names the scheme and the recipients and
// holds nothing of the WAL (no hash of it either); its payload opens
// only with an identity of a recipient, and without one the error names
// the recipients.
func TestEncryptedObjectHidesWAL(t *testing.T) {
	f := newWALFixture(t)
	key := crypttest.X25519(t)
	rec, err := crypt.ParseRecipients([]string{key.Recipient})
	if err != nil {
		t.Fatal(err)
	}
	obj := f.seal(t, rec, nil)
	if bytes.Contains(obj, []byte(unitMarker)) {
		t.Fatal("the encrypted object holds the marker in plain text")
	}
	o, err := split(f.seg.Key, obj)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(f.wal)
	if o.h.Encryption != crypt.Scheme || len(o.h.Recipients) != 1 || o.h.Recipients[0] != key.Recipient ||
		o.h.SHA256 != "" || bytes.Contains(obj, []byte(hex.EncodeToString(sum[:]))) {
		t.Fatalf("header %+v", o.h)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	if _, err := dec.DecodeAll(o.payload, nil); err == nil {
		t.Fatal("the payload decompresses without decryption")
	}
	f.put(t, f.seg.Key, obj)
	var noID *crypt.NoIdentityError
	if _, err := f.read("pg", nil, nil); !errors.As(err, &noID) || !strings.Contains(err.Error(), key.Recipient) {
		t.Fatalf("read without an identity: %v", err)
	}
	other, _ := crypt.ParseIdentities(crypttest.X25519(t).Identity, "other")
	if _, err := f.read("pg", other, nil); !errors.As(err, &noID) {
		t.Fatalf("read with another key's identity: %v", err)
	}
	ids, err := crypt.ParseIdentities(key.Identity, "test")
	if err != nil {
		t.Fatal(err)
	}
	wal, err := f.read("pg", ids, nil)
	if err != nil || !bytes.Equal(wal, f.wal) {
		t.Fatalf("read with the identity: %v", err)
	}
}

// An object written before encryption and signing (a header with the
// WAL's sha256 and nothing else) stays readable; where signatures are
// required it is unsigned: refused, unless unsigned objects are allowed.
func TestOldObjectReadable(t *testing.T) {
	f := newWALFixture(t)
	enc, _ := zstd.NewWriter(nil)
	sum := sha256.Sum256(f.wal)
	old := map[string]any{"timeline": 1, "start": f.h.Start, "end": f.h.End, "bytes": len(f.wal),
		"sha256": hex.EncodeToString(sum[:]), "compression": "zstd", "serverTime": f.h.ServerTime, "systemId": "1", "attempt": 1}
	hj, _ := json.Marshal(old)
	obj := enc.EncodeAll(f.wal, append(append([]byte(magic), hj...), '\n'))
	f.put(t, f.seg.Key, obj)
	if wal, err := f.read("pg", nil, nil); err != nil || !bytes.Equal(wal, f.wal) {
		t.Fatalf("old object: %v", err)
	}
	trust := index.NewTrust([]ssh.PublicKey{sshsigtest.Key(t).PublicKey()}, false)
	var ue *UntrustedError
	if _, err := f.read("pg", nil, trust); !errors.As(err, &ue) || !ue.Unsigned || !strings.Contains(err.Error(), "--allow-unsigned") {
		t.Fatalf("old object where signatures are required: %v", err)
	}
	if _, err := f.read("pg", nil, trust.WithUnsigned(true)); err != nil {
		t.Fatalf("old object with allowUnsigned: %v", err)
	}
}

// A signed object is believed by a reader that trusts its key; the same
// bytes with the header changed, the payload changed, the signature of
// an untrusted key, or under another source's name are refused.
func TestSignedObjectRefusesForgeries(t *testing.T) {
	f := newWALFixture(t)
	key := sshsigtest.Key(t)
	trust := index.NewTrust([]ssh.PublicKey{key.PublicKey()}, true)
	signed := f.seal(t, nil, index.NewSigner(key))
	f.put(t, f.seg.Key, signed)
	if _, err := f.read("pg", nil, trust); err != nil {
		t.Fatalf("signed object: %v", err)
	}

	later := bytes.Replace(signed, []byte(`"attempt":1`), []byte(`"attempt":7`), 1)
	f.put(t, f.seg.Key, later)
	if _, err := f.read("pg", nil, trust); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("changed header: %v", err)
	}

	tampered := bytes.Clone(signed)
	tampered[len(tampered)-3] ^= 0xff
	f.put(t, f.seg.Key, tampered)
	if _, err := f.read("pg", nil, trust); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("changed payload: %v", err)
	}

	mallory := f.seal(t, nil, index.NewSigner(sshsigtest.Key(t)))
	f.put(t, f.seg.Key, mallory)
	if _, err := f.read("pg", nil, trust); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "does not trust") {
		t.Fatalf("signed by an untrusted key: %v", err)
	}

	// The trusted signer's object of source pg, copied under source
	// other's name.
	f.put(t, f.seg.Key, signed)
	f.seg.Key = SegmentKey("c", "other", 1, f.seg.Start, f.seg.End, 1)
	f.put(t, f.seg.Key, signed)
	if _, err := f.read("other", nil, trust); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not of other") {
		t.Fatalf("copied to another source: %v", err)
	}
}

// BenchmarkSeal: what encryption and signing add to the making of one
// WAL object (1 MiB of WAL-like bytes), against plain compression in the
// same run.
func BenchmarkSeal(b *testing.B) {
	wal := make([]byte, 1<<20)
	for i := range wal {
		wal[i] = byte(i * 7 / 13)
	}
	copy(wal[4096:], bytes.Repeat([]byte("INSERT some row text "), 20000))
	key := crypttest.X25519(b)
	rec, err := crypt.ParseRecipients([]string{key.Recipient})
	if err != nil {
		b.Fatal(err)
	}
	signer := index.NewSigner(sshsigtest.Key(b))
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	h := Header{Timeline: 1, Start: "0/3000000", End: "0/3100000", ServerTime: time.Now().UTC(), SystemID: "1", Attempt: 1}
	for _, c := range []struct {
		name   string
		rec    *crypt.Recipients
		signer *index.Signer
	}{{"plain", nil, nil}, {"encrypted", rec, nil}, {"signed", nil, signer}, {"encrypted+signed", rec, signer}} {
		s := &sealer{enc: enc, recipients: c.rec, signer: c.signer, cluster: "c", source: "pg"}
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(wal)))
			for b.Loop() {
				if _, err := s.encode(h, wal); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
