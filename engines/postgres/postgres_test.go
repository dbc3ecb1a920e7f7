package postgres

import (
	"context"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// service is the round-trip suite's view of a test database: many types,
// a second schema, three tables of at least 100,000 rows, a sequence,
// views, functions, large objects and the pgcrypto extension.
type service struct{ db *testDB }

func (s *service) Source(*testing.T) engines.Source { return s.db.source() }

func (s *service) Seed(ctx context.Context, t *testing.T) {
	s.db.recreate(ctx, t)
	s.db.exec(ctx, t, "", seedSQL)
}

func (s *service) Snapshot(ctx context.Context, t *testing.T) any {
	return s.db.snapshot(ctx, t, "")
}

func (s *service) Damage(ctx context.Context, t *testing.T) {
	s.db.exec(ctx, t, "",
		`DROP TABLE sales.items`,
		`UPDATE public.big SET payload = 'damaged' WHERE id <= 100`,
		`DROP VIEW sales.order_totals`,
		`SELECT lo_unlink(body) FROM public.docs WHERE id = 1`,
		`SELECT setval('sales.invoice_seq', 5)`,
	)
}

func TestSuite(t *testing.T) {
	db := newTestDB(t)
	enginetest.Run(t, New(), &service{db: db}, enginetest.Options{Compare: compareSnapshots})
	t.Run("NoSideDatabaseRemains", func(t *testing.T) {
		// The corrupt, canceled and verification cases above must have
		// removed their side and scratch databases.
		if left := db.leftovers(context.Background(), t); len(left) > 0 {
			t.Fatalf("side or scratch databases remain: %v", left)
		}
	})
}

// Staging lists the side and scratch databases beside the test's
// (enginetest.StagingLister).
func (s *service) Staging(ctx context.Context, t *testing.T) []string {
	return s.db.leftovers(ctx, t)
}

// SnapshotPrevious snapshots a database a restore kept as previous
// (enginetest.PreviousSnapshotter).
func (s *service) SnapshotPrevious(ctx context.Context, t *testing.T, previous string) any {
	return s.db.snapshot(ctx, t, previous)
}
