package files_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/files"
)

// A directory backed up into an in-memory artifact store and restored
// into another path.
func ExampleEngine() {
	ctx := context.Background()
	base, err := os.MkdirTemp("", "files-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(base)
	src := filepath.Join(base, "models")
	if err := os.MkdirAll(filepath.Join(src, "v1"), 0o755); err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(src, "v1", "weights.bin"), []byte("0.1 0.2 0.3"), 0o644); err != nil {
		panic(err)
	}

	eng := files.New()
	store := enginetest.NewStore()
	info, err := eng.Backup(ctx, &engines.BackupJob{
		ID:        "b1",
		Source:    engines.Source{Name: "models", Engine: "files", Config: map[string]any{"path": src}},
		Artifacts: store,
		Log:       engines.DiscardLog(),
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(info.Format, store.Names(), info.Details["files"], "file,", info.Details["dirs"], "dir")

	restored := filepath.Join(base, "restored", "models")
	_, err = eng.Restore(ctx, &engines.RestoreJob{
		ID:        "r1",
		Target:    engines.Source{Name: "models", Engine: "files", Config: map[string]any{"path": restored}},
		Backup:    *info,
		Artifacts: store,
		Log:       engines.DiscardLog(),
	})
	if err != nil {
		panic(err)
	}
	data, err := os.ReadFile(filepath.Join(restored, "v1", "weights.bin"))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(data))
	// Output:
	// tar/v1 [tree.tar] 1 file, 1 dir
	// 0.1 0.2 0.3
}
