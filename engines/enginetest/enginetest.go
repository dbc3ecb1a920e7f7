// Package enginetest is the round-trip suite every engine passes against a
// real service (or a stand-in named as such where none can run):
//
//   - round trip: seed, back up, damage the service, restore, and compare
//     a canonical snapshot with the one taken before the backup;
//   - corrupt artifact: one flipped byte makes the restore fail naming the
//     artifact, and the target is exactly as it was before;
//   - canceled restore: a restore canceled midway leaves the target as it
//     was;
//   - fencing by attempt: an attempt that stalls in staging and wakes
//     after another worker took its request over (its Fence fails) does
//     not swap, whether its successor has finished or is still staging,
//     and the successor succeeds; an attempt that follows one that
//     swapped and died before its result restores again and keeps what
//     the first kept as previous; nothing staged remains (services that
//     implement StagingLister and PreviousSnapshotter are checked for
//     it);
//   - verification, for engines that implement engines.Verifier: a good
//     backup verifies, and a corrupt one fails without touching the target;
//   - encrypted: the round trip, the corrupt artifact and the verification
//     again with every artifact stored encrypted with age (package crypt),
//     as the executor stores it for a source with recipients, and a
//     restore and a verification with the wrong identity fail without
//     touching the target. With CAPSULE_ENGINETEST_ENCRYPT=1 (or
//     Options.Encrypt) every case of the suite runs encrypted.
//
// Artifacts are kept in memory with their sha256, as the executor records
// them, and handed back through the same checksum-verifying reader, so the
// engine sees exactly what it sees in production minus compression and the
// bucket.
package enginetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
)

// Service is a real (or stand-in) service prepared for the suite. Each
// method gets the test so it can fail it.
type Service interface {
	// Source is the source to back up and to restore into. It must point at
	// data that belongs to this test only (a fresh database, directory,
	// key prefix or database number).
	Source(t *testing.T) engines.Source
	// Seed fills the source with the test's data set.
	Seed(ctx context.Context, t *testing.T)
	// Snapshot returns a canonical, comparable picture of the source's
	// data (e.g. every row, key and setting, sorted). Two snapshots are
	// equal exactly when a restore is faithful.
	Snapshot(ctx context.Context, t *testing.T) any
	// Damage changes the source the way a disaster would (drop a table,
	// delete files, flush keys, change values) so that a restore has
	// something to undo.
	Damage(ctx context.Context, t *testing.T)
}

// Options tune the suite for one engine.
type Options struct {
	// Restore options for every restore the suite runs.
	Restore engines.RestoreOptions
	// Timeout for each case (default 5 minutes).
	Timeout time.Duration
	// Compare replaces reflect.DeepEqual for snapshots; it returns a
	// description of the first difference, or "" when equal.
	Compare func(want, got any) string
	// SkipCancel skips the canceled-restore case (say why in the test).
	SkipCancel string
	// Encrypt stores every artifact of every case encrypted with age
	// (CAPSULE_ENGINETEST_ENCRYPT=1 sets it too); the Encrypted cases run
	// encrypted whatever it says.
	Encrypt bool
	// StagingOpen is which Open of the backup's last artifact reads it
	// into staging (default 1; 2 for engines that verify every artifact
	// before they stage): the fencing cases stall an attempt halfway
	// through it.
	StagingOpen int
}

func (o Options) pauseOpen() int {
	if o.StagingOpen < 1 {
		return 1
	}
	return o.StagingOpen
}

// Run runs the suite.
func Run(t *testing.T, eng engines.Engine, svc Service, opts Options) {
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.Compare == nil {
		opts.Compare = DeepCompare
	}
	if os.Getenv("CAPSULE_ENGINETEST_ENCRYPT") == "1" {
		opts.Encrypt = true
	}
	ctx := context.Background()

	t.Run("Validate", func(t *testing.T) {
		if err := eng.Validate(svc.Source(t)); err != nil {
			t.Fatalf("Validate(source) = %v, want nil", err)
		}
		bad := svc.Source(t)
		bad.Config = cloneConfig(bad.Config)
		bad.Config["noSuchSetting"] = true
		if err := eng.Validate(bad); err == nil {
			t.Errorf("Validate accepted an unknown setting noSuchSetting")
		}
	})

	t.Run("RoundTrip", func(t *testing.T) { roundTrip(ctx, t, eng, svc, opts) })

	t.Run("CorruptArtifactLeavesTargetUntouched", func(t *testing.T) { corruptArtifact(ctx, t, eng, svc, opts) })

	t.Run("CanceledRestoreLeavesTargetUntouched", func(t *testing.T) {
		if opts.SkipCancel != "" {
			t.Skip(opts.SkipCancel)
		}
		ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
		svc.Seed(ctx, t)
		store, info := opts.backup(ctx, t, eng, svc.Source(t))
		svc.Damage(ctx, t)
		before := svc.Snapshot(ctx, t)
		// Cancel once the engine has read half of the last artifact: late
		// enough that a careless engine has changed the target already.
		rctx, rcancel := context.WithCancel(ctx)
		defer rcancel()
		names := store.Names()
		store.cancelAt = names[len(names)-1]
		store.cancel = rcancel
		_, err := eng.Restore(rctx, store.RestoreJob(t, "cancel", svc.Source(t), info, opts.Restore))
		if err == nil {
			t.Fatalf("Restore canceled midway returned no error")
		}
		if diff := opts.Compare(before, svc.Snapshot(ctx, t)); diff != "" {
			t.Fatalf("a canceled restore changed the target: %s", diff)
		}
	})

	runFencing(t, eng, svc, opts)

	if v, ok := eng.(engines.Verifier); ok {
		t.Run("Verify", func(t *testing.T) { verifyCase(ctx, t, v, svc, opts) })
	}

	t.Run("Encrypted", func(t *testing.T) { runEncrypted(ctx, t, eng, svc, opts) })
}

// roundTrip: seed, back up, damage, restore, compare.
func roundTrip(ctx context.Context, t *testing.T, eng engines.Engine, svc Service, opts Options) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	svc.Seed(ctx, t)
	want := svc.Snapshot(ctx, t)
	store, info := opts.backup(ctx, t, eng, svc.Source(t))
	if info.Format == "" {
		t.Errorf("BackupInfo.Format is empty")
	}
	svc.Damage(ctx, t)
	if diff := opts.Compare(want, svc.Snapshot(ctx, t)); diff == "" {
		t.Fatalf("Damage did not change the snapshot: the round trip would prove nothing")
	}
	rinfo, err := eng.Restore(ctx, store.RestoreJob(t, "rt", svc.Source(t), info, opts.Restore))
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if rinfo == nil {
		t.Fatalf("Restore returned nil info")
	}
	if diff := opts.Compare(want, svc.Snapshot(ctx, t)); diff != "" {
		t.Fatalf("restored data differs from the backed-up data: %s", diff)
	}
}

// corruptArtifact: each artifact flipped in turn fails the restore with
// a *engines.ChecksumError naming it, and the target is untouched.
func corruptArtifact(ctx context.Context, t *testing.T, eng engines.Engine, svc Service, opts Options) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	svc.Seed(ctx, t)
	store, info := opts.backup(ctx, t, eng, svc.Source(t))
	svc.Damage(ctx, t)
	before := svc.Snapshot(ctx, t)
	for _, name := range store.Names() {
		corrupt := store.Clone()
		corrupt.Flip(t, name)
		_, err := eng.Restore(ctx, corrupt.RestoreJob(t, "bad", svc.Source(t), info, opts.Restore))
		var ce *engines.ChecksumError
		if !errors.As(err, &ce) {
			t.Fatalf("Restore with artifact %s corrupted: err = %v, want a *engines.ChecksumError", name, err)
		}
		if ce.Artifact != name {
			t.Errorf("ChecksumError names artifact %q, want %q", ce.Artifact, name)
		}
		if diff := opts.Compare(before, svc.Snapshot(ctx, t)); diff != "" {
			t.Fatalf("a restore of a corrupt artifact %s changed the target: %s", name, diff)
		}
	}
}

// verifyCase: a good backup verifies, a corrupt one does not, and
// neither touches the source.
func verifyCase(ctx context.Context, t *testing.T, v engines.Verifier, svc Service, opts Options) {
	eng := v.(engines.Engine)
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	svc.Seed(ctx, t)
	store, info := opts.backup(ctx, t, eng, svc.Source(t))
	before := svc.Snapshot(ctx, t)
	rep, err := v.Verify(ctx, store.RestoreJob(t, "verify", svc.Source(t), info, opts.Restore))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !rep.OK || len(rep.Checks) == 0 {
		t.Fatalf("Verify of a good backup: ok=%v checks=%+v", rep.OK, rep.Checks)
	}
	corrupt := store.Clone()
	corrupt.Flip(t, store.Names()[0])
	rep, err = v.Verify(ctx, corrupt.RestoreJob(t, "verifybad", svc.Source(t), info, opts.Restore))
	if err == nil && rep != nil && rep.OK {
		t.Fatalf("Verify of a corrupt backup reported ok")
	}
	if diff := opts.Compare(before, svc.Snapshot(ctx, t)); diff != "" {
		t.Fatalf("Verify changed the source: %s", diff)
	}
}

// Backup runs eng.Backup of src into a new in-memory store and fails the
// test on error.
func Backup(ctx context.Context, t testing.TB, eng engines.Engine, src engines.Source) (*Store, engines.BackupInfo) {
	t.Helper()
	return backupInto(ctx, t, eng, src, NewStore())
}

// backup backs up into a new store, sealed when o.Encrypt.
func (o Options) backup(ctx context.Context, t testing.TB, eng engines.Engine, src engines.Source) (*Store, engines.BackupInfo) {
	t.Helper()
	if o.Encrypt {
		return backupInto(ctx, t, eng, src, NewSealedStore(t))
	}
	return Backup(ctx, t, eng, src)
}

// backupInto runs eng.Backup of src into store.
func backupInto(ctx context.Context, t testing.TB, eng engines.Engine, src engines.Source, store *Store) (*Store, engines.BackupInfo) {
	t.Helper()
	info, err := eng.Backup(ctx, &engines.BackupJob{
		ID:        fmt.Sprintf("bk%d", time.Now().UnixNano()),
		Source:    src,
		Artifacts: store,
		Log:       TestLog(t),
	})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if info == nil {
		t.Fatalf("Backup returned nil info")
	}
	if len(store.Names()) == 0 {
		t.Fatalf("Backup wrote no artifact")
	}
	if err := store.openErr(); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	return store, *info
}

// Store keeps artifacts in memory with their sha256. It is an
// engines.ArtifactWriter for Backup and gives an engines.ArtifactReader
// for Restore.
type Store struct {
	mu       sync.Mutex
	names    []string
	data     map[string][]byte
	sums     map[string]string
	open     *memWriter
	cancelAt string
	cancel   context.CancelFunc
	gate     *gate
	// seal, when set, encrypts each artifact as it is closed: the stored
	// bytes and their sha256 are the encrypted ones; ids open them.
	seal *crypt.Recipients
	ids  *crypt.Identities
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{data: map[string][]byte{}, sums: map[string]string{}}
}

// Create implements engines.ArtifactWriter.
func (s *Store) Create(name string) (io.WriteCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open != nil {
		return nil, fmt.Errorf("artifact %s created while %s is still open", name, s.open.name)
	}
	if _, dup := s.data[name]; dup {
		return nil, fmt.Errorf("artifact %s created twice", name)
	}
	if !validArtifactName(name) {
		return nil, fmt.Errorf("bad artifact name %q", name)
	}
	s.names = append(s.names, name)
	s.data[name] = nil
	s.open = &memWriter{s: s, name: name}
	return s.open, nil
}

func (s *Store) openErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open != nil {
		return fmt.Errorf("artifact %s was never closed", s.open.name)
	}
	return nil
}

// Names lists the artifacts in the order they were created.
func (s *Store) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.names...)
}

// Bytes returns an artifact's bytes.
func (s *Store) Bytes(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data[name]
}

// Clone returns an independent copy.
func (s *Store) Clone() *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := NewStore()
	c.seal, c.ids = s.seal, s.ids
	c.names = append(c.names, s.names...)
	for k, v := range s.data {
		c.data[k] = append([]byte(nil), v...)
		c.sums[k] = s.sums[k]
	}
	return c
}

// Flip flips one byte in the middle of an artifact, keeping the recorded
// checksum, as a disk or a network would.
func (s *Store) Flip(t testing.TB, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.data[name]
	if len(d) == 0 {
		t.Fatalf("cannot corrupt empty artifact %s", name)
	}
	d[len(d)/2] ^= 0x20
}

// RestoreJob builds a job that restores this store's artifacts into target.
func (s *Store) RestoreJob(t testing.TB, id string, target engines.Source, info engines.BackupInfo, opts engines.RestoreOptions) *engines.RestoreJob {
	// Round-trip the info through JSON, as it goes through backupIndex.json.
	raw, err := json.Marshal(info)
	if err != nil {
		t.Fatalf("marshal BackupInfo: %v", err)
	}
	var back engines.BackupInfo
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatalf("unmarshal BackupInfo: %v", err)
	}
	return &engines.RestoreJob{
		ID:        fmt.Sprintf("%s%d", id, time.Now().UnixNano()%1e9),
		Target:    target,
		Backup:    back,
		Artifacts: s,
		Options:   opts,
		Log:       TestLog(t),
	}
}

// Open implements engines.ArtifactReader.
func (s *Store) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	s.mu.Lock()
	data, ok := s.data[name]
	sum := s.sums[name]
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("no artifact %s", name)
	}
	var r io.Reader = s.gate.wrap(ctx, name, bytes.NewReader(data), len(data))
	s.mu.Unlock()
	if s.cancelAt == name && s.cancel != nil {
		r = &cancelingReader{r: r, at: len(data) / 2, cancel: s.cancel}
	}
	verified := engines.NewVerifyingReader(r, name, sum, int64(len(data)))
	if s.seal == nil {
		return io.NopCloser(&ctxReader{ctx: ctx, r: verified}), nil
	}
	plain, err := s.ids.Decrypt(verified)
	if err != nil {
		return nil, checksumOr(verified, fmt.Errorf("decrypt artifact %s: %w", name, err))
	}
	return io.NopCloser(&ctxReader{ctx: ctx, r: &openedReader{r: plain, stored: verified, name: name}}), nil
}

// Verify implements engines.ArtifactReader.
func (s *Store) Verify(ctx context.Context, name string) error {
	rc, err := s.Open(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

type memWriter struct {
	s      *Store
	name   string
	buf    bytes.Buffer
	closed bool
}

func (w *memWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, fmt.Errorf("write to closed artifact %s", w.name)
	}
	return w.buf.Write(p)
}

func (w *memWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	data := w.buf.Bytes()
	if w.s.seal != nil {
		var sealed bytes.Buffer
		enc, err := w.s.seal.Encrypt(&sealed)
		if err == nil {
			_, err = enc.Write(data)
		}
		if err == nil {
			err = enc.Close()
		}
		if err != nil {
			w.s.open = nil
			return fmt.Errorf("encrypt artifact %s: %w", w.name, err)
		}
		data = sealed.Bytes()
	}
	sum := sha256.Sum256(data)
	w.s.data[w.name] = data
	w.s.sums[w.name] = hex.EncodeToString(sum[:])
	w.s.open = nil
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type cancelingReader struct {
	r      io.Reader
	at     int
	n      int
	cancel context.CancelFunc
}

func (c *cancelingReader) Read(p []byte) (int, error) {
	if c.n >= c.at {
		c.cancel()
	}
	if len(p) > 4096 {
		p = p[:4096]
	}
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func validArtifactName(name string) bool {
	if name == "" || len(name) > 200 {
		return false
	}
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// DeepCompare compares snapshots with reflect.DeepEqual and describes the
// difference by their JSON forms.
func DeepCompare(want, got any) string {
	if reflect.DeepEqual(want, got) {
		return ""
	}
	w, _ := json.Marshal(want)
	g, _ := json.Marshal(got)
	return fmt.Sprintf("want %s, got %s", clip(w), clip(g))
}

func clip(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "…"
	}
	return string(b)
}

func cloneConfig(m map[string]any) map[string]any {
	c := make(map[string]any, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// TestLog returns a logger that writes to t.Log.
func TestLog(t testing.TB) logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(testWriter{t})
	l.SetLevel(logrus.DebugLevel)
	return l
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
