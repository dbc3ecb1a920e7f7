package fs

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnvrg/capsule/bucket"
)

const (
	// internalDir holds the bucket's own state; no key may start with it.
	internalDir = ".capsule-fs"
	etagAttr    = "user.capsule.etag"
	// keyAttr names, on a temporary file, the key it is written for.
	keyAttr     = "user.capsule.key"
	lockStripes = 256
	// staleTemp is how long a temporary file may sit untouched before New
	// removes it as left behind by a crashed writer.
	staleTemp   = 24 * time.Hour
	defaultList = 1000
)

// ErrRetentionUnsupported is returned for a write with RetainUntil set: a
// directory cannot keep a file immutable.
var ErrRetentionUnsupported = errors.New("fs bucket cannot retain objects")

// Bucket is a directory used as a bucket. See the package doc.
type Bucket struct {
	root  string
	tmp   string
	locks string
	// mu keeps goroutines of this process queued here rather than each
	// blocking an OS thread in flock; the flock serialises processes.
	mu [lockStripes]sync.Mutex
	// beforeMove, when set by a test, runs between a write's check of its
	// condition and its link or rename, to widen the race window.
	beforeMove func()
}

var _ bucket.Bucket = (*Bucket)(nil)

// New opens the directory dir as a bucket, creating it when missing.
func New(dir string) (*Bucket, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fs bucket %s: %w", dir, err)
	}
	b := &Bucket{
		root:  root,
		tmp:   filepath.Join(root, internalDir, "tmp"),
		locks: filepath.Join(root, internalDir, "locks"),
	}
	for _, d := range []string{b.tmp, b.locks} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("fs bucket %s: %w", root, err)
		}
	}
	if err := b.probeXattr(); err != nil {
		return nil, err
	}
	b.sweepTemp()
	return b, nil
}

// Dir returns the bucket's directory.
func (b *Bucket) Dir() string { return b.root }

func (b *Bucket) String() string { return "file://" + b.root }

// probeXattr fails when the filesystem cannot hold the ETag attribute.
func (b *Bucket) probeXattr() error {
	f, err := os.CreateTemp(b.tmp, "probe-*")
	if err != nil {
		return fmt.Errorf("fs bucket %s: %w", b.root, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := unix.Fsetxattr(int(f.Fd()), etagAttr, []byte("probe"), 0); err != nil {
		return fmt.Errorf("fs bucket %s: the filesystem cannot store extended attribute %s, which holds ETags: %w", b.root, etagAttr, err)
	}
	return nil
}

// sweepTemp removes temporary files that nobody has written for a day.
func (b *Bucket) sweepTemp() {
	entries, _ := os.ReadDir(b.tmp)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTemp {
			os.Remove(filepath.Join(b.tmp, e.Name()))
		}
	}
}

// path checks key and returns its file's path.
func (b *Bucket) path(key string) (string, error) {
	if err := validKey(key); err != nil {
		return "", fmt.Errorf("fs bucket: invalid key %q: %w", key, err)
	}
	return filepath.Join(b.root, filepath.FromSlash(key)), nil
}

func validKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty")
	case strings.HasPrefix(key, "/"):
		return errors.New("starts with /")
	case strings.ContainsRune(key, 0):
		return errors.New("contains NUL")
	case key == internalDir || strings.HasPrefix(key, internalDir+"/"):
		return fmt.Errorf("%s is the bucket's internal directory", internalDir)
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return errors.New("empty path segment")
		case ".", "..":
			return fmt.Errorf("path segment %q", seg)
		}
	}
	return nil
}

// Get opens the object's file; its ETag is read from the same open file.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	p, err := b.path(key)
	if err != nil {
		return nil, bucket.ObjectInfo{}, err
	}
	f, info, err := open(p, key)
	if err != nil {
		return nil, bucket.ObjectInfo{}, fmt.Errorf("get %s: %w", key, err)
	}
	info.ServerTime = time.Now()
	return f, info, nil
}

// Head reads the object's size and ETag without reading its body.
func (b *Bucket) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	p, err := b.path(key)
	if err != nil {
		return bucket.ObjectInfo{}, err
	}
	f, info, err := open(p, key)
	if err != nil {
		return bucket.ObjectInfo{}, fmt.Errorf("head %s: %w", key, err)
	}
	f.Close()
	info.ServerTime = time.Now()
	return info, nil
}

// open opens an object's file and describes it from the open descriptor.
// A missing file, or a directory, is bucket.ErrNotFound.
func open(p, key string) (*os.File, bucket.ObjectInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		if notExist(err) {
			return nil, bucket.ObjectInfo{}, fmt.Errorf("%w: %w", bucket.ErrNotFound, err)
		}
		return nil, bucket.ObjectInfo{}, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%w: %s is not a regular file", bucket.ErrNotFound, p)
	}
	var etag string
	if err == nil {
		etag, err = fileETag(f, fi)
	}
	if err != nil {
		f.Close()
		return nil, bucket.ObjectInfo{}, err
	}
	return f, bucket.ObjectInfo{Key: key, Size: fi.Size(), ETag: etag, LastModified: fi.ModTime()}, nil
}

// fileETag reads the ETag attribute of an open file, or derives one from
// its inode for files that capsule did not write.
func fileETag(f *os.File, fi iofs.FileInfo) (string, error) {
	var buf [128]byte
	n, err := unix.Fgetxattr(int(f.Fd()), etagAttr, buf[:])
	switch {
	case err == nil:
		return string(buf[:n]), nil
	case errors.Is(err, errNoAttr):
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = uint64(st.Ino)
		}
		return fmt.Sprintf("%x-%x-%x", ino, fi.ModTime().UnixNano(), fi.Size()), nil
	default:
		return "", fmt.Errorf("read etag of %s: %w", f.Name(), err)
	}
}

func notExist(err error) bool {
	return errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// List walks the directory in key order: each directory's entries are
// sorted as their keys sort, a subdirectory "a" as "a/", so that "a-b" and
// "a.b" come before everything under "a/". Subtrees entirely before
// StartAfter or outside prefix are not read.
func (b *Bucket) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	l := lister{
		b:      b,
		ctx:    ctx,
		prefix: prefix,
		after:  opts.StartAfter,
		limit:  opts.Limit,
	}
	if l.limit <= 0 {
		l.limit = defaultList
	}
	// Start in the deepest directory that prefix names completely. A
	// prefix that no valid key can have lists nothing (and must not walk
	// outside the directory).
	dir := prefix[:strings.LastIndex(prefix, "/")+1]
	if dir != "" && validKey(strings.TrimSuffix(dir, "/")) != nil {
		return bucket.ListPage{}, nil
	}
	if _, err := l.walk(dir); err != nil {
		return bucket.ListPage{}, fmt.Errorf("list %s: %w", prefix, err)
	}
	return l.page, nil
}

type lister struct {
	b      *Bucket
	ctx    context.Context
	prefix string
	after  string
	limit  int
	page   bucket.ListPage
}

// walk lists the directory of keys starting with dir ("" or ending in "/")
// and reports whether the page is full.
func (l *lister) walk(dir string) (full bool, err error) {
	if err := l.ctx.Err(); err != nil {
		return false, err
	}
	entries, err := os.ReadDir(filepath.Join(l.b.root, filepath.FromSlash(dir)))
	if err != nil {
		if notExist(err) {
			return false, nil // removed by a Delete meanwhile
		}
		return false, err
	}
	type entry struct {
		key   string
		isDir bool
	}
	keys := make([]entry, 0, len(entries))
	for _, e := range entries {
		switch {
		case dir == "" && e.Name() == internalDir:
		case e.IsDir():
			keys = append(keys, entry{dir + e.Name() + "/", true})
		case e.Type().IsRegular():
			keys = append(keys, entry{dir + e.Name(), false})
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].key < keys[j].key })
	for _, e := range keys {
		if e.isDir {
			related := strings.HasPrefix(e.key, l.prefix) || strings.HasPrefix(l.prefix, e.key)
			// Every key below e.key is before after when e.key is and
			// after does not itself lie below e.key.
			before := e.key <= l.after && !strings.HasPrefix(l.after, e.key)
			if !related || before {
				continue
			}
			if full, err := l.walk(e.key); full || err != nil {
				return full, err
			}
			continue
		}
		if !strings.HasPrefix(e.key, l.prefix) || e.key <= l.after {
			continue
		}
		if len(l.page.Objects) == l.limit {
			l.page.Truncated = true
			return true, nil
		}
		f, info, err := open(filepath.Join(l.b.root, filepath.FromSlash(e.key)), e.key)
		if err != nil {
			if errors.Is(err, bucket.ErrNotFound) {
				continue // deleted since ReadDir
			}
			return false, err
		}
		f.Close()
		l.page.Objects = append(l.page.Objects, info)
	}
	return false, nil
}

// Put writes body to a temporary file and publishes it under key.
func (b *Bucket) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	p, err := b.path(key)
	if err != nil {
		return bucket.ObjectInfo{}, err
	}
	if err := checkOptions(opts); err != nil {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	if size < 0 {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: negative size %d (use Upload for data of unknown size)", key, size)
	}
	t, err := b.newTemp(key)
	if err != nil {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	if n, err := io.CopyN(t.w, body, size); err != nil {
		t.discard()
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("body ended after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
		}
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	info, err := b.publish(ctx, t, key, p, opts)
	if err != nil {
		return info, fmt.Errorf("put %s: %w", key, err)
	}
	return info, nil
}

func checkOptions(opts bucket.PutOptions) error {
	if !opts.RetainUntil.IsZero() {
		return ErrRetentionUnsupported
	}
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return errors.New("IfNoneMatch and IfMatch are exclusive")
	}
	return nil
}

// temp is a temporary file being written.
type temp struct {
	f *os.File
	w *bufio.Writer
}

// newTemp creates a temporary file for key's next version, labelled with
// the key so that ListUploads can name it.
func (b *Bucket) newTemp(key string) (*temp, error) {
	f, err := os.CreateTemp(b.tmp, tempPattern)
	if err != nil {
		return nil, err
	}
	if err := unix.Fsetxattr(int(f.Fd()), keyAttr, []byte(key), 0); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("label temporary file: %w", err)
	}
	return &temp{f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

// discard closes and removes the temporary file.
func (t *temp) discard() {
	t.f.Close()
	os.Remove(t.f.Name())
}

// seal flushes, stamps a new ETag, syncs and closes the file.
func (t *temp) seal() (bucket.ObjectInfo, error) {
	if err := t.w.Flush(); err != nil {
		return bucket.ObjectInfo{}, err
	}
	etag := newETag()
	if err := unix.Fsetxattr(int(t.f.Fd()), etagAttr, []byte(etag), 0); err != nil {
		return bucket.ObjectInfo{}, fmt.Errorf("set etag: %w", err)
	}
	if err := t.f.Sync(); err != nil {
		return bucket.ObjectInfo{}, err
	}
	fi, err := t.f.Stat()
	if err != nil {
		return bucket.ObjectInfo{}, err
	}
	if err := t.f.Close(); err != nil {
		return bucket.ObjectInfo{}, err
	}
	return bucket.ObjectInfo{Size: fi.Size(), ETag: etag, LastModified: fi.ModTime()}, nil
}

func newETag() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// publish seals t and moves it to path p under key's lock, honouring the
// conditions of opts. t is gone afterwards, whatever the outcome.
func (b *Bucket) publish(ctx context.Context, t *temp, key, p string, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	info, err := t.seal()
	if err != nil {
		t.discard()
		return bucket.ObjectInfo{}, err
	}
	defer os.Remove(t.f.Name()) // still there after a link or a failure
	unlock, err := b.lock(ctx, key)
	if err != nil {
		return bucket.ObjectInfo{}, err
	}
	err = b.place(t.f.Name(), key, p, opts)
	unlock()
	if err != nil {
		return bucket.ObjectInfo{}, err
	}
	// Make the new directory entry durable. Outside the lock: it only
	// delays this writer's answer, not the next writer.
	if err := syncDir(filepath.Dir(p)); err != nil {
		return bucket.ObjectInfo{}, err
	}
	info.Key = key
	info.ServerTime = time.Now()
	return info, nil
}

// place moves the sealed temporary file tmp to p; the caller holds key's lock.
func (b *Bucket) place(tmp, key, p string, opts bucket.PutOptions) error {
	if opts.IfMatch != "" {
		want := strings.Trim(opts.IfMatch, `"`)
		f, cur, err := open(p, key)
		if err != nil {
			if errors.Is(err, bucket.ErrNotFound) {
				return fmt.Errorf("%w: if-match %s: %w", bucket.ErrPreconditionFailed, want, err)
			}
			return err
		}
		f.Close()
		if cur.ETag != want {
			return fmt.Errorf("%w: etag is %s, not %s", bucket.ErrPreconditionFailed, cur.ETag, want)
		}
	}
	if b.beforeMove != nil {
		b.beforeMove()
	}
	move := os.Rename
	if opts.IfNoneMatch {
		move = os.Link
	}
	err := b.withParents(p, func() error { return move(tmp, p) })
	if opts.IfNoneMatch && errors.Is(err, iofs.ErrExist) {
		if fi, serr := os.Lstat(p); serr == nil && fi.Mode().IsRegular() {
			return fmt.Errorf("%w: key exists", bucket.ErrPreconditionFailed)
		}
	}
	return err
}

// withParents runs op, which creates p, creating p's parent directories
// when op finds them missing. A concurrent Delete may remove a parent that
// just became empty between the two steps, hence the loop.
func (b *Bucket) withParents(p string, op func() error) error {
	for i := 0; ; i++ {
		err := op()
		if !errors.Is(err, iofs.ErrNotExist) || i == 10 {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lock takes the exclusive lock of key's stripe: first among this process's
// goroutines, then across processes with flock(2).
func (b *Bucket) lock(ctx context.Context, key string) (unlock func(), err error) {
	h := fnv.New32a()
	h.Write([]byte(key))
	stripe := h.Sum32() % lockStripes
	mu := &b.mu[stripe]
	mu.Lock()
	f, err := os.OpenFile(filepath.Join(b.locks, fmt.Sprintf("%02x", stripe)), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		mu.Unlock()
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		mu.Unlock()
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}
	return func() {
		f.Close() // releases the flock
		mu.Unlock()
	}, nil
}

// Delete removes key's file and then the directories it leaves empty.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	p, err := b.path(key)
	if err != nil {
		return err
	}
	unlock, err := b.lock(ctx, key)
	if err != nil {
		return err
	}
	// unlink(2), not os.Remove: a directory with the key's name is no
	// object, and must not be removed.
	err = syscall.Unlink(p)
	unlock()
	switch {
	case err == nil:
	case notExist(err), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.EPERM) && isDir(p):
		return nil
	default:
		return fmt.Errorf("delete %s: %w", key, err)
	}
	for dir := filepath.Dir(p); dir != b.root && strings.HasPrefix(dir, b.root); dir = filepath.Dir(dir) {
		if syscall.Rmdir(dir) != nil {
			break // not empty, or gone
		}
	}
	return nil
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// Upload streams into a temporary file; Commit publishes it.
func (b *Bucket) Upload(ctx context.Context, key string, opts bucket.PutOptions) (bucket.Upload, error) {
	p, err := b.path(key)
	if err != nil {
		return nil, err
	}
	opts = bucket.PutOptions{IfNoneMatch: opts.IfNoneMatch, ContentType: opts.ContentType, RetainUntil: opts.RetainUntil}
	if err := checkOptions(opts); err != nil {
		return nil, fmt.Errorf("upload %s: %w", key, err)
	}
	t, err := b.newTemp(key)
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", key, err)
	}
	return &upload{b: b, ctx: ctx, key: key, path: p, opts: opts, t: t}, nil
}

type upload struct {
	b    *Bucket
	ctx  context.Context
	key  string
	path string
	opts bucket.PutOptions
	t    *temp
	done bool
}

func (u *upload) Write(p []byte) (int, error) {
	if u.done {
		return 0, fmt.Errorf("upload %s: write after commit or abort", u.key)
	}
	if err := u.ctx.Err(); err != nil {
		return 0, fmt.Errorf("upload %s: %w", u.key, err)
	}
	return u.t.w.Write(p)
}

func (u *upload) Commit() (bucket.ObjectInfo, error) {
	if u.done {
		return bucket.ObjectInfo{}, fmt.Errorf("upload %s: commit after commit or abort", u.key)
	}
	u.done = true
	if err := u.ctx.Err(); err != nil {
		u.t.discard()
		return bucket.ObjectInfo{}, fmt.Errorf("commit %s: %w", u.key, err)
	}
	info, err := u.b.publish(u.ctx, u.t, u.key, u.path, u.opts)
	if err != nil {
		return info, fmt.Errorf("commit %s: %w", u.key, err)
	}
	return info, nil
}

func (u *upload) Abort() error {
	if !u.done {
		u.done = true
		u.t.discard()
	}
	return nil
}
