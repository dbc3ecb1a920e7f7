package executor

import (
	"io"
	"testing"

	"github.com/sirupsen/logrus"
)

// chanHook hands log entries to a channel, dropping those that find it
// full: a logger must never block on its hook (a blocked send would keep
// logEvery from ever seeing stop).
type chanHook chan *logrus.Entry

func (h chanHook) Levels() []logrus.Level { return logrus.AllLevels }
func (h chanHook) Fire(e *logrus.Entry) error {
	select {
	case h <- e:
	default:
	}
	return nil
}

// TestWorkerLogsProgress is what a worker's log says about a long run:
// a "progress" line with the percentage of the known total, the rate and
// the time left; and a second pass over the artifacts (Redis checks,
// then loads) counts from zero again, as pass 2.
func TestWorkerLogsProgress(t *testing.T) {
	tr := NewTracker()
	tr.Phase("restore")
	tr.Expect(1000, false)
	tr.Artifact("dump")
	tr.Bytes(250, 100)

	log := logrus.New()
	log.SetOutput(io.Discard)
	entries := make(chanHook, 16)
	log.AddHook(entries)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { tr.logEvery(1, log, stop); close(done) }()
	e := <-entries
	close(stop)
	<-done
	if e.Message != "progress" || e.Data["percent"] != 25.0 || e.Data["total_bytes"] != int64(1000) || e.Data["artifact"] != "dump" {
		t.Errorf("progress line: %s %v", e.Message, e.Data)
	}
	if _, ok := e.Data["bytes_per_second"]; !ok {
		t.Errorf("progress line without a rate: %v", e.Data)
	}
	if _, ok := e.Data["eta"]; !ok {
		t.Errorf("progress line without the time left: %v", e.Data)
	}

	tr.Bytes(750, 300)
	tr.Artifact("dump") // opened again: the load pass
	tr.Bytes(100, 0)
	p := tr.Snapshot()
	if pct, _ := p.Percent(); p.Pass != 2 || p.Bytes != 100 || pct != 10 {
		t.Errorf("second pass: pass %d, bytes %d, %.0f%%; want pass 2, 100 bytes, 10%%", p.Pass, p.Bytes, pct)
	}
}
