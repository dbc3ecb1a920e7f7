package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/requests"
)

// TestRestoreSaysWhatItDidToTheTarget is what issue #16 asks of a
// restore's result, on the real server: a backup reports the database's
// size as its progress estimate; a restore over a database with two open
// sessions names the kept previous database and says it ended those two
// sessions; ListPrevious finds the kept database (and not a lookalike of
// another database), and DropPrevious removes it and refuses any other
// name.
func TestRestoreSaysWhatItDidToTheTarget(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	db.exec(ctx, t, "", `CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g`)
	e := New()
	store := enginetest.NewStore()
	var estimate int64
	info, err := e.Backup(ctx, &engines.BackupJob{ID: "b1", Source: db.source(), Artifacts: store, SizeHint: func(n int64) { estimate = n }})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if size := db.value(ctx, t, "", `SELECT pg_database_size(current_database())::text`); fmt.Sprint(estimate) != size {
		t.Errorf("backup estimated %d bytes; the database has %s", estimate, size)
	}

	// Two sessions stay open on the target during the restore.
	for range 2 {
		c := adminConnect(ctx, t, db.name)
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	id := strings.ToLower(requests.NewID())
	job := store.RestoreJob(t, id, db.source(), *info, engines.RestoreOptions{})
	job.ID = id // a request id as capsule makes them: it dates the kept copy
	res, err := e.Restore(ctx, job)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	prev := sideName(db.name, kindPrev, id, 1)
	if res.Previous != prev {
		t.Errorf("Previous %q, want %q", res.Previous, prev)
	}
	if n, _ := res.Details["sessionsEnded"].(int64); n < 2 {
		if f, ok := res.Details["sessionsEnded"].(float64); !ok || f < 2 {
			t.Errorf("details.sessionsEnded = %v (%T), want at least the 2 open sessions", res.Details["sessionsEnded"], res.Details["sessionsEnded"])
		}
	}

	// A lookalike: another database's kept copy, same request id.
	other := sideName(db.name+"x", kindPrev, id, 1)
	admin := adminConnect(ctx, t, "postgres")
	defer admin.Close(ctx)
	mustExec(ctx, t, admin, `CREATE DATABASE `+ident(other))
	kept, err := e.ListPrevious(ctx, db.source())
	if err != nil {
		t.Fatalf("ListPrevious: %v", err)
	}
	if len(kept) != 1 || kept[0].Name != prev || kept[0].Attempt != 1 || kept[0].KeptAt.IsZero() {
		t.Fatalf("ListPrevious: %+v, want only %s with its time", kept, prev)
	}
	if err := e.DropPrevious(ctx, db.source(), other); err == nil || !strings.Contains(err.Error(), "not a previous database kept for source") {
		t.Errorf("DropPrevious of another database's copy: %v", err)
	}
	if err := e.DropPrevious(ctx, db.source(), db.name); err == nil {
		t.Errorf("DropPrevious of the live database succeeded")
	}
	if err := e.DropPrevious(ctx, db.source(), prev); err != nil {
		t.Fatalf("DropPrevious: %v", err)
	}
	if left := db.databases(ctx, t, admin, "_capsule_prev_"); len(left) != 0 {
		t.Errorf("kept databases left after DropPrevious: %v", left)
	}
	if got := db.value(ctx, t, "", `SELECT count(*)::text FROM t`); got != "1000" {
		t.Errorf("the restored database holds %s rows, want 1000", got)
	}
	if got := db.value(ctx, t, "postgres", `SELECT count(*)::text FROM pg_database WHERE datname = $1`, other); got != "1" {
		t.Errorf("the lookalike %s was dropped", other)
	}
}
