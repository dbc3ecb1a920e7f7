// Package sqstest runs a real SQS server (goaws) for tests: Start gives a
// test its own server, (*Server).NewQueue a fresh queue, and Stop takes
// the server away mid-test to show that nothing depends on it.
//
// The binary is found through $CAPSULE_GOAWS, then <repo>/.tools/bin/goaws
// (scripts/install-tools.sh puts it there), then $PATH. When it is missing
// the test fails with the command that installs it, unless
// CAPSULE_SKIP_SQS=1, when it is skipped.
package sqstest
