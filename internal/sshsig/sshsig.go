// Package sshsig makes and checks SSH signatures (OpenSSH's SSHSIG
// format, PROTOCOL.sshsig in OpenSSH's sources): the armored
// "-----BEGIN SSH SIGNATURE-----" blocks that `ssh-keygen -Y sign` writes
// and `ssh-keygen -Y verify` checks. capsule signs its backup indexes
// with them so that a standard tool can check a backup with the bucket
// alone.
//
// A signature covers a namespace (which keeps a signature made for one
// purpose from being taken for another) and a hash (sha512) of the
// message; it carries the public key that made it, which the caller must
// still compare with the keys it trusts.
package sshsig

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"

	"golang.org/x/crypto/ssh"
)

const (
	magic   = "SSHSIG"
	version = 1
	begin   = "-----BEGIN SSH SIGNATURE-----"
	end     = "-----END SSH SIGNATURE-----"
	// MaxSize is the largest armored signature Verify reads: an RSA-16384
	// signature is under 6 KiB.
	MaxSize = 16 << 10
)

// ErrInvalid is wrapped by every error about a signature that does not
// check out (as opposed to a bad argument).
var ErrInvalid = errors.New("invalid SSH signature")

// signedData is what the key signs: the magic, then these fields.
type signedData struct {
	Namespace string
	Reserved  string
	HashAlg   string
	Hash      []byte
}

// blob is the signature's body, after the magic.
type blob struct {
	Version   uint32
	PublicKey []byte
	Namespace string
	Reserved  string
	HashAlg   string
	Signature []byte
}

func newHash(alg string) (hash.Hash, error) {
	switch alg {
	case "sha512":
		return sha512.New(), nil
	case "sha256":
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("%w: hash algorithm %q (want sha512 or sha256)", ErrInvalid, alg)
}

func toSign(namespace, alg string, message []byte) ([]byte, error) {
	h, err := newHash(alg)
	if err != nil {
		return nil, err
	}
	h.Write(message)
	return append([]byte(magic), ssh.Marshal(signedData{Namespace: namespace, HashAlg: alg, Hash: h.Sum(nil)})...), nil
}

// Sign signs message in namespace with key and returns the armored
// signature, as `ssh-keygen -Y sign -n namespace` would. RSA keys sign
// with rsa-sha2-512 (never SHA-1).
func Sign(key ssh.Signer, namespace string, message []byte) ([]byte, error) {
	if namespace == "" {
		return nil, errors.New("sshsig: empty namespace")
	}
	data, err := toSign(namespace, "sha512", message)
	if err != nil {
		return nil, err
	}
	var sig *ssh.Signature
	if key.PublicKey().Type() == ssh.KeyAlgoRSA {
		as, ok := key.(ssh.AlgorithmSigner)
		if !ok {
			return nil, errors.New("sshsig: this RSA signer cannot sign with rsa-sha2-512")
		}
		sig, err = as.SignWithAlgorithm(rand.Reader, data, ssh.KeyAlgoRSASHA512)
	} else {
		sig, err = key.Sign(rand.Reader, data)
	}
	if err != nil {
		return nil, fmt.Errorf("sshsig: sign: %w", err)
	}
	raw := append([]byte(magic), ssh.Marshal(blob{
		Version: version, PublicKey: key.PublicKey().Marshal(), Namespace: namespace,
		HashAlg: "sha512", Signature: ssh.Marshal(sig),
	})...)
	return armor(raw), nil
}

func armor(raw []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(raw)
	var b bytes.Buffer
	b.WriteString(begin + "\n")
	for len(enc) > 70 {
		b.WriteString(enc[:70] + "\n")
		enc = enc[70:]
	}
	b.WriteString(enc + "\n" + end + "\n")
	return b.Bytes()
}

func unarmor(data []byte) ([]byte, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes is larger than %d", ErrInvalid, len(data), MaxSize)
	}
	s := strings.TrimSpace(string(data))
	if !strings.HasPrefix(s, begin) || !strings.HasSuffix(s, end) {
		return nil, fmt.Errorf("%w: not an armored SSH signature (%s … %s)", ErrInvalid, begin, end)
	}
	body := strings.Join(strings.Fields(s[len(begin):len(s)-len(end)]), "")
	raw, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return raw, nil
}

// Verify checks that sig (armored) is a valid signature of message in
// namespace, and returns the public key that made it. It does not say
// whether that key is trusted: the caller compares it with its own.
func Verify(sig, message []byte, namespace string) (ssh.PublicKey, error) {
	raw, err := unarmor(sig)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(raw, []byte(magic)) {
		return nil, fmt.Errorf("%w: no %s preamble", ErrInvalid, magic)
	}
	var b blob
	if err := ssh.Unmarshal(raw[len(magic):], &b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if b.Version != version {
		return nil, fmt.Errorf("%w: version %d (want %d)", ErrInvalid, b.Version, version)
	}
	if b.Namespace != namespace {
		return nil, fmt.Errorf("%w: made for namespace %q, not %q", ErrInvalid, b.Namespace, namespace)
	}
	pub, err := ssh.ParsePublicKey(b.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrInvalid, err)
	}
	var s ssh.Signature
	if err := ssh.Unmarshal(b.Signature, &s); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrInvalid, err)
	}
	if s.Format == ssh.KeyAlgoRSA {
		return nil, fmt.Errorf("%w: an ssh-rsa (SHA-1) signature", ErrInvalid)
	}
	data, err := toSign(namespace, b.HashAlg, message)
	if err != nil {
		return nil, err
	}
	if err := pub.Verify(data, &s); err != nil {
		return nil, fmt.Errorf("%w: the signature does not match the message (%v)", ErrInvalid, err)
	}
	return pub, nil
}
