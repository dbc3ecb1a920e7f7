package postgres

import (
	"context"
	"slices"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// TestSweepAbandonedSideDatabases: a restore drops the side and scratch
// databases on its server that the bucket says are abandoned (their
// request is over, or a later attempt holds it), and those of its own
// request's earlier attempts; it keeps a side database whose request
// still runs, a database that only looks like one (no comment naming its
// request, or a comment that does not match its name), and every
// previous database.
func TestSweepAbandonedSideDatabases(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	svc := &service{db: db}
	db.exec(ctx, t, "", `CREATE TABLE t (v text)`, `INSERT INTO t VALUES ('live')`)
	store, info := enginetest.Backup(ctx, t, New(), svc.Source(t))

	admin := adminConnect(ctx, t, "postgres")
	defer admin.Close(ctx)
	create := func(name, comment string) string {
		mustExec(ctx, t, admin, `CREATE DATABASE `+ident(name)+` OWNER `+ident(db.name))
		if comment != "" {
			mustExec(ctx, t, admin, `COMMENT ON DATABASE `+ident(name)+` IS `+literal(comment))
		}
		return name
	}
	const self = "sweeper01"
	finished := create(sideName(db.name, kindRestore, "finished-req", 1), stagingComment(kindRestore, "finished-req", 1))
	overtaken := create(sideName(db.name, kindVerify, "overtaken.req", 2), stagingComment(kindVerify, "overtaken.req", 2))
	running := create(sideName(db.name, kindRestore, "running-req", 1), stagingComment(kindRestore, "running-req", 1))
	mine := create(sideName(db.name, kindRestore, self, 1), "")
	uncommented := create(sideName(db.name, kindRestore, "finished-req", 2), "")
	mismatched := create(db.name+"_capsule_restore_other_a1", stagingComment(kindRestore, "finished-req", 3))
	prev := create(sideName(db.name, kindPrev, "finished-req", 1), stagingComment(kindRestore, "finished-req", 1))

	var asked []string
	job := store.RestoreJob(t, "sweep", svc.Source(t), info, engines.RestoreOptions{})
	job.ID, job.Attempt = self, 2
	job.StaleStaging = func(_ context.Context, id string, attempt int) (bool, error) {
		asked = append(asked, id)
		switch id {
		case "finished-req":
			return true, nil // it has a result
		case "overtaken.req":
			return attempt < 3, nil // attempt 3 holds the lease
		}
		return false, nil
	}
	if _, err := New().Restore(ctx, job); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	have := db.databases(ctx, t, admin, "")
	for _, gone := range []string{finished, overtaken, mine} {
		if slices.Contains(have, gone) {
			t.Errorf("abandoned side database %s was not dropped", gone)
		}
	}
	for _, kept := range []string{running, uncommented, mismatched, prev} {
		if !slices.Contains(have, kept) {
			t.Errorf("database %s was dropped; it is not abandoned staging", kept)
		}
	}
	if slices.Contains(asked, self) {
		t.Errorf("the bucket was asked about the restore's own request: %v", asked)
	}
}
