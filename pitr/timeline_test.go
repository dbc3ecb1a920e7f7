package pitr_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
)

// A restore to a time after a promotion (the source's timeline 1 ended,
// timeline 2 began) recovers the markers of both timelines up to that
// time: the stream stored timeline 2's history, and the restore
// followed it from the base backup taken on timeline 1. When no stream
// ran across the promotion, the next one fetches the rest of timeline 1
// from the server first.
func TestRestoreAcrossPromotion(t *testing.T) {
	t.Run("streaming", func(t *testing.T) { restoreAcrossPromotion(t, false) })
	t.Run("stream down", func(t *testing.T) { restoreAcrossPromotion(t, true) })
}

func restoreAcrossPromotion(t *testing.T, down bool) {
	f := newPITRFixture(t)
	if down {
		f.r.stop()
	}
	before := writeMarkers(t, f.srv, "app", 10, 50*time.Millisecond)
	if down {
		// Timeline 1 goes on in a later segment than the bucket's last.
		execPG(t, f.srv, `SELECT pg_switch_wal()`)
		writeMarkers(t, f.srv, "app", 0, 0)
	} else {
		f.r.waitFor(t, currentLSN(t, f.srv))
	}

	// The server becomes a standby of nothing and is promoted: a
	// failover's new timeline, on the same data.
	if err := f.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.srv.Dir, "standby.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Own(filepath.Join(f.srv.Dir, "standby.signal")); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Start(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	execPG(t, f.srv, `SELECT pg_promote(true, 60)`)
	after := writeMarkers(t, f.srv, "app", 20, 100*time.Millisecond)
	if down {
		f.r = runStream(t, f.b, f.src, "w2", 6*time.Second)
	}
	f.r.waitFor(t, currentLSN(t, f.srv))

	ctx := context.Background()
	if _, err := f.b.Head(ctx, pitr.HistoryKey(cluster, "pg", 2)); err != nil {
		t.Fatalf("timeline 2's history is not in the bucket: %v", err)
	}
	segs, err := pitr.ListSegments(ctx, f.b, cluster, "pg")
	if err != nil || len(segs) == 0 || segs[len(segs)-1].Timeline != 2 {
		t.Fatalf("WAL objects %v (%v): want timeline 2's last", segs, err)
	}

	w, err := pitr.RecoverableWindow(ctx, f.b, cluster, "pg", nil)
	if err != nil || w == nil || w.Timeline != 2 || w.Latest.Before(after[len(after)-1].at) {
		t.Fatalf("window %+v (%v): want it to reach the last marker on timeline 2", w, err)
	}

	k := 12
	target := after[k].at.Add(after[k+1].at.Sub(after[k].at) / 2)
	res, err := pitr.Restore(ctx, pitr.RestoreConfig{
		Bucket: f.b, Cluster: cluster, Source: "pg", Target: pitr.Target{Time: target},
		Into: &f.src, ID: requests.NewID(), Log: enginetest.TestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored %+v", res)
	if res.Timeline != 2 {
		t.Errorf("restore followed timeline %d, want 2", res.Timeline)
	}
	var want []int
	for _, m := range append(before, after[:k+1]...) {
		want = append(want, m.id)
	}
	ids := markerIDs(t, f.srv, "app")
	if len(ids) != len(want) || ids[len(ids)-1] != want[len(want)-1] || ids[len(before)-1] != before[len(before)-1].id {
		t.Fatalf("restored markers %v, want %v (target %s)", ids, want, target)
	}
	if down {
		return
	}

	// A base backup taken on timeline 2 restores too, its timeline's
	// history along.
	baseBackup(t, f.b, f.src)
	more := writeMarkers(t, f.srv, "app", 3, 0)
	f.r.waitFor(t, currentLSN(t, f.srv))
	res, err = pitr.Restore(ctx, pitr.RestoreConfig{
		Bucket: f.b, Cluster: cluster, Source: "pg", Target: pitr.Target{Latest: true},
		Into: &f.src, ID: requests.NewID(), Log: enginetest.TestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if ids := markerIDs(t, f.srv, "app"); res.Timeline != 2 || len(ids) != len(want)+len(more) || ids[len(ids)-1] != more[len(more)-1].id {
		t.Fatalf("latest from the base backup on timeline 2 (%+v): markers %v, want %v then %v", res, ids, want, more)
	}
}
