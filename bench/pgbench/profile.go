package main

import (
	"context"

	"github.com/cnvrg/capsule/bench/internal/benchkit"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
)

// profileBackup runs one backup of db and one restore of it (into a new
// database, dropped afterwards) in this process, through the same
// executor and postgres engine the worker runs, each under the CPU
// profiler, and writes the profiles to path and path.restore
// (go tool pprof -top path).
func (b *bench) profileBackup(ctx context.Context, db *dbInfo, level, path string) error {
	x, err := executor.New(executor.Config{
		Bucket: b.capsule.Bucket, Engines: engines.NewRegistry(postgres.New()), Worker: "pgbench-profile",
		Compression: level,
		Sources: benchkit.Sources{
			"pg":         {Name: "pg", Engine: "postgres", Config: b.source(db.Name)},
			"pg-restore": {Name: "pg-restore", Engine: "postgres", Config: b.source(capsuleTarget)},
		},
	})
	if err != nil {
		return err
	}
	backup := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Cluster: "bench", Source: "pg"}
	if err := benchkit.ProfileRun(ctx, x, backup, db.Name+" backup ("+level+")", path); err != nil {
		return err
	}
	if err := b.dropLike(ctx, capsuleTarget); err != nil {
		return err
	}
	defer b.dropLike(context.Background(), capsuleTarget)
	restore := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindRestore, ID: requests.NewID(), BackupID: backup.ID, Target: "pg-restore", DropPrevious: true}
	return benchkit.ProfileRun(ctx, x, restore, db.Name+" restore", path+".restore")
}
