// Package s3test runs a real S3 server (versitygw with its posix backend) for
// tests: Start gives a test its own server, Shared one server per test
// process, and (*Server).NewBucket a fresh, empty bucket.
//
// The binary is found through $CAPSULE_VERSITYGW, then
// <repo>/.tools/bin/versitygw (scripts/install-tools.sh puts it there), then
// $PATH. When it is missing the test fails with the command that installs it,
// unless CAPSULE_SKIP_S3=1, when it is skipped.
package s3test
