package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
)

// Restore option keys (RestoreOptions.Extra).
const (
	// OptFunctions says what happens to the target's function libraries:
	// "replace" (default: the backup's libraries replace same-named ones,
	// others stay), "flush" (the target ends with exactly the backup's
	// libraries) or "skip".
	OptFunctions = "functions"
)

// summary is what the checking pass found in an artifact.
type summary struct {
	dbs        []int         // databases the backup holds, in order
	keys       map[int]int64 // keys per database
	functions  bool
	rdbVersion int
	expired    int64         // keys already expired at check time
	expires    map[int]int64 // keys with an expiry per database
	size       int64         // bytes of an RDB file
}

// Restore implements engines.Engine. It reads the artifact twice: the
// first pass checks it to its end (the sha256 the index recorded, the
// framing, every payload's CRC-64, the RDB file's CRC) and touches
// nothing; only then are the backup's databases flushed and the second
// pass replays the keys with RESTORE ... REPLACE ABSTTL.
func (e *Engine) Restore(ctx context.Context, job *engines.RestoreJob) (*engines.RestoreInfo, error) {
	cfg, err := decodeConfig(job.Target)
	if err != nil {
		return nil, err
	}
	artifact, functionsPolicy, err := restorePlan(job)
	if err != nil {
		return nil, err
	}
	pw, err := job.Target.Secret(ctx)
	if err != nil {
		return nil, err
	}
	ep, err := cfg.endpoint(pw)
	if err != nil {
		return nil, err
	}
	log := logger(job.Log, job.Target, job.Backup.SourceInfo["mode"]).WithField("restore_id", job.ID)
	return restoreInto(ctx, job, cfg, ep, artifact, functionsPolicy, nil, log)
}

// restorePlan checks what a restore is asked to do: the artifact it
// reads and what becomes of the target's functions.
func restorePlan(job *engines.RestoreJob) (artifact, functionsPolicy string, err error) {
	switch job.Backup.Format {
	case formatLogical:
		artifact = artifactKeys
	case formatRDB:
		artifact = artifactRDB
	default:
		return "", "", fmt.Errorf("redis cannot restore backup format %q", job.Backup.Format)
	}
	if !slices.Contains(job.Artifacts.Names(), artifact) {
		return "", "", fmt.Errorf("backup has no artifact %s", artifact)
	}
	functionsPolicy = job.Options.Extra[OptFunctions]
	switch functionsPolicy {
	case "":
		functionsPolicy = "replace"
	case "replace", "flush", "skip":
	default:
		return "", "", fmt.Errorf("restore option %s: %q is not replace, flush or skip", OptFunctions, functionsPolicy)
	}
	return artifact, functionsPolicy, nil
}

// restoreInto restores the backup into the server at ep, whose
// databases setting is cfg's: a restore's target, or a verification's
// scratch server. observe, when set, sees every record the second pass
// replays into a restored database (restored false: expired, skipped).
func restoreInto(ctx context.Context, job *engines.RestoreJob, cfg *Config, ep *endpoint, artifact, functionsPolicy string, observe func(rec *record, restored bool), log logrus.FieldLogger) (*engines.RestoreInfo, error) {

	// Pass 1: check the whole artifact; nothing is touched.
	job.Progress.Report("verify", 0, 0)
	sum, err := readArtifact(ctx, job, artifact, false, nil)
	if err != nil {
		return nil, err
	}
	log.WithFields(logrus.Fields{"databases": sum.dbs, "rdb_version": sum.rdbVersion, "functions": sum.functions}).Info("redis backup verified")

	cl := ep.newClient()
	defer cl.Close()
	conn := newDBConn(cl)
	defer conn.Close()
	version, err := serverVersion(ctx, conn)
	if err != nil {
		return nil, err
	}
	targetRDB, err := targetRDBVersion(ctx, conn, version)
	if err != nil {
		return nil, err
	}
	if sum.rdbVersion > targetRDB {
		return nil, fmt.Errorf("the backup holds RDB format version %d (from Redis %s) but the target Redis %s reads only up to version %d: restore into Redis %s or newer",
			sum.rdbVersion, job.Backup.ServerVersion, version, targetRDB, job.Backup.ServerVersion)
	}
	targetDBs, err := databases(ctx, conn)
	if err != nil {
		return nil, err
	}
	backupDBs := sum.dbs
	if job.Backup.Format == formatRDB {
		// The snapshot is the whole dataset; the backup holds the
		// databases its source selected, and every one of them that the
		// file lacks was empty.
		if job.Backup.SourceInfo["databases"] == "all" {
			backupDBs = targetDBs
		} else if backupDBs, err = parseDBList(job.Backup.SourceInfo["backedUp"]); err != nil {
			return nil, fmt.Errorf("backup index: sourceInfo.backedUp: %w", err)
		}
	}
	var dbs, skipped []int
	for _, db := range backupDBs {
		if cfg.Databases.has(db) {
			dbs = append(dbs, db)
		} else {
			skipped = append(skipped, db)
		}
	}
	if len(dbs) == 0 {
		return nil, fmt.Errorf("the backup holds databases %v, none of which the target's databases setting (%s) selects", backupDBs, cfg.Databases)
	}
	if len(skipped) > 0 {
		log.WithField("databases", skipped).Warn("backup databases not selected by the target's databases setting are not restored")
	}
	for _, db := range dbs {
		if !slices.Contains(targetDBs, db) && sum.keys[db] > 0 {
			return nil, fmt.Errorf("the backup holds database %d but the target has only %d databases", db, len(targetDBs))
		}
	}
	var total int64
	for _, db := range dbs {
		total += sum.keys[db]
	}

	// Load as the server loads, by a full sync, when that means the
	// same as the replay (restoreLoad).
	if load := cfg.restoreLoad(); observe == nil && load != LoadReplay {
		info, err := func() (*engines.RestoreInfo, error) {
			setup, err := replicateCheck(ctx, job, ep, conn, sum, dbs, functionsPolicy)
			if err != nil {
				return nil, err
			}
			return replicateInto(ctx, job, ep, setup, sum, dbs, len(targetDBs), artifact, functionsPolicy, log)
		}()
		var fb *fallbackError
		switch {
		case err == nil:
			info.Details["targetVersion"], info.Details["targetRDBVersion"] = version, targetRDB
			return info, nil
		case errors.As(err, &fb) && load == LoadAuto:
			log.WithField("reason", fb.reason).Info("redis restore replays the keys instead of a full sync")
		case errors.As(err, &fb):
			return nil, fmt.Errorf("setting restoreLoad is %q but %s; the target is as it was", LoadReplicate, fb.reason)
		default:
			return nil, err
		}
	}

	// Only the holder of the lease may change the target: confirm it
	// now, the last thing before the first flush.
	if err := job.CheckFence(ctx); err != nil {
		log.WithError(err).Warn("redis restore does not flush: this attempt no longer holds the request")
		return nil, err
	}
	// Flush exactly the databases the backup holds, then replay.
	start := time.Now()
	for _, db := range dbs {
		if !slices.Contains(targetDBs, db) {
			continue
		}
		if err := conn.sel(ctx, db); err != nil {
			return nil, err
		}
		if err := conn.FlushDB(ctx).Err(); err != nil {
			return nil, fmt.Errorf("flush database %d: %w", db, err)
		}
	}
	log.WithField("databases", dbs).Info("redis target databases flushed")
	major, minor := parseVersion(version)
	rs, err := newReplayer(ctx, ep, dbs, functionsPolicy, cfg.batchSize(), major > 6 || major == 6 && minor >= 2, job.Progress, total, observe)
	if err != nil {
		return nil, fmt.Errorf("restore into the flushed databases %v failed before the first key, they are empty: %w", dbs, err)
	}
	_, err = readArtifact(ctx, job, artifact, true, rs.add)
	if ferr := rs.finish(); err == nil {
		err = ferr
	}
	if err != nil {
		return nil, fmt.Errorf("restore into the flushed databases %v failed midway, they are partly restored: %w", dbs, ctxErr(ctx, err))
	}
	downtime := time.Since(start)
	log.WithFields(logrus.Fields{"keys": rs.restored, "expired_skipped": rs.expired, "downtime": downtime}).Info("redis restore done")
	return &engines.RestoreInfo{
		Downtime: downtime,
		Details: map[string]any{
			"load":             "replay",
			"keys":             rs.restored,
			"expiredSkipped":   rs.expired,
			"databases":        dbs,
			"functions":        rs.functionsDone,
			"targetVersion":    version,
			"targetRDBVersion": targetRDB,
		},
	}, nil
}

// targetRDBVersion is the newest RDB version the target reads: that of
// a DUMP of any key it holds, or else the one its version implies.
func targetRDBVersion(ctx context.Context, conn *dbConn, version string) (int, error) {
	if dbs, err := databases(ctx, conn); err == nil {
		for _, db := range dbs {
			if conn.sel(ctx, db) != nil {
				break
			}
			k, err := conn.RandomKey(ctx).Result()
			if err != nil {
				continue
			}
			if p, err := conn.Dump(ctx, k).Result(); err == nil {
				if v, err := payloadRDBVersion([]byte(p)); err == nil {
					return v, nil
				}
			}
			break
		}
	}
	return rdbVersionOf(version), nil
}

// readArtifact reads artifact to its end, calling fn (if not nil) for
// each record. A malformed artifact whose sha256 does not match either is
// reported as the *engines.ChecksumError it is.
func readArtifact(ctx context.Context, job *engines.RestoreJob, artifact string, load bool, fn func(*record) error) (*summary, error) {
	rc, err := job.Artifacts.Open(ctx, artifact)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	sum := &summary{keys: map[int]int64{}, expires: map[int]int64{}}
	var cbErr error
	now := time.Now().UnixMilli()
	onRecord := func(rec *record) error {
		sum.rdbVersion = max(sum.rdbVersion, rec.rdbVersion)
		switch rec.kind {
		case tagDatabase:
			if !slices.Contains(sum.dbs, rec.db) {
				sum.dbs = append(sum.dbs, rec.db)
			}
		case tagFunctions:
			sum.functions = true
		case tagKey:
			if rec.expireAt > 0 && rec.expireAt <= now {
				sum.expired++
			}
			if rec.expireAt > 0 {
				sum.expires[rec.db]++
			}
			sum.keys[rec.db]++
		}
		if fn != nil {
			if err := fn(rec); err != nil {
				cbErr = err
				return err
			}
		}
		return nil
	}
	switch job.Backup.Format {
	case formatRDB:
		var info *rdbInfo
		cur := -1
		cr := &countReader{r: rc}
		info, err = parseRDB(cr, func(rec *record) error {
			if rec.kind == tagKey && rec.db != cur {
				cur = rec.db
				if err := onRecord(&record{kind: tagDatabase, db: cur}); err != nil {
					return err
				}
			}
			return onRecord(rec)
		}, load)
		if err == nil {
			sum.rdbVersion = max(sum.rdbVersion, info.version)
			sum.size = cr.n
		}
	default:
		err = readKeys(rc, load, onRecord)
	}
	if err != nil {
		if cbErr != nil || ctx.Err() != nil {
			return nil, err
		}
		var ce *engines.ChecksumError
		if !errors.As(err, &ce) {
			// Read on: a corrupt artifact is better named as such.
			if _, derr := io.Copy(io.Discard, rc); errors.As(derr, &ce) {
				return nil, ce
			}
		}
		return nil, fmt.Errorf("artifact %s: %w", artifact, err)
	}
	return sum, nil
}

// readKeys reads a logical artifact to its end.
func readKeys(r io.Reader, load bool, fn func(*record) error) error {
	kr, err := newKeyReader(r, !load)
	if err != nil {
		return err
	}
	db := -1
	for {
		rec, err := kr.next()
		if errors.Is(err, io.EOF) {
			// Reach the end of the stream: the reader checks its sha256
			// there.
			if n, err := io.Copy(io.Discard, r); err != nil {
				return err
			} else if n > 0 {
				return formatErr("data after the trailer")
			}
			return nil
		}
		if err != nil {
			return err
		}
		if rec.kind == tagDatabase {
			db = rec.db
		} else if rec.kind == tagKey {
			if db < 0 {
				return formatErr("key before any database record")
			}
			rec.db = db
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}

// parseDBList parses "0,3,7".
func parseDBList(s string) ([]int, error) {
	var dbs []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad database list %q", s)
		}
		dbs = append(dbs, n)
	}
	return dbs, nil
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
