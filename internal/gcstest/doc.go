// Package gcstest runs a Google Cloud Storage emulator (fake-gcs-server,
// in memory) for tests: Start gives a test its own server, Shared one
// server per test process, and (*Server).NewBucket a fresh, empty bucket.
//
// The binary is found through $CAPSULE_FAKE_GCS_SERVER, then
// <repo>/.tools/bin/fake-gcs-server (scripts/install-tools.sh puts it
// there), then $PATH. When it is missing the test fails with the command
// that installs it, unless CAPSULE_SKIP_GCS=1, when it is skipped.
//
// Real looks up a real bucket for the tests that an emulator cannot
// prove (CAPSULE_TEST_GCS_BUCKET, with Application Default Credentials).
package gcstest
