package files

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cnvrg/capsule/engines"
)

var _ engines.PreviousKeeper = (*Engine)(nil)

// ListPrevious implements engines.PreviousKeeper: the trees restores
// kept beside the target (.<base>.capsule-prev-<id>.a<n>) and, for a
// target swapped in place, inside it (.capsule-prev-<id>.a<n>).
func (e *Engine) ListPrevious(ctx context.Context, src engines.Source) ([]engines.KeptPrevious, error) {
	cfg, err := decodeConfig(src)
	if err != nil {
		return nil, err
	}
	var out []engines.KeptPrevious
	for _, n := range []stagingNames{{dir: filepath.Dir(cfg.Path), base: filepath.Base(cfg.Path)}, {dir: cfg.Path}} {
		entries, err := os.ReadDir(n.dir)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("files: list %s: %w", n.dir, err)
		}
		for _, d := range entries {
			id, attempt, ok := n.parse(kindPrevious, d.Name())
			if !ok || !d.IsDir() {
				continue
			}
			k := engines.KeptPrevious{Name: filepath.Join(n.dir, d.Name()), Request: id, Attempt: attempt}
			k.KeptAt, _ = engines.IDTime(id)
			out = append(out, k)
		}
	}
	return out, nil
}

// DropPrevious implements engines.PreviousKeeper.
func (e *Engine) DropPrevious(ctx context.Context, src engines.Source, name string) error {
	kept, err := e.ListPrevious(ctx, src)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(kept, func(k engines.KeptPrevious) bool { return k.Name == name }) {
		return fmt.Errorf("files: %s is not a previous tree kept for source %s", name, src.Name)
	}
	if err := os.RemoveAll(name); err != nil {
		return fmt.Errorf("files: remove %s: %w", name, err)
	}
	return nil
}
