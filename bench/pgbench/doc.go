// Command pgbench measures capsule's PostgreSQL backup and restore against
// pg_dump and pg_restore on the same database, in one run:
//
//	go run ./bench/pgbench [-size 2.4GB | -sizes 0.5GB,2.4GB] [-compression zstd-fastest,zstd] [-rebuild] [-runs N]
//
// It builds a database of the given size on disk (server-side, with
// INSERT … SELECT generate_series: pgbench's four tables, which compress
// about 100× with zstd, beside tables of jsonb events, word-drawn
// documents and numbers that compress 3–5×, about 6× overall), or reuses
// the one a previous run built: a marker table records the recipe's
// version and the target size (-rebuild forces a new one). The databases
// are named capsule_bench_<MB>mb and are kept between runs (-drop removes
// them at the end).
//
// Then it starts a versitygw, builds ./cmd/capsule (or takes -capsule),
// and measures side by side: pg_dump -Fc -Z0 to /dev/null, pg_dump -Fc
// -f FILE, pg_dump -Fc -Z0 | zstd -T2 -3, capsule backup for each
// -compression setting, pg_dump -Fd -j2, pg_restore of the FILE (alone,
// and followed by ANALYZE), pg_restore of the uncompressed archive read
// from a pipe followed by ANALYZE (what capsule's engine runs), pg_restore
// -j2 of the directory, and capsule restore into a new database. Every
// restored database's row counts are checked against the source's.
//
// Capsule rows are real `capsule worker --once` processes: the request is
// submitted to the bucket, the worker started, and its wall time runs
// until it exits; its peak RSS is its own VmHWM, sampled from
// /proc/<pid>/status every 10 ms (pg_dump and pg_restore are not
// counted). With -sizes the peak RSS is compared across sizes.
//
// -cpuprofile FILE replaces the table with one backup and one restore run
// in this process (the same executor and engine) under the CPU profiler,
// written to FILE and FILE.restore.
package main
