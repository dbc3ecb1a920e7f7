// Package benchkit is what the benchmark programs under bench/ share: a
// versitygw S3 server started for the run (StartS3), the capsule binary
// built from this checkout (Build), one request run by a real `capsule
// worker --once` process with the worker's own peak RSS read from
// /proc/<pid>/status (Capsule.Run), timed external commands (Time),
// the machine's description and load (Machine, LoadAvg) and the result
// table (Table).
//
// It is not a test helper: nothing here needs a testing.TB, and the
// programs that use it are run by hand (make bench), never by CI.
package benchkit
