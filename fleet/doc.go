// Package fleet runs one watcher per bucket and follows a changing set of
// buckets: a worker that serves every bucket some CnvrgApp names (see the
// scanner package) starts a watcher when a bucket appears and stops it,
// gracefully, when the bucket is gone, without a restart.
//
// The set comes from a Set (scanner.Scanner is one) merged with fixed
// buckets (the worker's configured bucket); a bucket of the Set replaces a
// fixed one with the same key. A key whose bucket value changes (its
// Secret was rotated) gets a fresh watcher on the new value.
package fleet
