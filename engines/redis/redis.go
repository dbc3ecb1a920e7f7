package redis

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/hdt3213/rdb/model"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
)

// Engine is the redis engine. It holds no state.
type Engine struct{}

var _ engines.Engine = (*Engine)(nil)

// New returns the redis engine.
func New() *Engine { return &Engine{} }

// Name implements engines.Engine.
func (*Engine) Name() string { return "redis" }

// Validate implements engines.Engine.
func (*Engine) Validate(src engines.Source) error {
	_, err := decodeConfig(src)
	return err
}

func logger(l logrus.FieldLogger, src engines.Source, mode string) logrus.FieldLogger {
	if l == nil {
		l = engines.DiscardLog()
	}
	return l.WithFields(logrus.Fields{"engine": "redis", "source": src.Name, "mode": mode})
}

// Backup implements engines.Engine.
func (e *Engine) Backup(ctx context.Context, job *engines.BackupJob) (*engines.BackupInfo, error) {
	cfg, err := decodeConfig(job.Source)
	if err != nil {
		return nil, err
	}
	pw, err := job.Source.Secret(ctx)
	if err != nil {
		return nil, err
	}
	ep, err := cfg.endpoint(pw)
	if err != nil {
		return nil, err
	}
	log := logger(job.Log, job.Source, cfg.mode())
	if cfg.mode() == ModeRDB {
		return e.backupRDB(ctx, job, cfg, ep, log)
	}
	return e.backupLogical(ctx, job, cfg, ep, log)
}

// backupRDB streams the server's snapshot into dump.rdb, parsing it on
// the way so that a snapshot capsule could not restore fails the backup.
func (e *Engine) backupRDB(ctx context.Context, job *engines.BackupJob, cfg *Config, ep *endpoint, log logrus.FieldLogger) (*engines.BackupInfo, error) {
	src, closeConn, err := ep.replStream(ctx)
	if err != nil {
		return nil, err
	}
	defer closeConn()
	w, err := job.Artifacts.Create(artifactRDB)
	if err != nil {
		return nil, err
	}
	log.Info("redis rdb transfer starts")
	cw := &countWriter{w: w}
	stats := newKeyStats()
	// Keys per database and RDB type byte, named at the end (a map
	// update per key cost more than walking a small key).
	typeCounts := map[int]*[256]int64{}
	var tc *[256]int64 // the current database's
	tcDB := -1
	info, err := parseRDB(io.TeeReader(&ctxReader{ctx: ctx, r: src}, cw), func(rec *record) error {
		if rec.kind != tagKey {
			return nil
		}
		if rec.db != tcDB {
			if tc = typeCounts[rec.db]; tc == nil {
				tc = new([256]int64)
				typeCounts[rec.db] = tc
			}
			tcDB = rec.db
		}
		tc[rec.typ]++
		if rec.expireAt == 0 && cfg.Databases.has(rec.db) && stats.sample.mayKeep(rec.db, rec.key) {
			stats.sample.offer(rec.db, rec.key, func() (model.RedisObject, error) { return payloadObject(rec.dump()) })
		}
		return nil
	}, false)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("rdb snapshot: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", artifactRDB, err)
	}
	for db, tc := range typeCounts {
		for typ, n := range tc {
			stats.add(db, payloadType([]byte{byte(typ)}), n)
		}
	}
	var dbs []int
	perDB := map[string]int64{}
	var keys int64
	for db, n := range info.keys {
		dbs = append(dbs, db)
		perDB[strconv.Itoa(db)] = n
		keys += n
	}
	if !cfg.Databases.all() {
		dbs = cfg.Databases.List
	}
	slices.Sort(dbs)
	version := info.aux["redis-ver"]
	log.WithFields(logrus.Fields{"bytes": cw.n, "keys": keys, "rdb_version": info.version, "server_version": version}).Info("redis rdb backup done")
	details := map[string]any{
		"keys":            keys,
		"keysPerDatabase": perDB,
		"functions":       info.functions,
		"rdbVersion":      info.version,
		"rdbBytes":        cw.n,
	}
	stats.details(details)
	return &engines.BackupInfo{
		Format:        formatRDB,
		ServerVersion: version,
		SourceInfo:    sourceInfo(ep, ModeRDB, dbs, cfg.Databases.all(), info.version),
		Details:       details,
	}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
