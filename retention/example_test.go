package retention_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
)

// A nightly plan that keeps two backups, applied after the fifth one.
func ExampleRunner_Apply() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "retention-example-")
	defer os.RemoveAll(dir)
	fb, _ := fs.New(dir)
	b := bucket.Prefixed(fb, "capsule/")
	for i := range 5 {
		id := fmt.Sprintf("nightly-%d", i)
		art := requests.ArtifactKey("prod", "cnvrg/pg", id, 1, "dump.zst")
		bucket.PutBytes(ctx, b, art, []byte("..."), bucket.PutOptions{})
		index.Write(ctx, b, &index.BackupIndex{
			APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: id, RequestID: id,
			Cluster: "prod", Source: "cnvrg/pg", Plan: "nightly", Status: requests.StatusSucceeded, Attempt: 1,
			FinishedAt: time.Date(2026, 3, i+1, 2, 0, 0, 0, time.UTC),
			Artifacts:  []index.Artifact{{Name: "dump.zst", Key: art}},
		})
	}

	r, err := retention.New(retention.Config{Bucket: b, Holder: "worker-1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	rep, err := r.Apply(ctx, retention.Policy{Cluster: "prod", Source: "cnvrg/pg", Plan: "nightly", Keep: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("kept:", rep.Kept)
	fmt.Println("deleted:", rep.Deleted)
	// Output:
	// kept: [nightly-4 nightly-3]
	// deleted: [nightly-0 nightly-1 nightly-2]
}
