package index

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/sshsig"
	"github.com/cnvrg/capsule/requests"
)

// Kind values of the objects this package writes.
const (
	KindIndex        = "BackupIndex"
	KindVerification = "Verification"
)

// BackupIndex is backupIndex.json, the commit mark of a backup: written
// once, create-only, after every artifact and before the result. It holds
// everything a restore needs with the bucket alone.
type BackupIndex struct {
	APIVersion     string            `json:"apiVersion"`
	Kind           string            `json:"kind"`
	BackupID       string            `json:"backupId"`
	RequestID      string            `json:"requestId"`
	Cluster        string            `json:"cluster"`
	Source         string            `json:"source"`
	Plan           string            `json:"plan,omitempty"`
	Engine         string            `json:"engine"`
	Format         string            `json:"format"`
	ServerVersion  string            `json:"serverVersion,omitempty"`
	ToolVersion    string            `json:"toolVersion,omitempty"`
	CapsuleVersion string            `json:"capsuleVersion"`
	Status         requests.Status   `json:"status"`
	Attempt        int               `json:"attempt"`
	Worker         string            `json:"worker,omitempty"`
	StartedAt      time.Time         `json:"startedAt"`
	FinishedAt     time.Time         `json:"finishedAt"`
	Labels         map[string]string `json:"labels,omitempty"`
	SourceInfo     map[string]string `json:"sourceInfo,omitempty"`
	Details        map[string]any    `json:"details,omitempty"`
	Bytes          int64             `json:"bytes"`
	StoredBytes    int64             `json:"storedBytes"`
	RetainUntil    time.Time         `json:"retainUntil,omitzero"`
	// Prefix is the bucket prefix (capsule/ by default) that the
	// artifacts' keys, and the index's own key, are relative to. Indexes
	// written before it existed have none: their prefix is the one they
	// were found under.
	Prefix    string     `json:"prefix,omitempty"`
	Artifacts []Artifact `json:"artifacts"`
}

// Artifact is one stored stream of a backup.
type Artifact struct {
	Name string `json:"name"`
	// Key is relative to the bucket's prefix (BackupIndex.Prefix).
	Key string `json:"key"`
	// Size is the bytes the engine wrote; StoredSize the bytes stored.
	Size       int64 `json:"size"`
	StoredSize int64 `json:"storedSize"`
	// SHA256 is the hex sha256 of the stored bytes.
	SHA256      string      `json:"sha256"`
	Compression string      `json:"compression"`
	Encryption  *Encryption `json:"encryption,omitempty"`
}

// Encryption says how an artifact was encrypted: with Scheme "age"
// (package crypt), after compression, to every one of Recipients, the
// public keys (age1… or SSH, without comment) whose secret keys open it.
// Never a secret.
type Encryption struct {
	Scheme     string   `json:"scheme"`
	Recipients []string `json:"recipients"`
}

// Verification is a verify-<time>.json record beside a backup's index: the
// outcome of one verification. Later records supersede earlier ones.
type Verification struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	BackupID   string `json:"backupId"`
	RequestID  string `json:"requestId"`
	OK         bool   `json:"ok"`
	// State says what was proven (VerifyRestored, VerifyChecksum or
	// VerifyFailed); records written before it existed have none, and
	// the catalog derives it (StateOf).
	State          string        `json:"state,omitempty"`
	Error          string        `json:"error,omitempty"`
	Target         string        `json:"target,omitempty"`
	Worker         string        `json:"worker,omitempty"`
	VerifiedAt     time.Time     `json:"verifiedAt"`
	DurationMillis int64         `json:"durationMillis,omitempty"`
	Checks         []CheckResult `json:"checks"`
}

// CheckResult is one verified property.
type CheckResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Recipients returns the public keys that open the backup's encrypted
// artifacts (every encrypted artifact's recipients, in order, without
// repeats); none when nothing is encrypted.
func (x *BackupIndex) Recipients() []string {
	var keys []string
	for _, a := range x.Artifacts {
		if a.Encryption == nil {
			continue
		}
		for _, k := range a.Encryption.Recipients {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// Key returns the index's own key.
func (x *BackupIndex) Key() string { return requests.IndexKey(x.Cluster, x.Source, x.BackupID) }

// Write stores the index create-only, unsigned (WriteSigned with no
// signer).
func Write(ctx context.Context, b bucket.Bucket, x *BackupIndex) error {
	return WriteSigned(ctx, b, x, nil)
}

// WriteSigned stores the index create-only and then, when s is set, its
// signature beside it (backupIndex.json.sig, create-only): an SSH
// signature of the exact bytes stored, which hold every artifact's key,
// size and sha256. It returns bucket.ErrPreconditionFailed (wrapped) when
// an index already exists: the backup was committed by an earlier
// attempt, which SignStored then finishes signing.
func WriteSigned(ctx context.Context, b bucket.Bucket, x *BackupIndex, s *Signer) error {
	data, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	opts := bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json", RetainUntil: x.RetainUntil}
	if _, err = bucket.PutBytes(ctx, b, x.Key(), data, opts); err != nil {
		return fmt.Errorf("write index %s: %w", x.Key(), err)
	}
	if s != nil {
		// The signature before the catalog's event: a listing that reads
		// the event finds the signature beside the index.
		if err := s.putSignature(ctx, b, x.Key(), IndexNamespace, data, opts); err != nil {
			return err
		}
	}
	return record(ctx, b, x, data, s)
}

// SignStored signs the index stored at key, unless its signature is there
// already: the end of a commit that an earlier attempt began (it wrote
// the index, then stopped before the signature).
func SignStored(ctx context.Context, b bucket.Bucket, key string, s *Signer) error {
	data, info, err := bucket.GetBytesLimit(ctx, b, key, MaxIndexSize)
	if err != nil {
		return fmt.Errorf("read index %s to sign it: %w", key, err)
	}
	x, derr := decode(key, data, info.LastModified)
	if derr != nil {
		return derr
	}
	return s.putSignature(ctx, b, key, IndexNamespace, data, bucket.PutOptions{RetainUntil: x.RetainUntil})
}

// WriteVerification stores a verification record beside the backup,
// unsigned.
func WriteVerification(ctx context.Context, b bucket.Bucket, x *BackupIndex, v *Verification) error {
	return WriteVerificationSigned(ctx, b, x, v, nil)
}

// WriteVerificationSigned stores a verification record beside the backup
// and, when s is set, its signature beside it (verify-<time>.json.sig).
func WriteVerificationSigned(ctx context.Context, b bucket.Bucket, x *BackupIndex, v *Verification, s *Signer) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	key := requests.VerifyKey(x.Cluster, x.Source, x.BackupID, v.VerifiedAt)
	opts := bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json", RetainUntil: x.RetainUntil}
	if _, err := bucket.PutBytes(ctx, b, key, data, opts); err != nil {
		return fmt.Errorf("write verification %s: %w", key, err)
	}
	if s != nil {
		if err := s.putSignature(ctx, b, key, VerificationNamespace, data, opts); err != nil {
			return err
		}
	}
	// The catalog's copy: a listing reads it beside the snapshot.
	return putOnce(ctx, b, requests.CatalogEventDir(x.Cluster, x.BackupID)+path.Base(key), data, time.Time{})
}

// Read loads the index at key and believes it only where it is (see
// the package doc): one that cannot be parsed, whose content does not
// match key, or that finished in the future by the bucket's clock gives a
// *DamagedError (errors.Is(err, ErrDamaged)). The bucket's own errors
// (bucket.ErrNotFound among them) are returned as they are.
func Read(ctx context.Context, b bucket.Reader, key string) (*BackupIndex, error) {
	x, _, _, err := readRaw(ctx, b, key)
	return x, err
}

// readRaw is Read that also returns the stored bytes and when the index
// was written.
func readRaw(ctx context.Context, b bucket.Reader, key string) (*BackupIndex, []byte, time.Time, error) {
	data, info, err := bucket.GetBytesLimit(ctx, b, key, MaxIndexSize)
	if errors.Is(err, bucket.ErrTooLarge) {
		return nil, nil, time.Time{}, damaged(key, "%v", err)
	}
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	x, derr := decode(key, data, info.LastModified)
	if derr != nil {
		return nil, nil, time.Time{}, derr
	}
	return x, data, info.LastModified, nil
}

// decode parses and checks the index read from key, written when the
// bucket's clock said modified.
func decode(key string, data []byte, modified time.Time) (*BackupIndex, *DamagedError) {
	var x BackupIndex
	if err := json.Unmarshal(data, &x); err != nil {
		return nil, damaged(key, "not a backup index: %v", err)
	}
	if x.APIVersion != requests.APIVersion || x.Kind != KindIndex {
		return nil, damaged(key, "unsupported apiVersion %q kind %q", clip(x.APIVersion), clip(x.Kind))
	}
	if d := check(key, &x, modified); d != nil {
		return nil, d
	}
	return &x, nil
}

// Entry is one backup as the catalog shows it: the index merged with the
// facts recorded beside it later.
type Entry struct {
	*BackupIndex
	// Verification is the newest verification record that is believed
	// (and, where the reader checks signatures, signed), if any.
	Verification *Verification `json:"verification,omitempty"`
	// Signature is what the reader found of the index's signature:
	// an entry whose state is SigUntrusted is listed, never used.
	Signature Signature `json:"signature"`
	// ListedKey is the key the index was listed and read at. It equals
	// BackupIndex.Key() (a listing believes no other), and deletes go by
	// it, never by the content.
	ListedKey string `json:"-"`
	// written and verificationWritten are when the index and the
	// verification were written, by the bucket's clock (the catalog
	// keeps them to check its copies again).
	written, verificationWritten time.Time
	// verificationSig is what was found of the verification's signature.
	verificationSig Signature
}

// Listing is what ListAll found.
type Listing struct {
	// Entries are the committed backups, newest first.
	Entries []Entry
	// Damaged are the indexes not believed, by key.
	Damaged []Damaged
}

// Filter narrows a listing. Empty fields match everything.
type Filter struct {
	Cluster string
	Source  string
	// Trust judges each entry's signature (nil: none is checked, every
	// entry is SigUnchecked).
	Trust *Trust
}

func (f Filter) prefix() string {
	p := requests.BackupsPrefix
	if f.Cluster == "" {
		return p
	}
	p += requests.Segment(f.Cluster) + "/"
	if f.Source == "" {
		return p
	}
	return p + requests.Segment(f.Source) + "/"
}

// ErrBackupNotFound is returned by Find when no committed backup has the id.
var ErrBackupNotFound = errors.New("backup not found")

// List returns the committed backups that match f, newest first (by
// finish time, then id). A backup without an index is not committed and
// is not listed; a damaged index is skipped (ListAll reports it).
func List(ctx context.Context, b bucket.Reader, f Filter) ([]Entry, error) {
	l, err := ListAll(ctx, b, f)
	if err != nil {
		return nil, err
	}
	return l.Entries, nil
}

// ListAll returns the committed backups that match f, newest first (by
// finish time, then id), and the damaged indexes among them (see the
// package doc), which it does not believe: a damaged index is reported,
// never an error for the whole listing. Errors are the bucket's own.
func ListAll(ctx context.Context, b bucket.Reader, f Filter) (*Listing, error) {
	indexKeys, verifyKeys, sigs, err := scan(ctx, b, f.prefix(), "")
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, len(indexKeys))
	errs := parallel(len(indexKeys), 16, func(i int) (err error) {
		entries[i], err = load(ctx, b, indexKeys[i], verifyKeys[dirOf(indexKeys[i])], sigs, f.Trust)
		return err
	})
	l := &Listing{Entries: entries[:0]}
	for i, e := range entries {
		var de *DamagedError
		switch {
		case errs[i] == nil:
			l.Entries = append(l.Entries, e)
		case errors.Is(errs[i], bucket.ErrNotFound):
			// deleted by retention since the listing
		case errors.As(errs[i], &de):
			l.Damaged = append(l.Damaged, de.Damaged)
		default:
			return nil, errs[i]
		}
	}
	sortListing(l)
	return l, nil
}

// Find returns the committed backup with the given id, in any cluster and
// source, without checking signatures (FindTrusted with no trust).
func Find(ctx context.Context, b bucket.Reader, backupID string) (Entry, error) {
	return FindTrusted(ctx, b, backupID, nil)
}

// FindTrusted returns the committed backup with the given id, in any
// cluster and source, its signature judged by t. Damaged indexes that
// carry the id in their key are not used: when only such exist, the error
// wraps ErrDamaged and names the key and the reason. An untrusted entry is
// returned as found (its Signature says so; TrustError refuses it), but
// when one trusted entry has the id, untrusted ones do not make it
// ambiguous. It asks the catalog's pointer first (a handful of requests)
// and uses what it leads to only where the index there is signed by a
// trusted key (or nothing is checked); otherwise (no pointer, a damaged or
// forged one, an index that is unsigned or untrusted) it walks every
// backup's keys, as before the catalog.
func FindTrusted(ctx context.Context, b bucket.Reader, backupID string, t *Trust) (Entry, error) {
	if err := requests.ValidateID(backupID); err != nil {
		return Entry{}, fmt.Errorf("backup id: %w", err)
	}
	if e, ok := findByPointer(ctx, b, backupID, t); ok {
		return e, nil
	}
	return findByWalk(ctx, b, backupID, t)
}

// findByWalk is FindTrusted without the catalog: it lists every backup's
// keys.
func findByWalk(ctx context.Context, b bucket.Reader, backupID string, t *Trust) (Entry, error) {
	indexKeys, verifyKeys, sigs, err := scan(ctx, b, requests.BackupsPrefix, backupID)
	if err != nil {
		return Entry{}, err
	}
	var found []Entry
	var bad []error
	for _, key := range indexKeys {
		e, err := load(ctx, b, key, verifyKeys[dirOf(key)], sigs, t)
		switch {
		case err == nil:
			found = append(found, e)
		case errors.Is(err, bucket.ErrNotFound):
		case errors.Is(err, ErrDamaged):
			bad = append(bad, err)
		default:
			return Entry{}, err
		}
	}
	switch len(found) {
	case 0:
		if len(bad) > 0 {
			return Entry{}, fmt.Errorf("backup %s: %w", backupID, errors.Join(bad...))
		}
		return Entry{}, fmt.Errorf("%w: %s", ErrBackupNotFound, backupID)
	case 1:
		return found[0], nil
	}
	if trusted := slices.DeleteFunc(slices.Clone(found), func(e Entry) bool { return !e.Trusted() }); len(trusted) == 1 {
		return trusted[0], nil
	}
	keys := make([]string, len(found))
	for i, e := range found {
		keys[i] = e.ListedKey
	}
	return Entry{}, fmt.Errorf("backup id %s is ambiguous: %s", backupID, strings.Join(keys, ", "))
}

// scan lists index and verification keys under prefix, and the set of
// signature keys; with onlyID set, only those of that backup id.
func scan(ctx context.Context, b bucket.Reader, prefix, onlyID string) ([]string, map[string][]string, map[string]bool, error) {
	var indexKeys []string
	verifyKeys := map[string][]string{}
	sigs := map[string]bool{}
	err := bucket.Walk(ctx, b, prefix, func(o bucket.ObjectInfo) error {
		k, err := requests.ParseBackupKey(o.Key)
		if err != nil || (onlyID != "" && k.BackupID != onlyID) {
			return nil
		}
		switch {
		case k.Rest == requests.IndexName:
			indexKeys = append(indexKeys, o.Key)
		case strings.Contains(k.Rest, "/"):
		case strings.HasSuffix(k.Rest, SignatureSuffix):
			sigs[o.Key] = true
		case strings.HasPrefix(k.Rest, requests.VerifyPrefix):
			verifyKeys[dirOf(o.Key)] = append(verifyKeys[dirOf(o.Key)], o.Key)
		}
		return nil
	})
	return indexKeys, verifyKeys, sigs, err
}

// signature judges the signature of the object at key, whose stored bytes
// are data, in namespace; sigs says which signature objects exist.
func signature(ctx context.Context, b bucket.Reader, key, namespace string, data []byte, sigs map[string]bool, t *Trust) (Signature, error) {
	if !t.wantsFacts() {
		return Signature{State: SigUnchecked}, nil
	}
	if !sigs[SignatureKey(key)] {
		return t.check(namespace, data, nil, false), nil
	}
	sig, _, err := bucket.GetBytesLimit(ctx, b, SignatureKey(key), sshsig.MaxSize)
	switch {
	case errors.Is(err, bucket.ErrNotFound):
		return t.check(namespace, data, nil, false), nil
	case errors.Is(err, bucket.ErrTooLarge):
		return t.judge(Signature{why: "signature: " + err.Error()}), nil
	case err != nil:
		return Signature{}, err
	}
	return t.check(namespace, data, sig, true), nil
}

func dirOf(key string) string { return key[:strings.LastIndex(key, "/")+1] }

// load reads the index at key, judges its signature by t, and merges the
// newest verification record that is believed (see checkVerification) and,
// where t checks signatures, signed by a trusted key (or unsigned, where t
// accepts that); records that are not are ignored.
func load(ctx context.Context, b bucket.Reader, key string, verifications []string, sigs map[string]bool, t *Trust) (Entry, error) {
	x, raw, written, err := readRaw(ctx, b, key)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{BackupIndex: x, ListedKey: key, written: written}
	if e.Signature, err = signature(ctx, b, key, IndexNamespace, raw, sigs, t); err != nil {
		return Entry{}, err
	}
	// Verification keys sort by time; the newest is last.
	for i := len(verifications) - 1; i >= 0; i-- {
		data, info, err := bucket.GetBytesLimit(ctx, b, verifications[i], MaxVerificationSize)
		if errors.Is(err, bucket.ErrNotFound) || errors.Is(err, bucket.ErrTooLarge) {
			continue // gone since the listing, or not a record capsule wrote
		}
		if err != nil {
			return Entry{}, err
		}
		var v Verification
		if err := json.Unmarshal(data, &v); err != nil {
			continue // a damaged record does not hide the backup
		}
		if checkVerification(verifications[i], x.BackupID, &v, info.LastModified) != "" {
			continue // nor does one that is not believed make it verified
		}
		sig, err := signature(ctx, b, verifications[i], VerificationNamespace, data, sigs, t)
		if err != nil {
			return Entry{}, err
		} else if sig.State == SigUntrusted {
			continue // nor one that no trusted worker signed
		}
		v.State = StateOf(&v)
		e.Verification, e.verificationWritten, e.verificationSig = &v, info.LastModified, sig
		break
	}
	return e, nil
}
