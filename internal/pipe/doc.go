// Package pipe holds what capsule does to the pipes between it and the
// tools it runs (pg_dump, mysqldump, ...): a tool writes up to a
// megabyte ahead of its reader instead of 64 KiB, so the reader wakes far
// less often.
package pipe
