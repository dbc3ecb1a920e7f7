package files

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// archiveError is a fault of the archive (a corrupt or hostile stream), as
// opposed to a fault of the local filesystem or a cancellation.
type archiveError struct{ err error }

func (e *archiveError) Error() string { return e.err.Error() }
func (e *archiveError) Unwrap() error { return e.err }

func badArchive(format string, args ...any) error {
	return &archiveError{fmt.Errorf(format, args...)}
}

// meta is what is applied to an entry once its content is in place.
type meta struct {
	rel     string
	mode    fs.FileMode
	uid     int
	gid     int
	modTime time.Time
}

// extractor unpacks one tree.tar into a fresh directory that only it
// writes to. It never resolves a name through the filesystem: every
// entry's parent must be a directory the extractor itself created, so an
// extracted symlink can never redirect a later write.
type extractor struct {
	root     string // absolute, exists, empty when we start
	chown    bool   // restoreOwnership: set owners from the archive
	log      logrus.FieldLogger
	progress engines.Progress
	total    int64 // expected entries, 0 when unknown

	dirs     map[string]bool // relative dirs created by us ("." is root)
	explicit map[string]bool // dirs that had their own entry
	late     []meta          // directories, applied after their children
	rootMeta *meta
	n        counts
	special  int64 // entries whose setuid, setgid or sticky bit was dropped
	reported time.Time
}

func newExtractor(root string, chown bool, log logrus.FieldLogger, progress engines.Progress, total int64) *extractor {
	return &extractor{
		root: root, chown: chown, log: log, progress: progress, total: total,
		dirs: map[string]bool{".": true}, explicit: map[string]bool{},
	}
}

// extractArtifact opens the backup's tree.tar and extracts it into root.
// It returns only after the artifact was read to its very end, so a nil
// error means its checksum was verified.
func extractArtifact(ctx context.Context, job *engines.RestoreJob, root string, chown bool, log logrus.FieldLogger) (counts, error) {
	if job.Backup.Format != Format {
		return counts{}, fmt.Errorf("files: backup format %q, this engine reads %q", job.Backup.Format, Format)
	}
	if !slices.Contains(job.Artifacts.Names(), ArtifactName) {
		return counts{}, fmt.Errorf("files: backup has no artifact %s (has %v)", ArtifactName, job.Artifacts.Names())
	}
	rc, err := job.Artifacts.Open(ctx, ArtifactName)
	if err != nil {
		return counts{}, fmt.Errorf("files: open %s: %w", ArtifactName, err)
	}
	defer rc.Close()
	var total int64
	if d, ok := recorded(job.Backup.Details); ok {
		total = d.entries()
	}
	x := newExtractor(root, chown, log, job.Progress, total)
	err = x.extract(ctx, rc)
	return x.n, err
}

func (x *extractor) extract(ctx context.Context, r io.Reader) error {
	if err := x.unpack(ctx, r); err != nil {
		// A corrupt stream shows up as anything from a bad header to a
		// hostile-looking name; the checksum at its end tells which.
		var ae *archiveError
		if ctx.Err() == nil && errors.As(err, &ae) {
			if _, derr := io.Copy(io.Discard, r); derr != nil {
				var ce *engines.ChecksumError
				if errors.As(derr, &ce) {
					return fmt.Errorf("files: %w", derr)
				}
			}
		}
		return err
	}
	// The tar reader stops at the end-of-archive marker; read on to the
	// stream's end, where a corrupt artifact reports itself.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("files: read %s: %w", ArtifactName, err)
	}
	return x.finish()
}

func (x *extractor) unpack(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return x.readErr(ctx, err)
		}
		rel, err := entryName(h.Name)
		if err != nil {
			return err
		}
		if err := x.entry(ctx, tr, h, rel); err != nil {
			return err
		}
		if now := time.Now(); now.Sub(x.reported) >= progressEvery {
			x.reported = now
			x.progress.Report("extract", x.n.entries(), x.total)
		}
	}
}

// readErr classifies an error from the tar reader: the stream's own
// (checksum, cancellation) as is, anything else as a bad archive.
func (x *extractor) readErr(ctx context.Context, err error) error {
	var ce *engines.ChecksumError
	if errors.As(err, &ce) {
		return fmt.Errorf("files: %w", err)
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return badArchive("files: read %s: %w", ArtifactName, err)
}

// entryName turns an archive name into a clean relative slash path, or
// refuses it when it could land outside the root.
func entryName(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return "", badArchive("files: refusing archive entry %q: not a relative path", name)
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
		case "..":
			return "", badArchive("files: refusing archive entry %q: it leaves the directory", name)
		default:
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return ".", nil
	}
	return strings.Join(parts, "/"), nil
}

func (x *extractor) full(rel string) string {
	return filepath.Join(x.root, filepath.FromSlash(rel))
}

func (x *extractor) entry(ctx context.Context, tr *tar.Reader, h *tar.Header, rel string) error {
	// A GNU sparse entry (PAX records GNU.sparse.*, which the tar reader
	// expands) can make a few bytes of archive write terabytes of zeros.
	// This engine never writes one.
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return badArchive("files: refusing archive entry %q: a sparse file (this engine never writes one)", h.Name)
		}
	}
	m := meta{rel: rel, mode: h.FileInfo().Mode(), uid: h.Uid, gid: h.Gid, modTime: h.ModTime}
	if rel == "." {
		if h.Typeflag != tar.TypeDir || x.rootMeta != nil {
			return badArchive("files: refusing archive entry %q: the root must be one directory", h.Name)
		}
		x.rootMeta = &m
		return nil
	}
	if err := x.parent(h.Name, rel); err != nil {
		return err
	}
	p := x.full(rel)
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil {
			if !errors.Is(err, fs.ErrExist) || !x.dirs[rel] || x.explicit[rel] {
				return x.exists(h.Name, err)
			}
		}
		x.dirs[rel] = true
		x.explicit[rel] = true
		x.late = append(x.late, m)
		x.n.Dirs++
	case tar.TypeReg:
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return x.exists(h.Name, err)
		}
		n, err := io.Copy(f, ctxReader{ctx, tr})
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				return fmt.Errorf("files: write %s: %w", rel, err)
			}
			return x.readErr(ctx, err)
		}
		if err := x.apply(m, false); err != nil {
			return err
		}
		x.n.Files++
		x.n.Bytes += n
	case tar.TypeSymlink:
		if h.Linkname == "" || strings.ContainsRune(h.Linkname, 0) {
			return badArchive("files: refusing archive entry %q: bad symlink target", h.Name)
		}
		if err := os.Symlink(h.Linkname, p); err != nil {
			return x.exists(h.Name, err)
		}
		if err := x.apply(m, true); err != nil {
			return err
		}
		x.n.Symlinks++
	default:
		return badArchive("files: refusing archive entry %q: unsupported type %q", h.Name, h.Typeflag)
	}
	return nil
}

func (x *extractor) exists(name string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return badArchive("files: refusing archive entry %q: it appears twice", name)
	}
	return fmt.Errorf("files: extract %s: %w", name, err)
}

// parent makes sure rel's parent is a directory this extractor created,
// creating missing ones, and refuses anything else (a symlink above all).
func (x *extractor) parent(name, rel string) error {
	dir := path.Dir(rel)
	if x.dirs[dir] {
		return nil
	}
	if err := x.parent(name, dir); err != nil {
		return err
	}
	if err := os.Mkdir(x.full(dir), 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return badArchive("files: refusing archive entry %q: %s is not a directory", name, dir)
		}
		return fmt.Errorf("files: extract %s: %w", name, err)
	}
	x.dirs[dir] = true
	return nil
}

// apply sets an entry's permission bits and mtime, and its owner when
// restoreOwnership asks for it. The setuid, setgid and sticky bits are
// never set: a restore must not plant a program that runs as someone else.
func (x *extractor) apply(m meta, symlink bool) error {
	p := x.full(m.rel)
	if x.chown {
		if err := os.Lchown(p, m.uid, m.gid); err != nil {
			return fmt.Errorf("files: chown %s (restoreOwnership): %w", m.rel, err)
		}
	}
	if !symlink {
		if m.mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			x.special++
			x.log.WithFields(logrus.Fields{"file": m.rel, "mode": m.mode.String()}).
				Debug("files: setuid, setgid and sticky bits dropped")
		}
		if err := os.Chmod(p, m.mode&fs.ModePerm); err != nil {
			return fmt.Errorf("files: chmod %s: %w", m.rel, err)
		}
	}
	if err := lutimes(p, m.modTime); err != nil {
		return fmt.Errorf("files: set mtime of %s: %w", m.rel, err)
	}
	return nil
}

// finish applies the directories' modes and mtimes, children before
// parents, the root last.
func (x *extractor) finish() error {
	slices.SortStableFunc(x.late, func(a, b meta) int {
		return strings.Count(b.rel, "/") - strings.Count(a.rel, "/")
	})
	for _, m := range x.late {
		if err := x.apply(m, false); err != nil {
			return err
		}
	}
	if x.rootMeta != nil {
		if err := x.apply(*x.rootMeta, false); err != nil {
			return err
		}
	} else if err := os.Chmod(x.root, 0o755); err != nil {
		return fmt.Errorf("files: chmod %s: %w", x.root, err)
	}
	if x.special > 0 {
		x.log.WithField("entries", x.special).Warn("files: setuid, setgid and sticky bits dropped (a restore never sets them)")
	}
	x.progress.Report("extract", x.n.entries(), x.total)
	return nil
}

// lutimes sets a path's atime and mtime to t without following a symlink.
func lutimes(p string, t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// recorded reads the counts a backup put in BackupInfo.Details (numbers
// come back from JSON as float64).
func recorded(d map[string]any) (counts, bool) {
	var c counts
	for key, dst := range map[string]*int64{"files": &c.Files, "dirs": &c.Dirs, "symlinks": &c.Symlinks, "bytes": &c.Bytes} {
		v, ok := toInt(d[key])
		if !ok {
			return counts{}, false
		}
		*dst = v
	}
	return c, true
}

func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case float64:
		return int64(n), n == float64(int64(n))
	case int64:
		return n, true
	case int:
		return int64(n), true
	}
	return 0, false
}
