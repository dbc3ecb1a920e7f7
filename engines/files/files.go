package files

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
)

const (
	// Format is the BackupInfo.Format of the archives this engine writes.
	Format = "tar/v1"
	// ArtifactName is the one artifact of a backup.
	ArtifactName = "tree.tar"
	// rootName is the archive name of the backed-up directory itself;
	// every other entry is "./" + its slash-separated relative path, with
	// a trailing "/" for directories, as `tar -C dir .` writes them.
	rootName = "./"
	// progressEvery throttles progress reports.
	progressEvery = 250 * time.Millisecond
)

// Engine is the files engine. The zero value is not ready: use New.
type Engine struct {
	// inPlace forces the in-place swap that mount points need (tests).
	inPlace bool
	// beforeCopy, when set, runs after a file is opened and its size
	// taken, before its bytes are copied (tests).
	beforeCopy func(path string)
}

var _ engines.Engine = (*Engine)(nil)
var _ engines.Verifier = (*Engine)(nil)

// New returns the files engine.
func New() *Engine { return &Engine{} }

// Name implements engines.Engine.
func (e *Engine) Name() string { return "files" }

// config is a source's settings.
type config struct {
	Path    string   `json:"path"`
	Exclude []string `json:"exclude,omitempty"`
	// RestoreOwnership sets each restored entry's numeric owner and group
	// from the archive. Off by default: a restore makes everything owned
	// by the worker, so a forged archive cannot hand files to another
	// user.
	RestoreOwnership bool `json:"restoreOwnership,omitempty"`
	// Resolved by the worker; accepted and ignored.
	PasswordEnv  string `json:"passwordEnv,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
}

func decodeConfig(src engines.Source) (*config, error) {
	var cfg config
	if err := src.Decode(&cfg); err != nil {
		return nil, err
	}
	switch {
	case cfg.Path == "":
		return nil, fmt.Errorf("source %s (engine files): path is required", src.Name)
	case !filepath.IsAbs(cfg.Path):
		return nil, fmt.Errorf("source %s (engine files): path %q must be absolute", src.Name, cfg.Path)
	}
	cfg.Path = filepath.Clean(cfg.Path)
	if cfg.Path == "/" {
		return nil, fmt.Errorf("source %s (engine files): path must not be the root directory", src.Name)
	}
	for i, p := range cfg.Exclude {
		if p == "" || strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("source %s (engine files): exclude[%d] %q must be a non-empty pattern relative to path", src.Name, i, p)
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("source %s (engine files): exclude[%d] %q: %v", src.Name, i, p, err)
		}
	}
	return &cfg, nil
}

// Validate implements engines.Engine.
func (e *Engine) Validate(src engines.Source) error {
	_, err := decodeConfig(src)
	return err
}

// excluded reports whether the slash-separated relative path rel matches
// one of the patterns.
func (c *config) excluded(rel string) bool {
	base := path.Base(rel)
	for _, p := range c.Exclude {
		if ok, _ := path.Match(p, rel); ok {
			return true
		}
		if !strings.Contains(p, "/") {
			if ok, _ := path.Match(p, base); ok {
				return true
			}
		}
	}
	return false
}

// counts are what a backup recorded in BackupInfo.Details and what an
// extraction found.
type counts struct {
	Files, Dirs, Symlinks, Bytes int64
}

func (c counts) entries() int64 { return c.Files + c.Dirs + c.Symlinks }

// Backup implements engines.Engine.
func (e *Engine) Backup(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	cfg, err := decodeConfig(job.Source)
	if err != nil {
		return nil, err
	}
	log := logger(job.Log).WithField("engine", "files")
	root, err := filepath.EvalSymlinks(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	if fi, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("files: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("files: path %s is not a directory", cfg.Path)
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("files: hostname: %w", err)
	}

	if job.SizeHint != nil {
		job.Estimate(treeSize(root))
	}
	w, err := job.Artifacts.Create(ArtifactName)
	if err != nil {
		return nil, fmt.Errorf("files: create artifact %s: %w", ArtifactName, err)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	b := &backup{
		e: e, ctx: ctx, cfg: cfg, root: root, log: log,
		tw: tar.NewWriter(bw), progress: job.Progress,
	}
	if err := filepath.WalkDir(root, b.visit); err != nil {
		return nil, err
	}
	if err := b.tw.Close(); err != nil {
		return nil, fmt.Errorf("files: write %s: %w", ArtifactName, err)
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("files: write %s: %w", ArtifactName, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("files: upload %s: %w", ArtifactName, err)
	}
	job.Progress.Report("files", b.n.Files, b.n.Files)
	log.WithFields(logrus.Fields{
		"path": cfg.Path, "files": b.n.Files, "dirs": b.n.Dirs,
		"symlinks": b.n.Symlinks, "bytes": b.n.Bytes, "skipped": b.skipped,
	}).Info("files backup done")
	return &engines.BackupInfo{
		Format:     Format,
		SourceInfo: map[string]string{"path": cfg.Path, "host": host},
		Details: map[string]any{
			"files": b.n.Files, "dirs": b.n.Dirs, "symlinks": b.n.Symlinks,
			"bytes": b.n.Bytes, "skipped": b.skipped,
		},
	}, nil
}

// backup is one run of Backup's walk.
type backup struct {
	e        *Engine
	ctx      context.Context
	cfg      *config
	root     string
	log      logrus.FieldLogger
	tw       *tar.Writer
	progress engines.Progress
	n        counts
	skipped  int64
	reported time.Time
}

func (b *backup) visit(p string, d fs.DirEntry, err error) error {
	if cerr := b.ctx.Err(); cerr != nil {
		return cerr
	}
	rel, rerr := filepath.Rel(b.root, p)
	if rerr != nil {
		return fmt.Errorf("files: %w", rerr)
	}
	rel = filepath.ToSlash(rel)
	if err != nil {
		// Something vanished while we walked: the tree is live.
		if errors.Is(err, fs.ErrNotExist) && rel != "." {
			b.log.WithField("file", rel).Warn("files: vanished during backup, skipped")
			return nil
		}
		return fmt.Errorf("files: %w", err)
	}
	if rel != "." && b.cfg.excluded(rel) {
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	}
	fi, err := d.Info()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			b.log.WithField("file", rel).Warn("files: vanished during backup, skipped")
			return nil
		}
		return fmt.Errorf("files: %w", err)
	}
	switch {
	case fi.Mode().IsRegular():
		return b.file(p, rel)
	case fi.IsDir():
		name := rootName
		if rel != "." {
			name = "./" + rel + "/"
			b.n.Dirs++
		}
		return b.header(header(name, tar.TypeDir, fi, 0, ""))
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				b.log.WithField("file", rel).Warn("files: vanished during backup, skipped")
				return nil
			}
			return fmt.Errorf("files: %w", err)
		}
		b.n.Symlinks++
		return b.header(header("./"+rel, tar.TypeSymlink, fi, 0, target))
	default:
		b.skipped++
		b.log.WithFields(logrus.Fields{"file": rel, "type": fi.Mode().Type().String()}).
			Warn("files: not a regular file, directory or symlink, skipped")
		return nil
	}
}

func (b *backup) header(h *tar.Header) error {
	if err := b.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("files: write %s: %w", ArtifactName, err)
	}
	return nil
}

// file writes one regular file. Its size is taken from the open file, and
// exactly that many bytes go into the archive whatever happens to the file
// meanwhile.
func (b *backup) file(p, rel string) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			b.log.WithField("file", rel).Warn("files: vanished during backup, skipped")
			return nil
		}
		return fmt.Errorf("files: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	if !fi.Mode().IsRegular() {
		// Replaced by something else between the walk and the open.
		b.skipped++
		b.log.WithFields(logrus.Fields{"file": rel, "type": fi.Mode().Type().String()}).
			Warn("files: not a regular file any more, skipped")
		return nil
	}
	size := fi.Size()
	if b.e.beforeCopy != nil {
		b.e.beforeCopy(p)
	}
	if err := b.header(header("./"+rel, tar.TypeReg, fi, size, "")); err != nil {
		return err
	}
	n, err := io.CopyN(b.tw, ctxReader{b.ctx, f}, size)
	switch {
	case errors.Is(err, io.EOF):
		b.log.WithFields(logrus.Fields{"file": rel, "size": size, "read": n}).
			Warn("files: file shrank while read; zero-padded to the size it had when opened")
		if _, err := io.CopyN(b.tw, zeros{}, size-n); err != nil {
			return fmt.Errorf("files: write %s: %w", ArtifactName, err)
		}
	case err != nil:
		return fmt.Errorf("files: %s: %w", rel, err)
	default:
		var one [1]byte
		if k, _ := f.Read(one[:]); k > 0 {
			b.log.WithFields(logrus.Fields{"file": rel, "size": size}).
				Warn("files: file grew while read; cut to the size it had when opened")
		}
	}
	b.n.Files++
	b.n.Bytes += size
	if now := time.Now(); now.Sub(b.reported) >= progressEvery {
		b.reported = now
		b.progress.Report("files", b.n.Files, 0)
	}
	return nil
}

// header builds a PAX header (exact nanosecond mtimes, long names, large
// sizes) with numeric owners.
func header(name string, typ byte, fi fs.FileInfo, size int64, link string) *tar.Header {
	mode := fi.Mode()
	h := &tar.Header{
		Typeflag: typ,
		Name:     name,
		Linkname: link,
		Size:     size,
		Mode:     int64(mode.Perm()),
		ModTime:  fi.ModTime(),
		Format:   tar.FormatPAX,
	}
	if mode&fs.ModeSetuid != 0 {
		h.Mode |= 0o4000
	}
	if mode&fs.ModeSetgid != 0 {
		h.Mode |= 0o2000
	}
	if mode&fs.ModeSticky != 0 {
		h.Mode |= 0o1000
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		h.Uid, h.Gid = int(st.Uid), int(st.Gid)
	}
	return h
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// ctxReader stops a long copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func logger(l logrus.FieldLogger) logrus.FieldLogger {
	if l == nil {
		return engines.DiscardLog()
	}
	return l
}

// treeSize estimates the tar stream of root for the progress: the sizes
// of its regular files plus a header of 512 bytes per entry (a walk of
// metadata only; entries that cannot be read are left out).
func treeSize(root string) int64 {
	var n int64
	_ = filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		n += 512
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += (fi.Size() + 511) &^ 511
			}
		}
		return nil
	})
	return n
}
