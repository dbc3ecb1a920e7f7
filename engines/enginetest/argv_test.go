package enginetest_test

import (
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines/enginetest"
)

// recorder keeps what WatchArgv reports instead of failing the test.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestWatchArgvSeesASecretInAChildsArgv(t *testing.T) {
	secret := fmt.Sprintf("capsule-secret-%d", time.Now().UnixNano())
	rec := &recorder{TB: t}
	stop := enginetest.WatchArgv(rec, secret, time.Millisecond)
	if err := exec.Command("sh", "-c", "sleep 0.3", "sh", secret).Run(); err != nil {
		t.Fatal(err)
	}
	stop()
	if len(rec.errs) == 0 {
		t.Fatal("WatchArgv did not see a secret that was in a child's argv for 300ms")
	}
	rec2 := &recorder{TB: t}
	stop = enginetest.WatchArgv(rec2, secret+"-never-used", time.Millisecond)
	_ = exec.Command("sh", "-c", "sleep 0.1", "sh", "nothing").Run()
	stop()
	if len(rec2.errs) != 0 {
		t.Fatalf("WatchArgv reported a secret nobody used: %v", rec2.errs)
	}
}
