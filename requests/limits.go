package requests

// The size limits of control objects (requests, leases, results, cancels
// and the locks of maintenance jobs). Anyone who can write to the bucket
// can write any of them, so a reader never takes one whole without a
// limit: a larger object is refused from the size the bucket reports and
// treated as damaged (a request is rejected, a lease or lock expires by
// the reader's rules).
const (
	// DefaultMaxControlObject is the limit unless the worker's
	// configuration sets another (worker.maxControlObject): 1 MiB, far
	// above any object capsule writes itself (a few KiB).
	DefaultMaxControlObject int64 = 1 << 20
	// MinControlObjectLimit and MaxControlObjectLimit bound the setting:
	// low enough that a worker reading one object per running job never
	// runs out of memory, high enough for every legitimate object.
	MinControlObjectLimit int64 = 64 << 10
	MaxControlObjectLimit int64 = 64 << 20
)
