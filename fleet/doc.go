// Package fleet runs one watcher per bucket and follows a changing set of
// buckets: a worker that serves every bucket some CnvrgApp names (see the
// scanner package) starts a watcher when a bucket appears and stops it,
// gracefully, when the bucket is gone, without a restart.
//
// The set comes from a Set (scanner.Scanner is one) merged with fixed
// buckets (the worker's configured bucket); a bucket of the Set replaces a
// fixed one with the same key. A key whose bucket value changes gets a
// fresh watcher on the new value.
//
// New is given each bucket's key so that its runner serves that bucket's
// sources only: the scanner keys a bucket by its URL and the credentials
// that configured it, and scanner.Scanner.Sources(key) are the sources of
// the plans behind that key (a tenant's bucket never serves another
// tenant's sources, nor the worker's own).
package fleet
