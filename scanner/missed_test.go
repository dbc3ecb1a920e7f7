package scanner

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/requests"
)

// TestMissedSlotIsReported runs one plan's passes at chosen instants: the
// first slot's backup is submitted; a pass two periods later (the
// scanner was down through the second slot) submits the third slot's and
// reports the second as missed; a pass in the next slot, the previous
// one having run, reports nothing.
func TestMissedSlotIsReported(t *testing.T) {
	fb, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	var events []Event
	log := logrus.New()
	log.Out = t.Output()
	s := &Scanner{cfg: Config{Events: func(e Event) { events = append(events, e) }}, log: log}
	sched, err := ParseSchedule("1h")
	if err != nil {
		t.Fatal(err)
	}
	p := Plan{Name: "ns-app-pg", Cluster: "ns/app", Engine: "postgres", Schedule: sched}
	st := &planState{pending: map[string]time.Time{}}
	t0 := time.Date(2026, 3, 1, 10, 5, 0, 0, time.UTC)
	missed := func() []Event {
		var m []Event
		for _, e := range events {
			if e.Type == EventMissed {
				m = append(m, e)
			}
		}
		events = nil
		return m
	}
	ctx := context.Background()
	s.runPlan(ctx, b, p, st, t0)
	if m := missed(); len(m) != 0 {
		t.Fatalf("first pass reported %v", m)
	}
	s.runPlan(ctx, b, p, st, t0.Add(2*time.Hour))
	m := missed()
	want := requests.SlotID(p.Name, time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC))
	if len(m) != 1 || m[0].ID != want || m[0].Plan != p.Name || m[0].Err == nil {
		t.Fatalf("after a skipped slot: %+v, want one missed event for %s", m, want)
	}
	s.runPlan(ctx, b, p, st, t0.Add(3*time.Hour))
	if m := missed(); len(m) != 0 {
		t.Errorf("a pass after a slot that ran reported %+v", m)
	}
}
