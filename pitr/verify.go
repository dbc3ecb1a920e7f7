package pitr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/internal/pgserver"
	"github.com/jackc/pglogrepl"
	"github.com/sirupsen/logrus"
)

// Verifiers are the executor's verifiers of the formats this package
// recovers (executor.Config.FormatVerifiers): base backups.
func Verifiers() map[string]executor.FormatVerify {
	return map[string]executor.FormatVerify{postgres.FormatBase: VerifyBase}
}

// VerifyScratch is where VerifyBase runs its temporary server: the
// environment variable CAPSULE_SCRATCH when set, else the system's
// temporary directory. It needs room for the whole cluster.
func VerifyScratch() string { return os.Getenv("CAPSULE_SCRATCH") }

// VerifyBase verifies a base backup the way a restore would use it: it
// unpacks the backup on scratch space, stages the source's WAL from the
// bucket up to the backup's stop LSN (each object checked: checksum,
// signature by the job's Trust, decrypted with its identities), replays
// it in a temporary server of the backup's major version (no TCP
// address, a private socket) to the point where the cluster is
// consistent, and checks that the databases and tables recorded at
// backup time are there and that every table reads to its end. Checks:
// "artifact base.tar" (and "artifact <oid>.tar" per tablespace), "wal", "consistency", "databases", and per
// database "tables <db>" and "rows <db>". The temporary server and its
// files are gone when it returns.
func VerifyBase(ctx context.Context, vj *executor.VerifyJob) (*engines.VerifyReport, error) {
	idx, rj := vj.Index, vj.Job
	log := rj.Log
	if log == nil {
		log = engines.DiscardLog()
	}
	d, err := postgres.ReadBaseDetails(rj.Backup)
	if err != nil {
		return nil, err
	}
	start, _ := pglogrepl.ParseLSN(d.StartLSN)
	stop, _ := pglogrepl.ParseLSN(d.StopLSN)
	bb := base{idx: idx, d: d, start: start, stop: stop}
	rep := &engines.VerifyReport{OK: true}
	add := func(name string, err error, detail string) error {
		c := engines.Check{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail, rep.OK = err.Error(), false
		}
		rep.Checks = append(rep.Checks, c)
		return err
	}
	o, err := newOpener(idx.Cluster, idx.Source, vj.Identities, vj.Trust)
	if err != nil {
		return nil, err
	}
	defer o.close()
	segs, err := ListSegments(ctx, vj.Bucket, idx.Cluster, idx.Source)
	if err != nil {
		return nil, err
	}
	span, ok := covering(Spans(segs), bb)
	if !ok {
		return rep, add("wal", fmt.Errorf("the bucket lacks WAL between %s and %s on timeline %d: the backup cannot reach consistency", segStart(start, d.WALSegmentSize), stop, d.Timeline), "")
	}
	if err := precheck(ctx, vj.Bucket, o, bb, span); err != nil {
		return rep, add("wal", err, "")
	}
	bin, err := postgres.BinDir(d.ServerVersionNum)
	if err != nil {
		return rep, add("consistency", err, "")
	}
	scratch, err := os.MkdirTemp(VerifyScratch(), "capsule-verify-")
	if err != nil {
		return nil, fmt.Errorf("scratch space: %w", err)
	}
	defer os.RemoveAll(scratch)
	data := filepath.Join(scratch, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	srv, err := pgserver.New(bin, data, scratch)
	if err != nil {
		return nil, err
	}
	rj.Progress.Report("verify", 0, 3)
	if _, err := unpackBase(ctx, rj.Artifacts, d, data, filepath.Join(scratch, "tablespaces"), func(name string, err error) error {
		detail := "intact: unpacked on scratch space"
		if name != postgres.BaseArtifact {
			detail = "intact: the tablespace unpacked on scratch space, linked from pg_tblspc"
		}
		return add("artifact "+name, err, detail)
	}); err != nil {
		return rep, err
	}
	rj.Progress.Report("verify", 1, 3)
	t := Target{LSN: stop, immediate: true}
	r := route{legs: []leg{{Timeline: span.Timeline, From: segStart(start, d.WALSegmentSize), To: span.End, Span: span}}}
	if err := stageWAL(ctx, vj.Bucket, o, r, bb, t, filepath.Join(data, "pg_wal")); err != nil {
		return rep, add("wal", err, "")
	}
	add("wal", nil, fmt.Sprintf("from %s to the backup's stop LSN %s on timeline %d: every object present and checked", segStart(start, d.WALSegmentSize), stop, d.Timeline))
	if u := idx.SourceInfo["user"]; u != "" {
		srv.User = u
	}
	if err := prepareRecovery(srv, scratch, t, d.Timeline); err != nil {
		return nil, err
	}
	cleanSocket, err := privateServer(srv, scratch)
	defer cleanSocket()
	if err != nil {
		return nil, err
	}
	log.WithFields(logrus.Fields{"stop_lsn": stop.String()}).Info("replaying the base backup to consistency in a temporary server")
	err = srv.Start(ctx, 6*time.Hour)
	if err == nil {
		defer srv.Kill()
		err = waitPromoted(ctx, srv)
	}
	if err != nil {
		if ctx.Err() != nil {
			return rep, err
		}
		return rep, add("consistency", fmt.Errorf("the server did not recover: %w", err), "")
	}
	rj.Progress.Report("verify", 2, 3)
	if err := checkRecovered(ctx, srv, bb, add); err != nil {
		return rep, err
	}
	rj.Progress.Report("verify", 3, 3)
	return rep, nil
}

// checkRecovered runs the checks of a recovered, promoted temporary
// server: consistency reached at the stop LSN, the recorded databases
// and tables there, every table readable.
func checkRecovered(ctx context.Context, srv *pgserver.Server, bb base, add func(string, error, string) error) error {
	conn, err := srv.Connect(ctx, "template1")
	if err != nil {
		return add("consistency", fmt.Errorf("connect to the recovered server: %w", err), "")
	}
	var replayed, super string
	err = conn.QueryRow(ctx, `SELECT coalesce(pg_last_wal_replay_lsn()::text, ''), (SELECT rolname FROM pg_roles WHERE oid = 10)`).Scan(&replayed, &super)
	var have []string
	if err == nil {
		have, err = postgres.ListDatabases(ctx, conn)
	}
	conn.Close(context.Background())
	if err != nil {
		return add("consistency", err, "")
	}
	at, perr := pglogrepl.ParseLSN(replayed)
	if perr != nil || at < bb.stop {
		return add("consistency", fmt.Errorf("recovery ended at %q, before the backup's stop LSN %s", replayed, bb.stop), "")
	}
	add("consistency", nil, fmt.Sprintf("consistent after replaying to %s (the backup's stop LSN %s)", at, bb.stop))
	srv.User = super
	if len(bb.d.Databases) == 0 {
		add("databases", nil, "not checked: the backup recorded none (taken before base backups recorded them, or its role could not list them)")
		return nil
	}
	found := map[string]bool{}
	for _, h := range have {
		found[h] = true
	}
	var missing []string
	for _, db := range bb.d.Databases {
		if !found[db.Name] {
			missing = append(missing, db.Name)
		}
	}
	if len(missing) > 0 {
		return add("databases", fmt.Errorf("%d of %d databases missing: %s", len(missing), len(bb.d.Databases), strings.Join(missing, ", ")), "")
	}
	add("databases", nil, fmt.Sprintf("all %d databases present", len(bb.d.Databases)))
	var failed error
	for _, db := range bb.d.Databases {
		if db.TablesUnknown != "" {
			add("tables "+db.Name, nil, "not checked: "+db.TablesUnknown)
			continue
		}
		if err := checkDatabase(ctx, srv, db, add); err != nil {
			if ctx.Err() != nil {
				return err
			}
			failed = errors.Join(failed, err)
		}
	}
	return failed
}

// checkDatabase checks one recorded database: its tables are there
// ("tables <db>") and each reads to its end ("rows <db>"). Row counts
// are reported, not compared: the backup recorded none.
func checkDatabase(ctx context.Context, srv *pgserver.Server, db postgres.BaseDatabase, add func(string, error, string) error) error {
	conn, err := srv.Connect(ctx, db.Name)
	if err != nil {
		return add("tables "+db.Name, fmt.Errorf("connect: %w", err), "")
	}
	defer conn.Close(context.Background())
	have, err := postgres.ListTables(ctx, conn)
	if err != nil {
		return add("tables "+db.Name, err, "")
	}
	found := map[postgres.BaseTable]bool{}
	for _, h := range have {
		found[h] = true
	}
	var missing []string
	for _, t := range db.Tables {
		if !found[t] {
			missing = append(missing, t.Schema+"."+t.Name)
		}
	}
	if len(missing) > 0 {
		return add("tables "+db.Name, fmt.Errorf("%d of %d tables missing: %s", len(missing), len(db.Tables), clipNames(missing)), "")
	}
	add("tables "+db.Name, nil, fmt.Sprintf("all %d tables present", len(db.Tables)))
	var rows int64
	for _, t := range db.Tables {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM ONLY `+t.Qualified()).Scan(&n); err != nil {
			return add("rows "+db.Name, fmt.Errorf("read %s.%s: %w", t.Schema, t.Name, err), "")
		}
		rows += n
	}
	add("rows "+db.Name, nil, fmt.Sprintf("all %d tables read to their end (%d rows); counts not compared: a base backup is consistent only at its stop LSN, so none were recorded", len(db.Tables), rows))
	return nil
}

func clipNames(s []string) string {
	if len(s) > 5 {
		return strings.Join(s[:5], ", ") + fmt.Sprintf(" and %d more", len(s)-5)
	}
	return strings.Join(s, ", ")
}
