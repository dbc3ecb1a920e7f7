package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hdt3213/rdb/model"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
)

const (
	artifactKeys = "keys.bin"
	artifactRDB  = "dump.rdb"

	formatLogical = "redis-keys/1"
	formatRDB     = "redis-rdb/1"

	// batchBytes bounds the payload bytes one pipelined round trip is
	// aimed at: the batch shrinks when keys are large.
	batchBytes = 32 << 20
)

// backupLogical SCANs every selected database and streams DUMP payloads
// with their absolute expiry into keys.bin.
func (e *Engine) backupLogical(ctx context.Context, job *engines.BackupJob, cfg *Config, ep *endpoint, log logrus.FieldLogger) (*engines.BackupInfo, error) {
	cl := ep.newClient()
	defer cl.Close()
	conn := newDBConn(cl)
	defer conn.Close()

	version, err := serverVersion(ctx, conn)
	if err != nil {
		return nil, err
	}
	major, _ := parseVersion(version)
	dbs := cfg.Databases.List
	if cfg.Databases.all() {
		if dbs, err = databases(ctx, conn); err != nil {
			return nil, err
		}
	}
	sizes := make(map[int]int64, len(dbs))
	var total int64
	for _, db := range dbs {
		if err := conn.sel(ctx, db); err != nil {
			return nil, err
		}
		n, err := conn.DBSize(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("dbsize of database %d: %w", db, err)
		}
		sizes[db] = n
		total += n
	}
	log.WithFields(logrus.Fields{"server_version": version, "databases": len(dbs), "keys_estimate": total}).Info("redis logical backup starts")

	w, err := job.Artifacts.Create(artifactKeys)
	if err != nil {
		return nil, err
	}
	kw, err := newKeyWriter(w)
	if err != nil {
		return nil, err
	}

	details := map[string]any{}
	rdbVersion := 0
	functions := "none"
	if major >= 7 {
		payload, err := conn.FunctionDump(ctx).Result()
		switch {
		case isNoPerm(err):
			functions = "skipped: the user may not run FUNCTION DUMP"
			log.WithField("error", err.Error()).Warn("redis functions are not backed up")
		case err != nil:
			return nil, fmt.Errorf("function dump: %w", err)
		default:
			functions = "included"
			if v, err := payloadRDBVersion([]byte(payload)); err == nil {
				rdbVersion = max(rdbVersion, v)
			}
			if err := kw.functions([]byte(payload)); err != nil {
				return nil, err
			}
		}
	}
	details["functions"] = functions

	perDB := map[string]int64{}
	stats := newKeyStats()
	var done, expiredSkipped int64
	batch := cfg.batchSize()
	for _, db := range dbs {
		if err := conn.sel(ctx, db); err != nil {
			return nil, err
		}
		if err := kw.database(db); err != nil {
			return nil, err
		}
		var cursor uint64
		var n int64
		for {
			keys, next, err := conn.Scan(ctx, cursor, "", int64(batch)).Result()
			if err != nil {
				return nil, fmt.Errorf("scan database %d: %w", db, err)
			}
			for len(keys) > 0 {
				chunk := keys[:min(len(keys), batch)]
				keys = keys[len(chunk):]
				got, skipped, size, ver, err := dumpBatch(ctx, conn, kw, chunk, major, db, stats)
				if err != nil {
					return nil, fmt.Errorf("database %d: %w", db, err)
				}
				rdbVersion = max(rdbVersion, ver)
				n += got
				done += got
				expiredSkipped += skipped
				// Aim the next round trip at batchBytes of payload.
				if got > 0 && size > batchBytes {
					batch = max(1, int(int64(batch)*batchBytes/size))
				} else if size < batchBytes/2 && batch < cfg.batchSize() {
					batch = min(cfg.batchSize(), batch*2)
				}
				job.Progress.Report("keys", done, total)
			}
			cursor = next
			if cursor == 0 {
				break
			}
		}
		perDB[strconv.Itoa(db)] = n
		log.WithFields(logrus.Fields{"db": db, "keys": n}).Info("redis database backed up")
	}
	if err := kw.finish(); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", artifactKeys, err)
	}
	if rdbVersion == 0 {
		rdbVersion = rdbVersionOf(version)
	}
	details["keys"] = done
	details["keysPerDatabase"] = perDB
	details["expiredDuringBackup"] = expiredSkipped
	details["rdbVersion"] = rdbVersion
	stats.details(details)
	log.WithFields(logrus.Fields{"keys": done, "rdb_version": rdbVersion}).Info("redis logical backup done")
	return &engines.BackupInfo{
		Format:        formatLogical,
		ServerVersion: version,
		SourceInfo:    sourceInfo(ep, ModeLogical, dbs, cfg.Databases.all(), rdbVersion),
		Details:       details,
	}, nil
}

// dumpBatch pipelines PEXPIRETIME and DUMP for keys (one round trip) and
// writes what it got. Keys gone or expired in the meantime are skipped.
func dumpBatch(ctx context.Context, conn *dbConn, kw *keyWriter, keys []string, major, db int, stats *keyStats) (written, skipped, size int64, rdbVersion int, err error) {
	type pair struct {
		exp  goredis.Cmder
		dump *goredis.StringCmd
	}
	cmds := make([]pair, len(keys))
	now := time.Now()
	_, err = conn.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, k := range keys {
			if major >= 7 {
				cmds[i].exp = p.Do(ctx, "PEXPIRETIME", k)
			} else {
				cmds[i].exp = p.Do(ctx, "PTTL", k)
			}
			cmds[i].dump = p.Dump(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		// The first failed command's error; look at each below.
		var firstReal error
		for _, c := range cmds {
			if e := c.dump.Err(); e != nil && !errors.Is(e, goredis.Nil) {
				firstReal = e
				break
			}
			if e := c.exp.Err(); e != nil {
				firstReal = e
				break
			}
		}
		if firstReal != nil {
			return 0, 0, 0, 0, fmt.Errorf("dump: %w", firstReal)
		}
	}
	for i, k := range keys {
		payload, derr := cmds[i].dump.Result()
		if errors.Is(derr, goredis.Nil) {
			skipped++ // deleted or expired since SCAN
			continue
		}
		if derr != nil {
			return 0, 0, 0, 0, fmt.Errorf("dump: %w", derr)
		}
		t, terr := cmds[i].exp.(*goredis.Cmd).Int64()
		if terr != nil {
			return 0, 0, 0, 0, fmt.Errorf("expiry: %w", terr)
		}
		var expireAt int64
		switch {
		case t == -2:
			skipped++
			continue
		case t == -1:
		case major >= 7:
			expireAt = t
		default:
			expireAt = now.UnixMilli() + t
		}
		if expireAt < 0 {
			expireAt = 0
		}
		if v, err := payloadRDBVersion([]byte(payload)); err == nil {
			rdbVersion = max(rdbVersion, v)
		}
		p := []byte(payload)
		if err := kw.key(k, expireAt, p); err != nil {
			return 0, 0, 0, 0, err
		}
		stats.count(db, payloadType(p))
		if expireAt == 0 {
			stats.sample.offer(db, []byte(k), func() (model.RedisObject, error) { return payloadObject(p) })
		}
		written++
		size += int64(len(payload))
	}
	return written, skipped, size, rdbVersion, kw.flush()
}

// sourceInfo is what the index records about the source.
func sourceInfo(ep *endpoint, mode string, dbs []int, all bool, rdbVersion int) map[string]string {
	s := Databases{List: dbs}.String()
	if all {
		s = "all"
	}
	list := Databases{List: dbs}.String()
	tlsOn := "false"
	if ep.tls != nil {
		tlsOn = "true"
	}
	return map[string]string{
		"host":       ep.addr,
		"user":       ep.user,
		"tls":        tlsOn,
		"mode":       mode,
		"databases":  s,
		"backedUp":   list,
		"rdbVersion": strconv.Itoa(rdbVersion),
	}
}
