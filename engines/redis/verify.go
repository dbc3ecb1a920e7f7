package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hdt3213/rdb/model"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
)

var _ engines.Verifier = (*Engine)(nil)

// expiryHorizon: restored keys that expire within this long are
// remembered, so that keys expiring while the checks run are told from
// keys that went missing.
const expiryHorizon = time.Hour

// recorded is what the backup recorded about its keys (the index's
// details); older backups lack typesPerDatabase and sample.
type recorded struct {
	KeysPerDatabase  map[string]int64            `json:"keysPerDatabase"`
	TypesPerDatabase map[string]map[string]int64 `json:"typesPerDatabase"`
	Sample           *struct {
		Keys   int    `json:"keys"`
		SHA256 string `json:"sha256"`
		Method string `json:"method"`
	} `json:"sample"`
}

// verifyStats is what a verification's restore replayed.
type verifyStats struct {
	artifact      map[int]int64 // key records per database
	restored      map[int]int64
	artTypes      map[int]map[string]int64
	restoredTypes map[int]map[string]int64
	expiring      map[int][]int64 // restored keys' expiry (Unix ms) within expiryHorizon
	functions     bool
	sample        sampler
	horizon       int64
}

func newVerifyStats() *verifyStats {
	return &verifyStats{
		artifact: map[int]int64{}, restored: map[int]int64{},
		artTypes: map[int]map[string]int64{}, restoredTypes: map[int]map[string]int64{},
		expiring: map[int][]int64{}, horizon: time.Now().Add(expiryHorizon).UnixMilli(),
	}
}

func bump(m map[int]map[string]int64, db int, typ string) {
	if m[db] == nil {
		m[db] = map[string]int64{}
	}
	m[db][typ]++
}

func (v *verifyStats) observe(rec *record, restored bool) {
	switch rec.kind {
	case tagFunctions:
		v.functions = true
	case tagKey:
		typ := rec.typeName()
		v.artifact[rec.db]++
		bump(v.artTypes, rec.db, typ)
		if !restored {
			return
		}
		v.restored[rec.db]++
		bump(v.restoredTypes, rec.db, typ)
		if rec.expireAt > 0 {
			if rec.expireAt <= v.horizon {
				v.expiring[rec.db] = append(v.expiring[rec.db], rec.expireAt)
			}
			return
		}
		v.sample.offer(rec.db, rec.key, func() (model.RedisObject, error) { return payloadObject(rec.dump()) })
	}
}

// expiredBy counts the restored keys of db that expire by t: the scratch
// server may have dropped them since.
func (v *verifyStats) expiredBy(db int, t time.Time) int64 {
	var n int64
	for _, at := range v.expiring[db] {
		if at <= t.UnixMilli() {
			n++
		}
	}
	return n
}

// Verify implements engines.Verifier. It starts a scratch redis-server
// (see scratch), restores the backup into it through the restore's own
// two passes, and checks the scratch server against what the backup
// recorded when it was made: the keys of every database, their types, a
// sample of values (see sample.go) and the function libraries. The
// scratch server is killed and its directory removed whatever the
// outcome; the source's server is never touched.
func (e *Engine) Verify(ctx context.Context, job *engines.RestoreJob) (*engines.VerifyReport, error) {
	cfg, err := decodeConfig(job.Target)
	if err != nil {
		return nil, err
	}
	artifact, _, err := restorePlan(job)
	if err != nil {
		return nil, err
	}
	var rec recorded
	if raw, err := json.Marshal(job.Backup.Details); err == nil {
		_ = json.Unmarshal(raw, &rec)
	}
	log := logger(job.Log, job.Target, job.Backup.SourceInfo["mode"]).WithFields(logrus.Fields{"verify_id": job.ID, "scratch": true})
	rep := &engines.VerifyReport{OK: true}
	add := func(name string, ok bool, detail string) {
		rep.Checks = append(rep.Checks, engines.Check{Name: name, OK: ok, Detail: detail})
		rep.OK = rep.OK && ok
	}

	srv, err := startScratch(ctx, cfg.redisServer(), scratchDatabases(job.Backup, rec))
	if err != nil {
		add("scratch redis-server", false, err.Error())
		return rep, err
	}
	defer func() {
		if err := srv.stop(); err != nil {
			log.WithError(err).Warn("scratch redis-server's directory was not removed")
		}
	}()
	log.WithField("scratch_version", srv.version).Info("redis verification: scratch server started")
	stats := newVerifyStats()
	scratchCfg := &Config{URL: "redis://scratch", Databases: Databases{All: true}, BatchSize: cfg.BatchSize}
	info, err := restoreInto(ctx, job, scratchCfg, srv.ep, artifact, "flush", stats.observe, log)
	if err != nil {
		add("restore into a scratch server", false, err.Error())
		return rep, err
	}
	var dbs []int
	if l, ok := info.Details["databases"].([]int); ok {
		dbs = l
	}
	var restored, expired int64
	for _, n := range stats.restored {
		restored += n
	}
	for db, n := range stats.artifact {
		expired += n - stats.restored[db]
	}
	add("restore into a scratch server", true, fmt.Sprintf("%d keys restored into a scratch redis-server %s (%s mode; %d expired since the backup, not restored)",
		restored, srv.version, job.Backup.SourceInfo["mode"], expired))

	cl := srv.ep.newClient()
	defer cl.Close()
	conn := newDBConn(cl)
	defer conn.Close()
	if err := checkKeys(ctx, conn, dbs, stats, rec, add); err != nil {
		return rep, err
	}
	if err := checkTypes(ctx, conn, dbs, stats, rec, add); err != nil {
		return rep, err
	}
	if err := checkSample(ctx, conn, stats, rec, add); err != nil {
		return rep, err
	}
	if stats.functions {
		libs, err := conn.Do(ctx, "FUNCTION", "LIST").Slice()
		switch {
		case err != nil:
			add("functions", false, "function list: "+err.Error())
		case len(libs) == 0:
			add("functions", false, "the backup holds function libraries; none is loaded after the restore")
		default:
			add("functions", true, fmt.Sprintf("%d function libraries loaded", len(libs)))
		}
	}
	log.WithFields(logrus.Fields{"ok": rep.OK, "keys": restored}).Info("redis verification done")
	return rep, ctx.Err()
}

// scratchDatabases is how many databases the scratch server needs.
func scratchDatabases(b engines.BackupInfo, rec recorded) int {
	n := 16
	for db := range rec.KeysPerDatabase {
		if i, err := strconv.Atoi(db); err == nil && i+1 > n {
			n = i + 1
		}
	}
	if l, err := parseDBList(b.SourceInfo["backedUp"]); err == nil {
		for _, db := range l {
			n = max(n, db+1)
		}
	}
	return n
}

type addFunc func(name string, ok bool, detail string)

// checkKeys compares each restored database's size with the keys the
// backup recorded and the restore replayed.
func checkKeys(ctx context.Context, conn *dbConn, dbs []int, stats *verifyStats, rec recorded, add addFunc) error {
	var problems, summary []string
	for _, db := range dbs {
		if err := conn.sel(ctx, db); err != nil {
			return err
		}
		size, err := conn.DBSize(ctx).Result()
		if err != nil {
			return fmt.Errorf("dbsize of scratch database %d: %w", db, err)
		}
		lost := stats.expiredBy(db, time.Now())
		art, restored := stats.artifact[db], stats.restored[db]
		if want, ok := rec.KeysPerDatabase[strconv.Itoa(db)]; ok && want != art {
			problems = append(problems, fmt.Sprintf("database %d: the backup recorded %d keys, its artifact holds %d", db, want, art))
		} else if !ok && rec.KeysPerDatabase != nil && art != 0 {
			problems = append(problems, fmt.Sprintf("database %d: the backup recorded no keys, its artifact holds %d", db, art))
		}
		if size > restored || size < restored-lost {
			problems = append(problems, fmt.Sprintf("database %d: %d keys after the restore, %d were restored", db, size, restored))
		}
		if art > 0 {
			summary = append(summary, fmt.Sprintf("db %d: %d", db, size))
		}
	}
	if len(summary) == 0 {
		summary = []string{"no keys"}
	}
	against := "as the backup recorded"
	if rec.KeysPerDatabase == nil {
		against = "as the artifact holds (the backup recorded no counts)"
	}
	if len(problems) > 0 {
		add("keys per database", false, strings.Join(problems, "; "))
	} else {
		add("keys per database", true, strings.Join(summary, ", ")+", "+against)
	}
	return nil
}

// checkTypes reads every key's type in the scratch server and compares
// the counts with what the backup recorded and the restore replayed.
func checkTypes(ctx context.Context, conn *dbConn, dbs []int, stats *verifyStats, rec recorded, add addFunc) error {
	var problems []string
	checked := 0
	for _, db := range dbs {
		if err := conn.sel(ctx, db); err != nil {
			return err
		}
		if want, ok := rec.TypesPerDatabase[strconv.Itoa(db)]; ok && !maps.Equal(want, stats.artTypes[db]) {
			problems = append(problems, fmt.Sprintf("database %d: the backup recorded types %s, its artifact holds %s", db, typeList(want), typeList(stats.artTypes[db])))
		}
		got, err := scanTypes(ctx, conn)
		if err != nil {
			return fmt.Errorf("types in scratch database %d: %w", db, err)
		}
		lost := stats.expiredBy(db, time.Now())
		var missing int64
		for typ, n := range stats.restoredTypes[db] {
			switch {
			case got[typ] > n:
				problems = append(problems, fmt.Sprintf("database %d: %d keys of type %s after the restore, %d were restored", db, got[typ], typ, n))
			case got[typ] < n:
				missing += n - got[typ]
			}
		}
		for typ, n := range got {
			if stats.restoredTypes[db][typ] == 0 {
				problems = append(problems, fmt.Sprintf("database %d: %d keys of type %s after the restore, none was restored", db, n, typ))
			}
		}
		if missing > lost {
			problems = append(problems, fmt.Sprintf("database %d: types after the restore %s, restored %s", db, typeList(got), typeList(stats.restoredTypes[db])))
		}
		checked++
	}
	switch {
	case len(problems) > 0:
		add("types per database", false, strings.Join(problems, "; "))
	case rec.TypesPerDatabase == nil:
		add("types per database", true, fmt.Sprintf("every key's type in %d databases as the artifact holds (the backup recorded no types)", checked))
	default:
		add("types per database", true, fmt.Sprintf("every key's type in %d databases as the backup recorded", checked))
	}
	return nil
}

// scanTypes counts the keys of the selected database by type.
func scanTypes(ctx context.Context, conn *dbConn) (map[string]int64, error) {
	got := map[string]int64{}
	var cursor uint64
	for {
		keys, next, err := conn.Scan(ctx, cursor, "", 1000).Result()
		if err != nil {
			return nil, err
		}
		if len(keys) > 0 {
			cmds := make([]*goredis.StatusCmd, len(keys))
			if _, err := conn.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for i, k := range keys {
					cmds[i] = p.Type(ctx, k)
				}
				return nil
			}); err != nil {
				return nil, err
			}
			for _, c := range cmds {
				if t := c.Val(); t != "none" { // "none": expired meanwhile
					got[t]++
				}
			}
		}
		if cursor = next; cursor == 0 {
			return got, nil
		}
	}
}

func typeList(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// checkSample compares the sampled keys' values in the scratch server with
// the backup's: the sample's digest must be the one recorded at backup
// time, and each sampled key must hold, after the restore, the value the
// artifact holds.
func checkSample(ctx context.Context, conn *dbConn, stats *verifyStats, rec recorded, add addFunc) error {
	const name = "sample of values"
	keys := stats.sample.keys
	if rec.Sample != nil && rec.Sample.Method == sampleMethod && (rec.Sample.Keys != len(keys) || rec.Sample.SHA256 != stats.sample.sum()) {
		add(name, false, fmt.Sprintf("the %d sampled keys' values in the artifact are not the %d sampled when the backup was made", len(keys), rec.Sample.Keys))
		return nil
	}
	if len(keys) == 0 {
		add(name, true, "no persistent key to sample")
		return nil
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].db < keys[j].db })
	differ := map[int]int{}
	var bad int
	for _, k := range keys {
		if err := conn.sel(ctx, k.db); err != nil {
			return err
		}
		p, err := conn.Dump(ctx, k.key).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return fmt.Errorf("dump a sampled key of scratch database %d: %w", k.db, err)
		}
		var got [32]byte
		ok := false
		if err == nil {
			if o, perr := payloadObject([]byte(p)); perr == nil {
				got, ok = valueDigest(o)
			}
		}
		if !ok || got != k.digest {
			differ[k.db]++
			bad++
		}
	}
	against := "the values recorded when the backup was made"
	if rec.Sample == nil || rec.Sample.Method != sampleMethod {
		against = "the backup's values (no sample was recorded when it was made)"
	}
	if bad > 0 {
		var where []string
		for _, db := range slices.Sorted(maps.Keys(differ)) {
			where = append(where, fmt.Sprintf("%d in database %d", differ[db], db))
		}
		add(name, false, fmt.Sprintf("%d of %d sampled keys do not hold %s after the restore (%s)", bad, len(keys), against, strings.Join(where, ", ")))
		return nil
	}
	add(name, true, fmt.Sprintf("%d of %d sampled keys hold %s", len(keys), len(keys), against))
	return nil
}
