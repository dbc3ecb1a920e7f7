package crypt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"
)

// Scheme is the encryption scheme an index records for age.
const Scheme = "age"

// Recipients is a parsed, deduplicated set of public keys to encrypt to.
type Recipients struct {
	list []age.Recipient
	keys []string
}

// ParseRecipients parses public keys (see the package doc), one per
// element, and returns nil for none. An error names the element by its
// position and never quotes what looks like a secret key.
func ParseRecipients(specs []string) (*Recipients, error) {
	var r Recipients
	for i, s := range specs {
		rec, key, err := parseRecipient(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("recipient %d: %w", i+1, err)
		}
		if slices.Contains(r.keys, key) {
			continue
		}
		r.list = append(r.list, rec)
		r.keys = append(r.keys, key)
	}
	if len(r.list) == 0 {
		return nil, nil
	}
	return &r, nil
}

func parseRecipient(s string) (age.Recipient, string, error) {
	switch {
	case s == "":
		return nil, "", errors.New("is empty")
	case strings.HasPrefix(strings.ToUpper(s), "AGE-SECRET-KEY-"), strings.Contains(s, "PRIVATE KEY"):
		return nil, "", errors.New("is a secret key, not a public one: give the recipient (age-keygen -y, or the .pub of an SSH key) and keep the secret out of the configuration")
	case strings.HasPrefix(s, "age1"):
		rs, err := age.ParseRecipients(strings.NewReader(s))
		if err != nil || len(rs) != 1 {
			return nil, "", fmt.Errorf("%q is not an age recipient", clip(s))
		}
		str, ok := rs[0].(fmt.Stringer)
		if !ok {
			return nil, "", fmt.Errorf("%q: unsupported age recipient", clip(s))
		}
		return rs[0], str.String(), nil
	case strings.HasPrefix(s, "ssh-"):
		rec, err := agessh.ParseRecipient(s)
		if err != nil {
			return nil, "", fmt.Errorf("%q is not an SSH public key age can encrypt to (ssh-ed25519 or ssh-rsa): %v", clip(s), err)
		}
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
		if err != nil {
			return nil, "", fmt.Errorf("%q: %v", clip(s), err)
		}
		return rec, sshKey(pk), nil
	}
	return nil, "", fmt.Errorf("%q is not a recipient: want an age public key (age1…) or an SSH public key (ssh-ed25519 … or ssh-rsa …)", clip(s))
}

// sshKey is an SSH public key's canonical form: its type and base64 body,
// without a comment.
func sshKey(pk ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}

// Keys returns the recipients' canonical public keys, in the order given.
func (r *Recipients) Keys() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.keys)
}

// Encrypt returns a writer that encrypts to every recipient into dst; its
// Close writes the last chunk (and does not close dst). The age header is
// written at once.
func (r *Recipients) Encrypt(dst io.Writer) (io.WriteCloser, error) {
	return age.Encrypt(dst, r.list...)
}

// Identities is a set of secret keys and the public keys they belong to.
// The zero value (or nil) holds none.
type Identities struct {
	ids  []age.Identity
	keys []string
}

// ParseIdentities parses one identity source's content: an age identity
// file or an unencrypted SSH private key. origin says where it came from
// in errors (a file name, an environment variable, a Secret); errors never
// quote the content.
func ParseIdentities(data []byte, origin string) (*Identities, error) {
	var out Identities
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return nil, fmt.Errorf("identities from %s: empty", origin)
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
		id, err := agessh.ParseIdentity(trimmed)
		if err != nil {
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				return nil, fmt.Errorf("identities from %s: the SSH key is protected by a passphrase, which a worker cannot type: give an unencrypted key (kept in a Secret) or an age identity", origin)
			}
			return nil, fmt.Errorf("identities from %s: not an SSH private key age can use (ed25519 or RSA): %v", origin, err)
		}
		signer, err := ssh.ParsePrivateKey(trimmed)
		if err != nil {
			return nil, fmt.Errorf("identities from %s: %v", origin, err)
		}
		out.add(id, sshKey(signer.PublicKey()))
	default:
		ids, err := age.ParseIdentities(bytes.NewReader(trimmed))
		if err != nil {
			return nil, fmt.Errorf("identities from %s: not an age identity file (AGE-SECRET-KEY-1… lines) nor an SSH private key: %v", origin, err)
		}
		for _, id := range ids {
			switch id := id.(type) {
			case *age.X25519Identity:
				out.add(id, id.Recipient().String())
			case *age.HybridIdentity:
				out.add(id, id.Recipient().String())
			default:
				return nil, fmt.Errorf("identities from %s: unsupported identity type %T", origin, id)
			}
		}
	}
	return &out, nil
}

func (i *Identities) add(id age.Identity, key string) {
	if slices.Contains(i.keys, key) {
		return
	}
	i.ids = append(i.ids, id)
	i.keys = append(i.keys, key)
}

// Merge returns the union of i and others; nil sets are skipped.
func (i *Identities) Merge(others ...*Identities) *Identities {
	out := &Identities{}
	for _, s := range append([]*Identities{i}, others...) {
		if s == nil {
			continue
		}
		for n, id := range s.ids {
			out.add(id, s.keys[n])
		}
	}
	return out
}

// Keys returns the public keys of the identities: which recipients they
// open. Never a secret.
func (i *Identities) Keys() []string {
	if i == nil {
		return nil
	}
	return slices.Clone(i.keys)
}

// Len is how many identities the set holds.
func (i *Identities) Len() int {
	if i == nil {
		return 0
	}
	return len(i.ids)
}

// NoIdentityError says that none of the identities at hand opens what was
// encrypted to Recipients.
type NoIdentityError struct {
	// What names what could not be opened ("backup 01j…").
	What string
	// Recipients are the public keys any one of whose identities would.
	Recipients []string
	// Have are the public keys of the identities at hand.
	Have []string
}

func (e *NoIdentityError) Error() string {
	have := "none"
	if len(e.Have) > 0 {
		have = strings.Join(e.Have, ", ")
	}
	return fmt.Sprintf("%s is encrypted with age to %s; no identity at hand belongs to any of them (identities for: %s): give the secret key of one of those recipients (an identity file, an environment variable, or a Kubernetes Secret)",
		e.What, strings.Join(e.Recipients, ", "), have)
}

// Check returns nil when one of the identities belongs to one of
// recipients, else a *NoIdentityError naming what.
func (i *Identities) Check(what string, recipients []string) error {
	for _, k := range i.Keys() {
		if slices.Contains(recipients, k) {
			return nil
		}
	}
	return &NoIdentityError{What: what, Recipients: slices.Clone(recipients), Have: i.Keys()}
}

// Decrypt reads the age header from src, unwraps the file key with one of
// the identities, and returns the plaintext reader. A header none of them
// opens gives an error wrapping *age.NoIdentityMatchError.
func (i *Identities) Decrypt(src io.Reader) (io.Reader, error) {
	if i.Len() == 0 {
		return nil, errors.New("no age identity at hand")
	}
	return age.Decrypt(src, i.ids...)
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
