package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Restore implements engines.Engine: extract into a staging directory,
// and swap it in only when the whole archive was read and verified.
func (e *Engine) Restore(ctx context.Context, job *engines.RestoreJob) (*engines.RestoreInfo, error) {
	cfg, err := decodeConfig(job.Target)
	if err != nil {
		return nil, err
	}
	if job.ID == "" || strings.ContainsAny(job.ID, `/\`) || job.ID == "." || job.ID == ".." {
		return nil, fmt.Errorf("files: restore id %q cannot name a directory", job.ID)
	}
	// The replaced tree is kept unless the request drops it. keepPrevious
	// is the option's old name, from when dropping was the default.
	keep := !job.Options.DropPrevious
	if v, ok := job.Options.Extra["keepPrevious"]; ok && (v != "true" || !keep) {
		return nil, fmt.Errorf("files: option keepPrevious=%q: the previous tree is kept by default; use dropPrevious to remove it", v)
	}
	log := logger(job.Log).WithFields(logrus.Fields{"engine": "files", "path": cfg.Path})

	target, exists, err := resolveTarget(cfg.Path)
	if err != nil {
		return nil, err
	}
	parent, base := filepath.Dir(target), filepath.Base(target)
	inPlace := false
	if exists {
		if inPlace, err = e.mustSwapInPlace(target, parent); err != nil {
			return nil, err
		}
	}

	// Parents the restore creates are removed again if it fails.
	created, err := mkdirParents(parent)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			removeCreatedParents(parent, created, log)
		}
	}()

	// Staging and the kept previous tree are named after the request and
	// the attempt: a paused attempt whose request another worker took
	// over never shares a directory with its successor.
	attempt := job.AttemptNumber()
	var names stagingNames
	var targetMtime time.Time
	if inPlace {
		names = stagingNames{dir: target}
		fi, err := os.Lstat(target)
		if err != nil {
			return nil, fmt.Errorf("files: %w", err)
		}
		targetMtime = fi.ModTime()
	} else {
		names = stagingNames{dir: parent, base: base}
	}
	staging, prev := names.staging(job.ID, attempt), names.prev(job.ID, attempt)
	log = log.WithFields(logrus.Fields{"staging": staging, "in_place": inPlace, "attempt": attempt})
	// A previous tree of this very attempt, beside a target that is
	// there too, is refused now rather than after the extraction.
	if _, err := os.Lstat(prev); err == nil && keep && exists {
		return nil, leftoverErr(prev)
	}

	// Staging of earlier attempts of this restore, and of restores that
	// have ended, is removed; a staging directory of this very attempt
	// can only be left by a crash of it.
	if err := names.sweep(ctx, job, log); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(staging); err == nil {
		log.Warn("files: removing the staging directory of an earlier run of this attempt")
		if err := removeTree(staging); err != nil {
			return nil, fmt.Errorf("files: remove old staging: %w", err)
		}
	}
	if err := os.Mkdir(staging, 0o700); err != nil {
		return nil, fmt.Errorf("files: create staging: %w", err)
	}
	var stagedMtime time.Time
	if inPlace {
		if fi, err := os.Lstat(target); err == nil {
			stagedMtime = fi.ModTime()
		}
	}
	defer func() {
		if ok {
			return
		}
		// Creating and removing staging touches the target's mtime: put
		// it back, unless someone else changed the target since (a
		// successor that took this request over and swapped).
		untouched := false
		if inPlace {
			fi, err := os.Lstat(target)
			untouched = err == nil && fi.ModTime().Equal(stagedMtime)
		}
		if err := removeTree(staging); err != nil {
			log.WithError(err).Error("files: could not remove the staging directory")
		}
		if untouched {
			if err := lutimes(target, targetMtime); err != nil {
				log.WithError(err).Warn("files: could not reset the target's mtime")
			}
		}
	}()

	job.Progress.Report("extract", 0, 0)
	n, err := extractArtifact(ctx, job, staging, cfg.RestoreOwnership, log)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// The archive is complete and verified. Only the holder of the lease
	// may swap: confirm it now, the last thing before the first rename.
	if err := job.CheckFence(ctx); err != nil {
		log.WithError(err).Warn("files: not swapping: this attempt no longer holds the request")
		return nil, err
	}
	// Swap. No cancellation from here on; each step below undoes itself
	// if it fails.
	job.Progress.Report("swap", 0, 0)
	info := &engines.RestoreInfo{Details: map[string]any{
		"files": n.Files, "dirs": n.Dirs, "symlinks": n.Symlinks, "bytes": n.Bytes, "inPlace": inPlace,
	}}
	var keptPrev bool
	if inPlace {
		info.Downtime, keptPrev, err = swapInPlace(target, staging, prev, names.own(job.ID), keep, cfg.RestoreOwnership, log)
	} else {
		info.Downtime, keptPrev, err = swapRename(target, staging, prev, exists, keep, log)
	}
	if err != nil {
		return nil, err
	}
	ok = true
	if keptPrev {
		info.Previous = prev
	}
	if earlier := names.earlierPrevious(job.ID, attempt); len(earlier) > 0 {
		// An earlier attempt swapped and died before its result: what it
		// moved aside is the tree the target held before this restore.
		info.Details["previousOfEarlierAttempts"] = earlier
		log.WithField("previous", earlier).Warn("files: an earlier attempt of this restore swapped already; the tree it replaced is kept")
	}
	log.WithFields(logrus.Fields{
		"files": n.Files, "dirs": n.Dirs, "symlinks": n.Symlinks, "bytes": n.Bytes,
		"downtime": info.Downtime, "previous": info.Previous,
	}).Info("files restore done")
	return info, nil
}

// resolveTarget follows a symlink at the target path, so the swap happens
// at the directory it names, and reports whether the target exists.
func resolveTarget(p string) (string, bool, error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return p, false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("files: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if p, err = filepath.EvalSymlinks(p); err != nil {
			return "", false, fmt.Errorf("files: target: %w", err)
		}
		if fi, err = os.Lstat(p); err != nil {
			return "", false, fmt.Errorf("files: %w", err)
		}
	}
	if !fi.IsDir() {
		return "", false, fmt.Errorf("files: target %s exists and is not a directory", p)
	}
	return p, true, nil
}

// mustSwapInPlace reports whether the target cannot be swapped by
// renames beside it: it is a mount point (its parent is on another
// filesystem), its parent is not writable, or the engine was told to act
// as if.
func (e *Engine) mustSwapInPlace(target, parent string) (bool, error) {
	if e.inPlace {
		return true, nil
	}
	if err := unix.Faccessat(unix.AT_FDCWD, parent, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
		return true, nil
	}
	var ts, ps syscall.Stat_t
	if err := syscall.Lstat(target, &ts); err != nil {
		return false, fmt.Errorf("files: stat %s: %w", target, err)
	}
	if err := syscall.Stat(parent, &ps); err != nil {
		return false, fmt.Errorf("files: stat %s: %w", parent, err)
	}
	return ts.Dev != ps.Dev || ts.Ino == ps.Ino, nil
}

// swapRename swaps staging in by two renames: target away to prev,
// staging to target. It returns the time the target was missing and
// whether prev is left in place.
func swapRename(target, staging, prev string, exists, keep bool, log logrus.FieldLogger) (time.Duration, bool, error) {
	// prev can only be left by an earlier attempt of this restore that
	// crashed during or after its swap.
	_, err := os.Lstat(prev)
	leftover := err == nil
	var start time.Time
	if exists {
		if leftover {
			if keep {
				return 0, false, leftoverErr(prev)
			}
			log.WithField("previous", prev).Warn("files: removing the previous tree left by an earlier attempt")
			if err := removeTree(prev); err != nil {
				return 0, false, fmt.Errorf("files: remove %s: %w", prev, err)
			}
		}
		start = time.Now()
		if err := os.Rename(target, prev); err != nil {
			return 0, false, fmt.Errorf("files: move target aside: %w", err)
		}
		if err := os.Rename(staging, target); err != nil {
			if rerr := os.Rename(prev, target); rerr != nil {
				log.WithError(rerr).WithField("previous", prev).Error("files: could not move the target back; it is kept at previous")
			}
			return 0, false, fmt.Errorf("files: move staging into place: %w", err)
		}
	} else {
		start = time.Now()
		if err := os.Rename(staging, target); err != nil {
			return 0, false, fmt.Errorf("files: move staging into place: %w", err)
		}
		if !leftover {
			return time.Since(start), false, nil
		}
		// A crashed attempt moved the target aside: prev is the tree
		// this restore replaces.
	}
	downtime := time.Since(start)
	if keep {
		return downtime, true, nil
	}
	if err := removeTree(prev); err != nil {
		log.WithError(err).WithField("previous", prev).Warn("files: could not remove the previous tree; it is left beside the target")
		return downtime, true, nil
	}
	return downtime, false, nil
}

// swapInPlace swaps the contents of a target that cannot be renamed:
// its entries move into prev (inside it), then staging's entries move up.
// A failed rename moves everything back.
func swapInPlace(target, staging, prev string, own func(string) bool, keep, owner bool, log logrus.FieldLogger) (time.Duration, bool, error) {
	sfi, err := os.Lstat(staging)
	if err != nil {
		return 0, false, fmt.Errorf("files: %w", err)
	}
	if _, err := os.Lstat(prev); err == nil {
		if keep {
			return 0, false, leftoverErr(prev)
		}
		log.WithField("previous", prev).Warn("files: removing the previous tree left by an earlier attempt")
		if err := removeTree(prev); err != nil {
			return 0, false, fmt.Errorf("files: remove %s: %w", prev, err)
		}
	}
	// This restore's own directories (its staging and what its earlier
	// attempts kept or staged) stay where they are.
	old, err := readNames(target, own)
	if err != nil {
		return 0, false, err
	}
	staged, err := readNames(staging, nil)
	if err != nil {
		return 0, false, err
	}
	if err := os.Mkdir(prev, 0o700); err != nil {
		return 0, false, fmt.Errorf("files: create %s: %w", prev, err)
	}
	start := time.Now()
	undo := func(moved []string, from, to string) {
		for _, n := range moved {
			if err := os.Rename(filepath.Join(to, n), filepath.Join(from, n)); err != nil {
				log.WithError(err).WithField("entry", n).Error("files: could not move an entry back")
			}
		}
	}
	var movedOld, movedNew []string
	for _, n := range old {
		if err := os.Rename(filepath.Join(target, n), filepath.Join(prev, n)); err != nil {
			undo(movedOld, target, prev)
			_ = os.Remove(prev)
			return 0, false, fmt.Errorf("files: move %s aside: %w", n, err)
		}
		movedOld = append(movedOld, n)
	}
	for _, n := range staged {
		if err := os.Rename(filepath.Join(staging, n), filepath.Join(target, n)); err != nil {
			undo(movedNew, staging, target)
			undo(movedOld, target, prev)
			_ = os.Remove(prev)
			return 0, false, fmt.Errorf("files: move %s into place: %w", n, err)
		}
		movedNew = append(movedNew, n)
	}
	downtime := time.Since(start)
	if err := os.Remove(staging); err != nil {
		log.WithError(err).Warn("files: could not remove the empty staging directory")
	}
	kept := keep
	if !keep {
		if err := removeTree(prev); err != nil {
			log.WithError(err).WithField("previous", prev).Warn("files: could not remove the previous tree; it is left inside the target")
			kept = true
		}
	}
	// The target directory takes the backed-up root's mode and mtime (and
	// owner, when restoreOwnership asks for it), last, since every rename
	// above touched its mtime.
	if owner {
		if st, ok := sfi.Sys().(*syscall.Stat_t); ok {
			if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
				log.WithError(err).Warn("files: could not set the target's owner")
			}
		}
	}
	if err := os.Chmod(target, sfi.Mode()&fs.ModePerm); err != nil {
		log.WithError(err).Warn("files: could not set the target's mode")
	}
	if err := lutimes(target, sfi.ModTime()); err != nil {
		log.WithError(err).Warn("files: could not set the target's mtime")
	}
	return downtime, kept, nil
}

// leftoverErr refuses to replace a previous tree an earlier attempt of
// this restore left, when it is to be kept: it may be the only copy of
// what the target held before.
func leftoverErr(prev string) error {
	return fmt.Errorf("files: %s exists (left by an earlier attempt of this restore): move it away to keep it, or restore with dropPrevious to remove it", prev)
}

// readNames lists a directory's entries except those skip reports.
func readNames(dir string, skip func(string) bool) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	names := make([]string, 0, len(des))
	for _, d := range des {
		if skip == nil || !skip(d.Name()) {
			names = append(names, d.Name())
		}
	}
	return names, nil
}

// mkdirParents creates dir and its missing parents, and returns the
// topmost one it created ("" when dir existed).
func mkdirParents(dir string) (string, error) {
	top := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("files: %w", err)
		}
		top = d
		if filepath.Dir(d) == d {
			break
		}
	}
	if top == "" {
		return "", nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("files: create parent directories: %w", err)
	}
	return top, nil
}

// removeCreatedParents removes the empty directories from dir up to top
// that mkdirParents created.
func removeCreatedParents(dir, top string, log logrus.FieldLogger) {
	if top == "" {
		return
	}
	for d := dir; ; d = filepath.Dir(d) {
		if err := os.Remove(d); err != nil {
			log.WithError(err).WithField("dir", d).Warn("files: could not remove a parent directory the restore created")
			return
		}
		if d == top || filepath.Dir(d) == d {
			return
		}
	}
}

// removeTree removes a tree, making directories writable where a
// read-only one stops it (when not running as root).
func removeTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if fi, err := d.Info(); err == nil {
				_ = os.Chmod(q, fi.Mode().Perm()|0o700)
			}
		}
		return nil
	})
	return os.RemoveAll(p)
}
