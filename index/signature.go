package index

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/sshsig"
)

// The SSH signature namespaces of the objects capsule signs: a signature
// made for one kind of object is never taken for another.
const (
	IndexNamespace        = "capsule-index"
	VerificationNamespace = "capsule-verification"
	// CatalogNamespace signs a catalog snapshot: the compacting worker
	// vouches for the entries and the signature facts it recorded.
	CatalogNamespace = "capsule-catalog"
	// WALNamespace signs the header line of a WAL object (package pitr),
	// which holds the sha256 of the object's payload.
	WALNamespace = "capsule-wal"
)

// SignatureSuffix ends the key of an object's signature, which lies beside
// it: backupIndex.json.sig, verify-<time>.json.sig. A signature is an
// armored SSH signature (ssh-keygen -Y sign) of the object's exact stored
// bytes.
const SignatureSuffix = ".sig"

// SignatureKey returns the key of the signature of the object at key.
func SignatureKey(key string) string { return key + SignatureSuffix }

// The states of a backup's (or a verification record's) signature.
const (
	// SigSigned: a trusted key signed the stored bytes.
	SigSigned = "signed"
	// SigUnsigned: there is no signature (the backup was made before
	// signing), and the reader accepts such backups (AllowUnsigned).
	SigUnsigned = "unsigned"
	// SigUntrusted: no trusted key signed it: the signature is missing,
	// damaged, of other bytes, or by a key the reader does not trust.
	// Restores, verifications and retention refuse the backup.
	SigUntrusted = "untrusted"
	// SigUnchecked: the reader trusts no key, so it checks no signature
	// (and believes every well-formed index, as before signing).
	SigUnchecked = "unchecked"
)

// Signature is what the reader found out about an object's signature.
type Signature struct {
	State string `json:"state"`
	// Signer is the SHA256 fingerprint of the trusted key that signed.
	Signer string `json:"signer,omitempty"`
	// Reason says why the object is untrusted or unsigned, for a person.
	Reason string `json:"reason,omitempty"`
	// missing is set when there is no signature object at all.
	missing bool
	// by is the fingerprint of the key whose valid signature it is
	// (trusted or not); why says why a signature that is there does not
	// check out. With missing, they are the facts a catalog snapshot
	// records, for each reader to judge by its own Trust.
	by, why string
}

// ErrUntrusted is wrapped by every error about a backup whose index no
// trusted key signed.
var ErrUntrusted = errors.New("untrusted backup")

// UntrustedError refuses a backup whose index no trusted key signed.
type UntrustedError struct {
	Key, BackupID, Reason string
	// Unsigned is set when the index has no signature at all (a backup
	// made before signing): an explicit --allow-unsigned accepts it.
	Unsigned bool
}

func (e *UntrustedError) Error() string {
	msg := fmt.Sprintf("backup %s is untrusted and not used: %s (%s)", e.BackupID, e.Reason, e.Key)
	if e.Unsigned {
		msg += "; a backup made before signing is accepted only with --allow-unsigned"
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrUntrusted) true.
func (e *UntrustedError) Unwrap() error { return ErrUntrusted }

// Trusted says whether the entry's index may be used to restore, verify,
// count or delete anything: signed by a trusted key, unsigned where the
// reader accepts that, or read without checking (no trusted keys).
func (e Entry) Trusted() bool { return e.Signature.State != SigUntrusted }

// TrustError is nil for a trusted entry and an *UntrustedError naming the
// backup and the reason otherwise.
func (e Entry) TrustError() error {
	if e.Trusted() {
		return nil
	}
	return &UntrustedError{Key: e.ListedKey, BackupID: e.BackupID, Reason: e.Signature.Reason, Unsigned: e.Signature.missing}
}

// Signer signs the indexes and verification records a worker writes with
// a private key kept outside the bucket.
type Signer struct{ key ssh.Signer }

// NewSigner returns a Signer that signs with key.
func NewSigner(key ssh.Signer) *Signer { return &Signer{key: key} }

// LoadSigner reads an unencrypted private key (OpenSSH's format, as
// ssh-keygen writes it, or PEM) from path.
func LoadSigner(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	key, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("signing key %s: it is encrypted with a passphrase; give an unencrypted key (keep it in a Secret or a 0600 file)", path)
		}
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return NewSigner(key), nil
}

// PublicKey is the public half of the signing key.
func (s *Signer) PublicKey() ssh.PublicKey { return s.key.PublicKey() }

// Fingerprint is the SHA256 fingerprint of the signing key, as ssh-keygen
// -l prints it.
func (s *Signer) Fingerprint() string { return ssh.FingerprintSHA256(s.key.PublicKey()) }

// Trust is a reader's judgement of signatures: the public keys it trusts
// and whether it accepts backups without a signature. A nil *Trust, or
// one without keys, checks nothing: every entry is SigUnchecked.
type Trust struct {
	keys map[string]ssh.PublicKey // by fingerprint
	// facts makes a Trust without keys still check every signature and
	// keep the facts (Signature.by, missing, why) in the unchecked
	// Signature it returns: a signing compaction records them.
	facts bool
	// AllowUnsigned accepts indexes and verification records that have no
	// signature at all (made before signing). A signature that is there
	// but does not check out is never accepted.
	AllowUnsigned bool
}

// NewTrust returns a Trust of keys.
func NewTrust(keys []ssh.PublicKey, allowUnsigned bool) *Trust {
	t := &Trust{keys: map[string]ssh.PublicKey{}, AllowUnsigned: allowUnsigned}
	for _, k := range keys {
		t.keys[ssh.FingerprintSHA256(k)] = k
	}
	return t
}

// Checks says whether t checks signatures at all (it trusts some key).
func (t *Trust) Checks() bool { return t != nil && len(t.keys) > 0 }

// Fingerprints lists the trusted keys' fingerprints, sorted.
func (t *Trust) Fingerprints() []string {
	if t == nil {
		return nil
	}
	out := make([]string, 0, len(t.keys))
	for f := range t.keys {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// WithUnsigned returns a copy of t that accepts unsigned objects too when
// allow is set (a request's explicit allowUnsigned), else t itself.
func (t *Trust) WithUnsigned(allow bool) *Trust {
	if !allow || t == nil || t.AllowUnsigned {
		return t
	}
	c := *t
	c.AllowUnsigned = true
	return &c
}

// ParseTrustedKeys reads public keys, one a line, in the format of
// authorized_keys (ssh-ed25519 AAAA… comment) or of ssh-keygen's
// allowed_signers (principals [options] ssh-ed25519 AAAA…). Blank lines and
// lines starting with # are skipped; any other line that holds no key is
// an error naming its number.
func ParseTrustedKeys(data []byte) ([]ssh.PublicKey, error) {
	var keys []ssh.PublicKey
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		key, err := parseKeyLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// parseKeyLine finds the key in an authorized_keys or allowed_signers
// line: the first field from which the rest parses as a key.
func parseKeyLine(line []byte) (ssh.PublicKey, error) {
	fields := strings.Fields(string(line))
	for i := range fields {
		if key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.Join(fields[i:], " "))); err == nil {
			return key, nil
		}
	}
	return nil, errors.New("no SSH public key (want \"ssh-ed25519 AAAA… [comment]\", as in authorized_keys or allowed_signers)")
}

// wantsFacts says whether signatures are read at all: t checks them, or
// records their facts.
func (t *Trust) wantsFacts() bool { return t.Checks() || (t != nil && t.facts) }

// withFacts returns a copy of t (nil: a Trust without keys) that also
// records the facts of every signature it reads.
func (t *Trust) withFacts() *Trust {
	c := Trust{}
	if t != nil {
		c = *t
	}
	c.facts = true
	return &c
}

// check judges sig (nil when there is none) as the signature of data in
// namespace.
func (t *Trust) check(namespace string, data, sig []byte, hasSig bool) Signature {
	if !t.wantsFacts() {
		return Signature{State: SigUnchecked}
	}
	return t.judge(sigFacts(namespace, data, sig, hasSig))
}

// sigFacts checks sig as a signature of data in namespace by any key, and
// returns what it found (a Signature without a State).
func sigFacts(namespace string, data, sig []byte, hasSig bool) Signature {
	if !hasSig {
		return Signature{missing: true}
	}
	pub, err := sshsig.Verify(sig, data, namespace)
	if err != nil {
		return Signature{why: err.Error()}
	}
	return Signature{by: ssh.FingerprintSHA256(pub)}
}

// judge gives the facts f (missing, by, why) a state by t's keys. Without
// keys it is SigUnchecked, the facts kept.
func (t *Trust) judge(f Signature) Signature {
	f.State, f.Signer, f.Reason = SigUnchecked, "", ""
	switch {
	case !t.Checks():
	case f.missing && t.AllowUnsigned:
		f.State, f.Reason = SigUnsigned, "no signature: made before signing (accepted: allowUnsigned)"
	case f.missing:
		f.State, f.Reason = SigUntrusted, "no signature"
	case f.by == "":
		f.State, f.Reason = SigUntrusted, f.why
	case t.keys[f.by] == nil:
		f.State, f.Reason = SigUntrusted, "signed by "+f.by+", a key this reader does not trust"
	default:
		f.State, f.Signer = SigSigned, f.by
	}
	return f
}

// Sign signs data in namespace with the signer's key: an armored SSH
// signature, as ssh-keygen -Y sign -n namespace writes it. For objects
// that carry their signature inside (WAL objects), not beside.
func (s *Signer) Sign(namespace string, data []byte) ([]byte, error) {
	return sshsig.Sign(s.key, namespace, data)
}

// Check judges sig as a signature of data in namespace by t's rules, the
// same as an index's: hasSig false when the object has none (unsigned,
// accepted only with AllowUnsigned). A nil t or one without keys checks
// nothing (SigUnchecked).
func (t *Trust) Check(namespace string, data, sig []byte, hasSig bool) Signature {
	return t.check(namespace, data, sig, hasSig)
}

// Missing says the object had no signature at all.
func (s Signature) Missing() bool { return s.missing }

// putSignature signs data in namespace and writes the signature beside
// key, create-only. When one is there already (an earlier attempt's), it
// must be this signer's signature of data.
func (s *Signer) putSignature(ctx context.Context, b bucket.Bucket, key, namespace string, data []byte, opts bucket.PutOptions) error {
	sig, err := sshsig.Sign(s.key, namespace, data)
	if err != nil {
		return err
	}
	opts.IfNoneMatch, opts.ContentType = true, "text/plain"
	_, err = bucket.PutBytes(ctx, b, SignatureKey(key), sig, opts)
	if !errors.Is(err, bucket.ErrPreconditionFailed) {
		if err != nil {
			return fmt.Errorf("write signature %s: %w", SignatureKey(key), err)
		}
		return nil
	}
	prev, _, err := bucket.GetBytesLimit(ctx, b, SignatureKey(key), sshsig.MaxSize)
	if err != nil {
		return fmt.Errorf("read signature %s: %w", SignatureKey(key), err)
	}
	if NewTrust([]ssh.PublicKey{s.key.PublicKey()}, false).check(namespace, data, prev, true).State != SigSigned {
		return fmt.Errorf("signature %s exists and is not this worker's signature of %s: it was not written by capsule", SignatureKey(key), key)
	}
	return nil
}
