package benchkit

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
)

// Sources is an executor.Sources of fixed sources.
type Sources map[string]engines.Source

// Lookup implements executor.Sources.
func (s Sources) Lookup(name string) (engines.Source, error) {
	src, ok := s[name]
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
	}
	return src, nil
}

// ProfileRun runs req in this process through x under the CPU profiler,
// writes the profile to path (go tool pprof -top path), commits the run
// and prints its wall and CPU time.
func ProfileRun(ctx context.Context, x *executor.Executor, req *requests.Request, what, path string) error {
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
		what, Secs(wall), Secs(cpu), cpu.Seconds()/wall.Seconds(), path)
	return nil
}
