package postgres

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// A parallel restore needs the archive in a file: pg_restore -j reads a
// custom archive from several processes at once, which a pipe cannot
// serve. The engine copies the artifact to a private directory first,
// reading it to its end, where the executor checks its sha256: a damaged
// artifact fails before any database is created. The directory holds a
// lock file that its worker holds locked (flock) while it uses it, so a
// later restore can tell a directory whose worker died (SIGKILL, OOM)
// from one in use, and removes it: a dead worker's copy of a database
// does not stay on disk.

const (
	stagingPrefix = "capsule-pg-restore-"
	// stagingNewPrefix names a directory being created: its lock is made
	// and taken there, and only then is it renamed to stagingPrefix, so
	// that a sweep never sees a directory whose lock is not yet held.
	stagingNewPrefix = ".capsule-pg-restore-new-"
	stagingLock      = ".lock"
	// stagingMargin is the free space a staging copy leaves on its
	// filesystem.
	stagingMargin = 256 << 20
)

// errNoRoom is returned by stageArchive when the staging directory's
// filesystem cannot hold the archive.
var errNoRoom = errors.New("not enough free space")

// stagedArchive is an archive copied to local disk.
type stagedArchive struct {
	dir  string
	path string
	lock *os.File
}

// roomFor fails with errNoRoom when dir's filesystem has less than size
// plus stagingMargin bytes free.
func roomFor(dir string, size int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("staging directory %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < size+stagingMargin {
		return fmt.Errorf("%w in %s for a %d MB archive (%d MB free)", errNoRoom, dir, size>>20, free>>20)
	}
	return nil
}

// newStaging creates a private staging directory in parent, locked. It is
// made under a name the sweep does not look at, locked there, and renamed
// into view: a sweep running beside it (another worker's restore) sees
// only directories whose lock is held or abandoned.
func newStaging(parent string) (*stagedArchive, error) {
	tmp, err := os.MkdirTemp(parent, stagingNewPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(tmp, stagingLock), os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		if err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			_ = lock.Close()
		}
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("lock staging directory %s: %w", tmp, err)
	}
	// The random part is unique among directories being created; a
	// finished directory of the same name (its creator renamed it) makes
	// the rename fail, and the next name is tried.
	for try := 0; ; try++ {
		dir := filepath.Join(parent, stagingPrefix+strings.TrimPrefix(filepath.Base(tmp), stagingNewPrefix))
		if try > 0 {
			dir += fmt.Sprintf("-%d", try)
		}
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
		if err == nil {
			return &stagedArchive{dir: dir, lock: lock}, nil
		}
		if !errors.Is(err, unix.EEXIST) || try == 9 {
			_ = os.RemoveAll(tmp)
			_ = lock.Close()
			return nil, fmt.Errorf("create staging directory %s: %w", dir, err)
		}
	}
}

// copyIn copies r into the staging directory as file name, reading r to
// its end. Its error is r's (a *ChecksumError for a damaged artifact) or
// the disk's. When tee is not nil it sees every byte, and then, before
// the file is closed, patch may change the file.
func (s *stagedArchive) copyIn(r io.Reader, name string, tee io.Writer, patch func(*os.File) error) (int64, error) {
	path := filepath.Join(s.dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create staging file: %w", err)
	}
	var w io.Writer = f
	if tee != nil {
		w = io.MultiWriter(f, tee)
	}
	// struct{io.Writer} hides os.File's ReadFrom, whose fallback copies
	// 32 KiB at a time.
	n, err := io.CopyBuffer(struct{ io.Writer }{w}, r, make([]byte, 1<<20))
	if err == nil && patch != nil {
		err = patch(f)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write staging file %s: %w", path, cerr)
	}
	if err != nil {
		return n, err
	}
	s.path = path
	return n, nil
}

// remove deletes the directory and what it holds.
func (s *stagedArchive) remove() error {
	err := os.RemoveAll(s.dir)
	_ = s.lock.Close()
	return err
}

// sweepStaging removes the staging directories in parent whose workers
// are gone: their lock is free. A directory without a lock file (its
// worker died while creating it) goes when it is an hour old.
func sweepStaging(parent string, log logrus.FieldLogger) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		dir := filepath.Join(parent, e.Name())
		switch {
		case !e.IsDir():
			continue
		case strings.HasPrefix(e.Name(), stagingNewPrefix):
			// Its worker died between creating and renaming it: gone
			// when an hour old (a live creation takes microseconds).
			if fi, err := os.Stat(dir); err != nil || time.Since(fi.ModTime()) <= time.Hour {
				continue
			}
		case !strings.HasPrefix(e.Name(), stagingPrefix) || !abandoned(dir):
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			log.WithFields(logrus.Fields{"dir": dir, "error": err.Error()}).Warn("could not remove a staging directory left by a worker that died")
			continue
		}
		log.WithField("dir", dir).Info("removed a staging directory left by a worker that died")
	}
}

func abandoned(dir string) bool {
	lock, err := os.OpenFile(filepath.Join(dir, stagingLock), os.O_RDWR, 0)
	if err != nil {
		fi, serr := os.Stat(dir)
		return errors.Is(err, os.ErrNotExist) && serr == nil && time.Since(fi.ModTime()) > time.Hour
	}
	defer lock.Close()
	// Acquired: nobody holds it. Closing releases it again.
	return unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
}

// stagingParent is where restores of ci make their staging directories.
func (ci *conninfo) stagingParent() string {
	if ci.stagingDir != "" {
		return ci.stagingDir
	}
	return os.TempDir()
}
