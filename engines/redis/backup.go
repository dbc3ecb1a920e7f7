package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hdt3213/rdb/model"
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

// backupLogical writes keys.bin: every key of the selected databases
// with its DUMP payload and absolute expiry. It reads the keyspace from
// the replication stream (logicalStream) unless the setting logicalRead
// says scan, the server has modules loaded, or the server refuses
// SYNC; then it SCANs every selected database and pipelines
// PEXPIRETIME and DUMP.
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

	details := map[string]any{}
	if read := cfg.logicalRead(); read != ReadScan {
		why := ""
		if mods := loadedModules(ctx, conn); mods != "" {
			why = "the server has modules loaded (" + mods + "), whose data the replication read cannot express"
		} else {
			src, closeConn, err := ep.replStream(ctx)
			if err == nil {
				defer closeConn()
				log.Info("redis logical backup reads the keyspace over replication")
				return e.logicalStream(ctx, job, cfg, ep, log, src, version, major, dbs, total)
			}
			var refused *syncRefusedError
			if !errors.As(err, &refused) || ctx.Err() != nil {
				return nil, ctxErr(ctx, err)
			}
			why = "the server refused replication: " + refused.Error()
		}
		if read == ReadSync {
			return nil, fmt.Errorf("setting logicalRead is %q but %s", ReadSync, why)
		}
		log.WithField("reason", why).Warn("redis logical backup falls back to SCAN and DUMP")
		details["readFallback"] = why
	}
	details["read"] = "scan"

	w, err := job.Artifacts.Create(artifactKeys)
	if err != nil {
		return nil, err
	}
	kw, err := newKeyWriter(w)
	if err != nil {
		return nil, err
	}

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

	rc, err := ep.dialRESP(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.close()
	f := &fetcher{c: rc, kw: kw, stats: newKeyStats(), major: major, max: cfg.batchSize(), batch: cfg.batchSize(),
		progress: job.Progress, total: total}
	perDB := map[string]int64{}
	for _, db := range dbs {
		if err := f.database(db); err != nil {
			return nil, ctxErr(ctx, err)
		}
		perDB[strconv.Itoa(db)] = f.n
		log.WithFields(logrus.Fields{"db": db, "keys": f.n}).Info("redis database backed up")
	}
	rdbVersion = max(rdbVersion, f.rdbVersion)
	done, expiredSkipped, stats := f.done, f.skipped, f.stats
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

// fetcher reads every key of a database on one connection: SCAN, then
// for each key PEXPIRETIME (PTTL before Redis 7) and DUMP, pipelined so
// that the server always has the next batch to work on while the worker
// reads the previous one. When a SCAN reply arrives the next SCAN and the
// fetches of its keys are sent at once; the worker then reads the older
// batch's replies, and the server is never idle waiting for the worker.
// At most two batches of replies are in flight.
type fetcher struct {
	c        *respConn
	kw       *keyWriter
	stats    *keyStats
	major    int
	progress engines.Progress
	total    int64

	// batch is the keys per fetch and SCAN's COUNT, at most max: it
	// shrinks so that a batch's payloads stay near batchBytes.
	batch, max int
	db         int
	cur        int // the connection's database
	payload    []byte
	free       []*keyBatch

	n, done, skipped int64
	rdbVersion       int
}

// keyBatch holds a batch's key names in one buffer.
type keyBatch struct {
	buf  []byte
	ends []int
}

func (b *keyBatch) len() int { return len(b.ends) }

func (b *keyBatch) key(i int) []byte {
	start := 0
	if i > 0 {
		start = b.ends[i-1]
	}
	return b.buf[start:b.ends[i]]
}

func (f *fetcher) newBatch() *keyBatch {
	if n := len(f.free); n > 0 {
		b := f.free[n-1]
		f.free = f.free[:n-1]
		b.buf, b.ends = b.buf[:0], b.ends[:0]
		return b
	}
	return &keyBatch{}
}

// pending is what a reply in flight answers: a SCAN (batch nil) or a
// batch's fetches.
type pending struct{ batch *keyBatch }

// database backs up database db.
func (f *fetcher) database(db int) error {
	f.db, f.n = db, 0
	if db != f.cur {
		f.c.command("SELECT", strconv.Itoa(db))
		if err := f.c.flush(); err != nil {
			return err
		}
		if err := f.c.readOK(); err != nil {
			return fmt.Errorf("select database %d: %w", db, err)
		}
		f.cur = db
	}
	if err := f.kw.database(db); err != nil {
		return err
	}
	f.sendScan(nil)
	if err := f.c.flush(); err != nil {
		return err
	}
	queue := []pending{{}}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p.batch != nil {
			if err := f.readFetch(p.batch); err != nil {
				return fmt.Errorf("database %d: %w", db, err)
			}
			f.free = append(f.free, p.batch)
			continue
		}
		cursor, keys, err := f.readScan()
		if err != nil {
			return fmt.Errorf("scan database %d: %w", db, err)
		}
		if cursor != "0" {
			f.sendScan([]byte(cursor))
			queue = append(queue, pending{})
		}
		// The scan's keys in batches of f.batch.
		if keys.len() <= f.batch {
			if keys.len() > 0 {
				f.sendFetch(keys)
				queue = append(queue, pending{batch: keys})
			} else {
				f.free = append(f.free, keys)
			}
		} else {
			for i := 0; i < keys.len(); i += f.batch {
				b := f.newBatch()
				for j := i; j < min(keys.len(), i+f.batch); j++ {
					b.buf = append(b.buf, keys.key(j)...)
					b.ends = append(b.ends, len(b.buf))
				}
				f.sendFetch(b)
				queue = append(queue, pending{batch: b})
			}
			f.free = append(f.free, keys)
		}
		if err := f.c.flush(); err != nil {
			return err
		}
	}
	return nil
}

func (f *fetcher) sendScan(cursor []byte) {
	f.c.array(4)
	f.c.argString("SCAN")
	if cursor == nil {
		f.c.argString("0")
	} else {
		f.c.arg(cursor)
	}
	f.c.argString("COUNT")
	f.c.argInt(int64(f.batch))
}

func (f *fetcher) sendFetch(b *keyBatch) {
	ttl := "PTTL"
	if f.major >= 7 {
		ttl = "PEXPIRETIME"
	}
	for i := range b.len() {
		k := b.key(i)
		f.c.array(2)
		f.c.argString(ttl)
		f.c.arg(k)
		f.c.array(2)
		f.c.argString("DUMP")
		f.c.arg(k)
	}
}

// readScan reads a SCAN reply: the next cursor and the keys.
func (f *fetcher) readScan() (string, *keyBatch, error) {
	n, err := f.c.readArray()
	if err != nil {
		return "", nil, err
	}
	if n != 2 {
		return "", nil, fmt.Errorf("redis protocol: SCAN reply of %d elements", n)
	}
	cur, ok, err := f.c.readBulk(nil)
	if err != nil || !ok {
		return "", nil, cmp.Or(err, errors.New("redis protocol: nil SCAN cursor"))
	}
	nk, err := f.c.readArray()
	if err != nil {
		return "", nil, err
	}
	b := f.newBatch()
	for range nk {
		if b.buf, ok, err = f.c.readBulk(b.buf); err != nil || !ok {
			return "", nil, cmp.Or(err, errors.New("redis protocol: nil key in a SCAN reply"))
		}
		b.ends = append(b.ends, len(b.buf))
	}
	return string(cur), b, nil
}

// readFetch reads a batch's expiries and payloads and writes them. Keys
// gone or expired since SCAN are skipped.
func (f *fetcher) readFetch(b *keyBatch) error {
	now := time.Now().UnixMilli()
	var size int64
	var got int64
	for i := range b.len() {
		t, err := f.c.readInt()
		if err != nil {
			return fmt.Errorf("expiry: %w", err)
		}
		p, ok, err := f.c.readBulk(f.payload[:0])
		f.payload = p
		if err != nil {
			return fmt.Errorf("dump: %w", err)
		}
		if !ok || t == -2 {
			f.skipped++ // deleted or expired since SCAN
			continue
		}
		var expireAt int64
		switch {
		case t == -1:
		case f.major >= 7:
			expireAt = t
		default:
			expireAt = now + t
		}
		if expireAt < 0 {
			expireAt = 0
		}
		if v, err := payloadRDBVersion(p); err == nil {
			f.rdbVersion = max(f.rdbVersion, v)
		}
		k := b.key(i)
		if err := f.kw.key(k, expireAt, p); err != nil {
			return err
		}
		f.stats.count(f.db, payloadType(p))
		if expireAt == 0 {
			f.stats.sample.offer(f.db, k, func() (model.RedisObject, error) { return payloadObject(p) })
		}
		got++
		size += int64(len(p))
	}
	f.n += got
	f.done += got
	// Aim the next round trips at batchBytes of payload.
	if got > 0 && size > batchBytes {
		f.batch = max(1, int(int64(f.batch)*batchBytes/size))
	} else if size < batchBytes/2 && f.batch < f.max {
		f.batch = min(f.max, f.batch*2)
	}
	f.progress.Report("keys", f.done, f.total)
	return f.kw.flush()
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
