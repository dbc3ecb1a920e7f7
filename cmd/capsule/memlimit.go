package main

import (
	"os"
	"runtime/debug"
)

// Soft memory limit of a worker (debug.SetMemoryLimit), unless GOMEMLIMIT
// is set (GOMEMLIMIT=off: none). The Go runtime otherwise lets the heap
// grow to twice what was live at the last collection: a backup keeps
// about 15 MiB live beside the worker's 6 MiB (an upload's two 5 MiB
// parts, the zstd encoder's 1 MiB history and 2 MiB of tables and blocks,
// the 1 MiB pipe read), and issue 20 gives the worker 100 MiB of peak RSS,
// of which about 65 MiB are its binary's pages. The limit is memLimitBase
// plus memLimitPerRequest for each request the worker runs at once
// (worker.concurrency): 36 MiB for one, 58 MiB for the default two. It is
// soft: a request that needs more (an object beyond 7.8 GB, whose parts
// grow) gets it, at the cost of more frequent collections. A worker that
// also serves the API (--listen) or streams WAL holds caches and buffers
// this budget does not count; a limit below its live heap would keep the
// collector running (up to half the CPU), so such a worker sets none.
const (
	memLimitBase       = 14 << 20
	memLimitPerRequest = 22 << 20
)

// workerMemoryLimit is the soft limit for a worker running concurrency
// requests at once.
func workerMemoryLimit(concurrency int) int64 {
	return memLimitBase + int64(max(1, concurrency))*memLimitPerRequest
}

// setWorkerMemoryLimit applies workerMemoryLimit to a worker that only
// runs requests (requestsOnly), unless the environment sets GOMEMLIMIT
// (which the runtime applied at start), and returns the limit in effect
// (math.MaxInt64: none).
func setWorkerMemoryLimit(concurrency int, requestsOnly bool) int64 {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok || !requestsOnly {
		return debug.SetMemoryLimit(-1)
	}
	limit := workerMemoryLimit(concurrency)
	debug.SetMemoryLimit(limit)
	return limit
}
