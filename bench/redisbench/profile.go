package main

import (
	"context"
	"fmt"

	"github.com/cnvrg/capsule/bench/internal/benchkit"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/redis"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
)

// profileModes backs up and restores once per mode in this process,
// through the executor and redis engine the worker runs, each under the
// CPU profiler (go tool pprof -top FILE.<mode>.backup).
func profileModes(ctx context.Context, c *benchkit.Capsule, dst *redisServer, modes []string, path string) error {
	srcs := benchkit.Sources{}
	for name, cfg := range c.Sources {
		settings := map[string]any{}
		for k, v := range cfg {
			if k != "engine" {
				settings[k] = v
			}
		}
		srcs[name] = engines.Source{Name: name, Engine: "redis", Config: settings}
	}
	x, err := executor.New(executor.Config{
		Bucket: c.Bucket, Engines: engines.NewRegistry(redis.New()), Worker: "redisbench-profile",
		Compression: executor.DefaultCompression, Sources: srcs,
	})
	if err != nil {
		return err
	}
	for _, mode := range modes {
		name := "redis"
		if mode == "rdb" {
			name = "redis-rdb"
		}
		backup := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Cluster: "bench", Source: name}
		if err := benchkit.ProfileRun(ctx, x, backup, "backup ("+mode+")", path+"."+mode+".backup"); err != nil {
			return err
		}
		if err := dst.do(ctx, "FLUSHALL"); err != nil {
			return err
		}
		restore := &requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindRestore, ID: requests.NewID(), BackupID: backup.ID, Cluster: "bench", Target: "redis-target"}
		if err := benchkit.ProfileRun(ctx, x, restore, "restore ("+mode+")", path+"."+mode+".restore"); err != nil {
			return err
		}
		if n, err := dst.dbsize(ctx); err != nil || n == 0 {
			return fmt.Errorf("restore (%s): the target holds %d keys (%v)", mode, n, err)
		}
	}
	return nil
}
