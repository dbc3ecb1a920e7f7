package enginetest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// WatchArgv scans every process's argv (/proc/*/cmdline) for secret
// every interval until the returned stop is called, and fails the test
// for each sighting. A secret must never reach a child process's argv,
// where any user of the machine can read it. stop also fails the test if
// no scan ran, so the check cannot pass by doing nothing.
func WatchArgv(t testing.TB, secret string, interval time.Duration) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	finished := make(chan struct{})
	scans := 0
	go func() {
		defer close(finished)
		for {
			paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range paths {
				if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(secret)) {
					t.Errorf("the secret shows in the argv of %s: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
				}
			}
			scans++
			select {
			case <-done:
				return
			case <-time.After(interval):
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		if scans == 0 {
			t.Errorf("no scan of /proc ran")
		}
	}
}
