// Package crypt is capsule's client-side encryption of artifacts, with
// age (https://age-encryption.org, the filippo.io/age library): the same
// format the age command-line tool reads, so a backup stays restorable
// with standard tools and the bucket alone.
//
// Recipients are public keys: X25519 ("age1…", made by age-keygen), the
// post-quantum hybrid ("age1pq1…") and SSH ("ssh-ed25519 AAAA…",
// "ssh-rsa AAAA…"). A backup's index records them in their canonical form
// (an SSH key without its comment), so anyone can tell which keys open a
// backup; nothing secret is ever recorded.
//
// Identities are the secret keys that open what was encrypted to their
// recipients: an age identity file ("AGE-SECRET-KEY-1…" lines, comments
// with "#") or an unencrypted OpenSSH/PEM private key. Check tells,
// before anything is read or restored, whether any of them belongs to a
// backup's recipients, and if not names the recipients that would (a
// *NoIdentityError).
//
// Rotating keys is changing the recipients: new backups use the new set,
// and old backups keep theirs (nothing under backups/ is rewritten), so
// the identities of every recipient set still in the bucket must stay
// available for as long as those backups are kept.
package crypt
