package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/cnvrg/capsule/bench/internal/benchkit"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
)

type sources map[string]engines.Source

func (s sources) Lookup(name string) (engines.Source, error) {
	src, ok := s[name]
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
	}
	return src, nil
}

// profileBackup runs one backup of db and one restore of it (into a new
// database, dropped afterwards) in this process, through the same
// executor and postgres engine the worker runs, each under the CPU
// profiler, and writes the profiles to path and path.restore
// (go tool pprof -top path).
func (b *bench) profileBackup(ctx context.Context, db *dbInfo, level, path string) error {
	x, err := executor.New(executor.Config{
		Bucket: b.capsule.Bucket, Engines: engines.NewRegistry(postgres.New()), Worker: "pgbench-profile",
		Compression: level,
		Sources: sources{
			"pg":         {Name: "pg", Engine: "postgres", Config: b.source(db.Name)},
			"pg-restore": {Name: "pg-restore", Engine: "postgres", Config: b.source(capsuleTarget)},
		},
	})
	if err != nil {
		return err
	}
	backup := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Cluster: "bench", Source: "pg"}
	if err := profileRun(ctx, x, backup, db.Name+" backup ("+level+")", path); err != nil {
		return err
	}
	if err := b.dropLike(ctx, capsuleTarget); err != nil {
		return err
	}
	defer b.dropLike(context.Background(), capsuleTarget)
	restore := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindRestore, ID: requests.NewID(), BackupID: backup.ID, Target: "pg-restore", DropPrevious: true}
	return profileRun(ctx, x, restore, db.Name+" restore", path+".restore")
}

func profileRun(ctx context.Context, x *executor.Executor, req *requests.Request, what, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	start := time.Now()
	out := x.Run(ctx, req, 1, executor.NewTracker())
	wall := time.Since(start)
	pprof.StopCPUProfile()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	if out.Result.Status != requests.StatusSucceeded {
		return fmt.Errorf("in-process %s: %s: %s", what, out.Result.Status, out.Result.Error)
	}
	if err := x.Commit(ctx, out); err != nil {
		return err
	}
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	fmt.Printf("in-process %s under the CPU profiler: %s wall, %s CPU in this process (%.2f cores), profile %s\n",
		what, benchkit.Secs(wall), benchkit.Secs(cpu), cpu.Seconds()/wall.Seconds(), path)
	return nil
}
