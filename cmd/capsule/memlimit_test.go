package main

import (
	"math"
	"os"
	"runtime/debug"
	"testing"
)

func TestWorkerMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		concurrency int
		mib         int64
	}{{0, 36}, {1, 36}, {2, 58}, {4, 102}} {
		if got := workerMemoryLimit(c.concurrency) >> 20; got != c.mib {
			t.Errorf("concurrency %d: %d MiB, want %d", c.concurrency, got, c.mib)
		}
	}
}

// TestSetWorkerMemoryLimit: the worker sets its soft limit, unless
// GOMEMLIMIT is set, which the runtime has already applied.
func TestSetWorkerMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })

	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")
	debug.SetMemoryLimit(math.MaxInt64)
	if got := setWorkerMemoryLimit(2, false); got != math.MaxInt64 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Errorf("a worker that also serves or streams: returned %d, in effect %d, want no limit", got, debug.SetMemoryLimit(-1))
	}
	if got := setWorkerMemoryLimit(2, true); got != 58<<20 || debug.SetMemoryLimit(-1) != 58<<20 {
		t.Errorf("without GOMEMLIMIT: returned %d, in effect %d, want %d", got, debug.SetMemoryLimit(-1), 58<<20)
	}

	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetMemoryLimit(1 << 30) // as the runtime did at start
	if got := setWorkerMemoryLimit(2, true); got != 1<<30 || debug.SetMemoryLimit(-1) != 1<<30 {
		t.Errorf("with GOMEMLIMIT=1GiB: returned %d, in effect %d, want it left at 1 GiB", got, debug.SetMemoryLimit(-1))
	}
}
