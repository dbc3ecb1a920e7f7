package files

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
)

// stagingNames names the directories a restore makes: beside the target
// (dir is the target's parent, base the target's name) or, swapping in
// place, inside it (dir is the target, base ""). Each name carries the
// request id and the attempt: .<base>.capsule-restore-<id>.a<attempt>
// and .<base>.capsule-prev-<id>.a<attempt> (.capsule-restore-<id>.a<n>
// and .capsule-prev-<id>.a<n> in place).
type stagingNames struct {
	dir, base string
}

const (
	kindStaging  = "restore"
	kindPrevious = "prev"
)

func (n stagingNames) prefix(kind string) string {
	if n.base == "" {
		return ".capsule-" + kind + "-"
	}
	return "." + n.base + ".capsule-" + kind + "-"
}

func (n stagingNames) path(kind, id string, attempt int) string {
	return filepath.Join(n.dir, n.prefix(kind)+id+".a"+strconv.Itoa(attempt))
}

func (n stagingNames) staging(id string, attempt int) string {
	return n.path(kindStaging, id, attempt)
}

func (n stagingNames) prev(id string, attempt int) string {
	return n.path(kindPrevious, id, attempt)
}

// parse reads the request id and attempt from an entry of dir named as
// kind; ok is false for any other name.
func (n stagingNames) parse(kind, name string) (id string, attempt int, ok bool) {
	rest, ok := strings.CutPrefix(name, n.prefix(kind))
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndex(rest, ".a")
	if i < 1 {
		return "", 0, false
	}
	num := rest[i+2:]
	attempt, err := strconv.Atoi(num)
	if err != nil || attempt < 1 || strconv.Itoa(attempt) != num {
		return "", 0, false
	}
	id = rest[:i]
	if !validID(id) {
		return "", 0, false
	}
	return id, attempt, true
}

// validID accepts the request ids capsule makes ([a-z0-9][a-z0-9._-]*).
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// own reports whether an entry of dir is request id's staging or
// previous tree, of any attempt.
func (n stagingNames) own(id string) func(string) bool {
	return func(name string) bool {
		for _, kind := range []string{kindStaging, kindPrevious} {
			if got, _, ok := n.parse(kind, name); ok && got == id {
				return true
			}
		}
		return false
	}
}

// sweep removes the staging directories in dir that no attempt will
// swap in: those of this request's earlier attempts (a successor never
// reuses them; a paused predecessor that wakes finds its staging gone
// and fails) and those that job.StaleStaging reports abandoned. Previous
// trees are never touched: they hold what a target held before.
func (n stagingNames) sweep(ctx context.Context, job *engines.RestoreJob, log logrus.FieldLogger) error {
	entries, err := os.ReadDir(n.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	attempt := job.AttemptNumber()
	for _, e := range entries {
		id, a, ok := n.parse(kindStaging, e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		stale := id == job.ID && a < attempt
		if id != job.ID {
			if stale, err = job.IsStale(ctx, id, a); err != nil {
				log.WithError(err).WithField("staging", e.Name()).Warn("files: cannot tell whether a staging directory is abandoned; leaving it")
				continue
			}
		}
		if !stale {
			continue
		}
		p := filepath.Join(n.dir, e.Name())
		if err := removeTree(p); err != nil {
			log.WithError(err).WithField("staging", p).Warn("files: could not remove an abandoned staging directory")
			continue
		}
		log.WithFields(logrus.Fields{"staging": p, "request_id": id, "staged_by_attempt": a}).Info("files: removed an abandoned staging directory")
	}
	return nil
}

// earlierPrevious lists the previous trees this request's earlier
// attempts kept: an attempt that swapped and died before its result
// leaves the target's former content there.
func (n stagingNames) earlierPrevious(id string, attempt int) []string {
	var out []string
	for a := 1; a < attempt; a++ {
		p := n.prev(id, a)
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	return out
}
