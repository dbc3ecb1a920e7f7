package pitr_test

import (
	"context"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/pitr"
	"github.com/jackc/pglogrepl"
)

func parseLSN(t *testing.T, s string) uint64 {
	t.Helper()
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(l)
}

// The stream writes every byte of WAL, gapless, in objects that never
// span two segments, and the slot moves only as far as the bucket has.
func TestStreamWritesGaplessWAL(t *testing.T) {
	srv := startServer(t)
	b := newBucket(t)
	src := source(srv, "pg")
	r := runStream(t, b, src, "w1", 6*time.Second)
	execPG(t, srv, `CREATE TABLE marks (id serial primary key, at timestamptz default now(), pad text)`)
	for i := 0; i < 20; i++ {
		execPG(t, srv, `INSERT INTO marks (pad) SELECT repeat('x', 1000) FROM generate_series(1, 2000)`)
	}
	execPG(t, srv, `SELECT pg_switch_wal()`)
	execPG(t, srv, `INSERT INTO marks (pad) VALUES ('last')`)
	target := currentLSN(t, srv)
	r.waitFor(t, target)

	ctx := context.Background()
	segs, err := pitr.ListSegments(ctx, b, cluster, "pg")
	if err != nil {
		t.Fatal(err)
	}
	spans := pitr.Spans(segs)
	if len(spans) != 1 {
		t.Fatalf("WAL in %d spans, want 1 with no gap: %+v", len(spans), spans)
	}
	const segSize = 16 << 20
	for _, s := range segs {
		if uint64(s.Start)/segSize != (uint64(s.End)-1)/segSize {
			t.Errorf("%s spans two segments", s.Key)
		}
		if _, err := pitr.ReadSegment(ctx, b, cluster, src.Name, s, nil, nil); err != nil {
			t.Errorf("read %s: %v", s.Key, err)
		}
	}
	if uint64(spans[0].End) < parseLSN(t, target) {
		t.Errorf("bucket ends at %s, before %s", spans[0].End, target)
	}
	st, err := postgres.Slot(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exists || uint64(st.RestartLSN) > uint64(spans[0].End) {
		t.Errorf("slot at %s is past the bucket's end %s", st.RestartLSN, spans[0].End)
	}
	if uint64(st.RestartLSN) < uint64(spans[0].End)-segSize {
		t.Errorf("slot at %s was not advanced to the bucket's end %s", st.RestartLSN, spans[0].End)
	}
}

// With nobody streaming, the slot holds WAL: the guard alerts past
// slotAlertBytes and drops the slot past slotMaxBytes, so the server
// frees its disk.
func TestGuardAlertsThenDropsSlot(t *testing.T) {
	srv := startServer(t)
	src := source(srv, "pg")
	src.Config["slotAlertBytes"] = 8 << 20
	src.Config["slotMaxBytes"] = 40 << 20
	rep, err := postgres.OpenReplication(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rep.EnsureSlot(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep.Close()
	g := &pitr.Guard{Cluster: cluster, Source: src}
	ctx := context.Background()
	grow := func() {
		execPG(t, srv, `CREATE TABLE IF NOT EXISTS filler (pad text)`)
		execPG(t, srv, `INSERT INTO filler SELECT repeat(md5(random()::text), 32) FROM generate_series(1, 10000)`)
		execPG(t, srv, `SELECT pg_switch_wal()`)
	}
	st, err := g.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Alert || st.Dropped {
		t.Fatalf("fresh slot: %+v", st)
	}
	for st.LagBytes < 8<<20 {
		grow()
		if st, err = g.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !st.Alert && !st.Dropped {
		t.Fatalf("lag %d past the alert limit, no alert: %+v", st.LagBytes, st)
	}
	for !st.Dropped {
		grow()
		if st, err = g.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if st.LagBytes > 200<<20 {
			t.Fatalf("lag %d and the slot was not dropped", st.LagBytes)
		}
	}
	after, err := postgres.Slot(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if after.Exists {
		t.Fatal("slot still exists after the guard dropped it")
	}
}
