package postgres

import (
	"context"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"
)

// What a database beside a target is: the kinds in sideName.
const (
	kindRestore = "restore"
	kindPrev    = "prev"
	kindVerify  = "verify"
)

// A side or scratch database carries a comment naming the request and
// attempt that staged it, in full: its name may hold only a hash of the
// id.
const stagingCommentPrefix = "capsule staging:"

func stagingComment(kind, id string, attempt int) string {
	return stagingCommentPrefix + " kind=" + kind + " request=" + id + " attempt=" + strconv.Itoa(attempt)
}

// parseStagingComment reads a stagingComment; ok is false for any other
// text.
func parseStagingComment(c string) (kind, id string, attempt int, ok bool) {
	rest, ok := strings.CutPrefix(c, stagingCommentPrefix+" ")
	if !ok {
		return "", "", 0, false
	}
	f := strings.Fields(rest)
	if len(f) != 3 {
		return "", "", 0, false
	}
	kind, ok1 := strings.CutPrefix(f[0], "kind=")
	id, ok2 := strings.CutPrefix(f[1], "request=")
	num, ok3 := strings.CutPrefix(f[2], "attempt=")
	attempt, err := strconv.Atoi(num)
	if !ok1 || !ok2 || !ok3 || err != nil || attempt < 1 || id == "" || (kind != kindRestore && kind != kindVerify) {
		return "", "", 0, false
	}
	return kind, id, attempt, true
}

// sweep drops the side and scratch databases on the server that no
// attempt will swap in or check: those of this request's earlier
// attempts (a successor never reuses them; a paused predecessor that
// wakes finds its side database gone and fails), and those of other
// requests that the bucket says are over (job.StaleStaging). A database
// counts as capsule's only when its name is a side or scratch name and
// its comment names the request and attempt that name was made from.
// The databases a swap kept as previous are never touched.
func (r *run) sweep(ctx context.Context) error {
	attempt := r.rj.AttemptNumber()
	log := r.j.log
	drop := func(db, id string, a int, why string) {
		if err := r.dropDatabase(ctx, db); err != nil {
			log.WithFields(logrus.Fields{"database": db, "error": err.Error()}).Warn("could not drop an abandoned side database")
			return
		}
		log.WithFields(logrus.Fields{"database": db, "request_id": id, "staged_by_attempt": a, "why": why}).Info("dropped an abandoned side database")
	}
	// This request's earlier attempts: their names are known.
	for _, t := range r.targets {
		base := t.live
		if t.kind == kindVerify {
			base = t.b.Name
		}
		for a := 1; a < attempt; a++ {
			side := sideName(base, t.kind, r.rj.ID, a)
			left, err := r.exists(ctx, side)
			if err != nil {
				return err
			}
			if left {
				drop(side, r.rj.ID, a, "an earlier attempt of this request")
			}
		}
	}
	// Other requests' (and anything the names above missed): by comment.
	rows, err := r.conn.Query(ctx, `SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database
		WHERE strpos(datname, '_capsule_restore_') > 0 OR strpos(datname, '_capsule_verify_') > 0 ORDER BY datname`)
	if err != nil {
		log.WithField("error", err.Error()).Warn("could not list side databases to sweep")
		return nil
	}
	type side struct{ name, comment string }
	found, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (side, error) {
		var s side
		return s, row.Scan(&s.name, &s.comment)
	})
	if err != nil {
		log.WithField("error", err.Error()).Warn("could not list side databases to sweep")
		return nil
	}
	for _, s := range found {
		kind, id, a, ok := parseStagingComment(s.comment)
		if !ok || !strings.HasSuffix(s.name, sideSuffix(kind, id, a)) {
			continue
		}
		if id == r.rj.ID {
			if a < attempt {
				drop(s.name, id, a, "an earlier attempt of this request")
			}
			continue
		}
		stale, err := r.rj.IsStale(ctx, id, a)
		if err != nil {
			log.WithFields(logrus.Fields{"database": s.name, "error": err.Error()}).Warn("cannot tell whether a side database is abandoned; leaving it")
			continue
		}
		if stale {
			drop(s.name, id, a, "its request is over or another attempt holds it")
		}
	}
	return nil
}

// earlierPrevious lists the databases this request's earlier attempts
// renamed aside: an attempt that swapped and died before its result
// leaves the target's former content there.
func (r *run) earlierPrevious(ctx context.Context) []string {
	var out []string
	for _, t := range r.targets {
		for a := 1; a < r.rj.AttemptNumber(); a++ {
			prev := sideName(t.live, kindPrev, r.rj.ID, a)
			if ok, err := r.exists(ctx, prev); err == nil && ok {
				out = append(out, prev)
			}
		}
	}
	return out
}
