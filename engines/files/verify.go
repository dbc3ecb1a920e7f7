package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
)

// Verify implements engines.Verifier: it extracts the backup into a
// scratch directory beside the target (the system temp directory when
// that is not possible), checks what landed on disk against the counts
// the backup recorded, and removes the scratch directory. A corrupt or
// refused archive is a failed check; an error means the verification
// itself could not run.
func (e *Engine) Verify(ctx context.Context, job *engines.RestoreJob) (*engines.VerifyReport, error) {
	cfg, err := decodeConfig(job.Target)
	if err != nil {
		return nil, err
	}
	log := logger(job.Log).WithFields(logrus.Fields{"engine": "files", "path": cfg.Path})
	scratch, err := scratchDir(cfg.Path)
	if err != nil {
		return nil, err
	}
	log = log.WithField("scratch", scratch)
	defer func() {
		if err := removeTree(scratch); err != nil {
			log.WithError(err).Error("files: could not remove the scratch directory")
		}
	}()

	rep := &engines.VerifyReport{}
	check := func(name string, ok bool, detail string) {
		rep.Checks = append(rep.Checks, engines.Check{Name: name, OK: ok, Detail: detail})
	}
	want, haveCounts := recorded(job.Backup.Details)
	n, err := extractArtifact(ctx, job, scratch, cfg.RestoreOwnership, log)
	if err != nil {
		var ae *archiveError
		var ce *engines.ChecksumError
		if ctx.Err() != nil || (!errors.As(err, &ae) && !errors.As(err, &ce)) {
			return nil, err
		}
		check("archive", false, err.Error())
		return rep, nil
	}
	check("archive", true, fmt.Sprintf("%s read to its end, checksum verified", ArtifactName))

	disk, err := countTree(ctx, scratch)
	if err != nil {
		return nil, err
	}
	check("entries", disk == n, fmt.Sprintf("extracted %d files, %d dirs, %d symlinks, %d bytes; found on disk %d, %d, %d, %d",
		n.Files, n.Dirs, n.Symlinks, n.Bytes, disk.Files, disk.Dirs, disk.Symlinks, disk.Bytes))
	if !haveCounts {
		check("recorded counts", false, "the backup's details do not record files, dirs, symlinks and bytes")
	} else {
		for _, c := range []struct {
			name      string
			want, got int64
		}{
			{"files", want.Files, disk.Files},
			{"dirs", want.Dirs, disk.Dirs},
			{"symlinks", want.Symlinks, disk.Symlinks},
			{"bytes", want.Bytes, disk.Bytes},
		} {
			check(c.name, c.want == c.got, fmt.Sprintf("backup recorded %d, restored %d", c.want, c.got))
		}
	}
	rep.OK = true
	for _, c := range rep.Checks {
		rep.OK = rep.OK && c.OK
	}
	log.WithField("ok", rep.OK).Info("files verify done")
	return rep, nil
}

// scratchDir makes a fresh directory beside target, or in the system temp
// directory when target's parent is missing or not writable.
func scratchDir(target string) (string, error) {
	parent, base := filepath.Dir(target), filepath.Base(target)
	if d, err := os.MkdirTemp(parent, "."+base+".capsule-verify-*"); err == nil {
		return d, nil
	}
	d, err := os.MkdirTemp("", "capsule-verify-*")
	if err != nil {
		return "", fmt.Errorf("files: scratch directory: %w", err)
	}
	return d, nil
}

// countTree counts what is on disk under root (root itself excluded).
func countTree(ctx context.Context, root string) (counts, error) {
	var c counts
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		switch t := d.Type(); {
		case t.IsDir():
			c.Dirs++
		case t&fs.ModeSymlink != 0:
			c.Symlinks++
		case t.IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			c.Files++
			c.Bytes += fi.Size()
		}
		return nil
	})
	if err != nil {
		return counts{}, fmt.Errorf("files: count scratch tree: %w", err)
	}
	return c, nil
}
