package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hdt3213/rdb/model"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
)

// errStreamUnsupported marks a snapshot holding what the replication read
// cannot express as DUMP payloads (a module's data, a newer Redis's
// types): logicalRead: scan backs such a server up with DUMP.
var errStreamUnsupported = errors.New("the snapshot holds data the replication read cannot express")

// logicalStream writes the logical artifact (keys.bin, the very format
// the SCAN path writes) from the server's snapshot over the replication
// protocol: each key the walker cuts out of the stream becomes a key
// record whose DUMP payload is its RDB type byte and value encoding,
// framed with the stream's RDB version and a CRC-64, so no command runs
// per key. The snapshot is of one point in time; keys whose expiry had
// passed at the snapshot are skipped (expiredDuringBackup), databases the
// databases setting excludes are skipped, idle and frequency records are
// dropped, and the function libraries come from the stream's function
// records (the payload FUNCTION DUMP would return). A stream the walker
// cannot take (truncated, a bad checksum, a module's type or aux data)
// fails the backup: the artifact is never closed, so nothing partial is
// reported as a backup.
func (e *Engine) logicalStream(ctx context.Context, job *engines.BackupJob, cfg *Config, ep *endpoint, log logrus.FieldLogger,
	src io.Reader, version string, major int, dbs []int, total int64,
) (*engines.BackupInfo, error) {
	w, err := job.Artifacts.Create(artifactKeys)
	if err != nil {
		return nil, err
	}
	kw, err := newKeyWriter(w)
	if err != nil {
		return nil, err
	}
	maxDB := slices.Max(dbs)
	want := make([]bool, maxDB+1)
	for _, db := range dbs {
		want[db] = true
	}
	counts := make([]int64, maxDB+1)
	// Keys per database and RDB type byte, named at the end: a map
	// update per key cost more than the walk of a small key.
	typeCounts := make([][256]int64, maxDB+1)
	stats := newKeyStats()
	functions := "none"
	functionsDone := major < 7 // FUNCTION DUMP exists from Redis 7
	writeFunctions := func(body []byte, rdbVersion int) {
		kw.functions(functionsPayload(body, rdbVersion))
		functions, functionsDone = "included", true
	}
	cur := -1
	var done, expired int64
	now := time.Now().UnixMilli()
	info, err := parseRDB(&ctxReader{ctx: ctx, r: src}, func(rec *record) error {
		if rec.kind == tagFunctions {
			// rec.payload is the stream's function records, framed.
			kw.functions(rec.payload)
			functions, functionsDone = "included", true
			return nil
		}
		if !functionsDone {
			writeFunctions(nil, rec.rdbVersion)
		}
		if rec.db > maxDB || !want[rec.db] {
			return nil
		}
		if rec.db != cur {
			kw.database(rec.db)
			cur = rec.db
		}
		if rec.expireAt != 0 && rec.expireAt <= now {
			expired++ // expired, not yet evicted: the SCAN path skips these too
			return nil
		}
		kw.keyRDB(rec.key, rec.expireAt, rec.typ, rec.value, rec.rdbVersion)
		typeCounts[rec.db][rec.typ]++
		if rec.expireAt == 0 && stats.sample.mayKeep(rec.db, rec.key) {
			stats.sample.offer(rec.db, rec.key, func() (model.RedisObject, error) { return payloadObject(rec.dump()) })
		}
		counts[rec.db]++
		done++
		if done%8192 == 0 {
			job.Progress.Report("keys", done, total)
			now = time.Now().UnixMilli()
			return kw.flush()
		}
		return nil
	}, true)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, errFormat) && unsupportedInStream(err) {
			return nil, fmt.Errorf("%w (%w): set logicalRead: scan to back this server up with SCAN and DUMP", errStreamUnsupported, err)
		}
		if errors.Is(err, errFormat) {
			return nil, fmt.Errorf("reading the keyspace over replication: the server's snapshot stream is cut short or damaged (%w); nothing was stored", err)
		}
		return nil, fmt.Errorf("reading the keyspace over replication: %w", err)
	}
	if !functionsDone {
		writeFunctions(nil, info.version)
	}
	// Every selected database has a database record, even when empty: a
	// restore empties exactly these.
	seen := map[int]bool{}
	for db, n := range info.keys {
		seen[db] = n > 0
	}
	for _, db := range dbs {
		if !seen[db] {
			kw.database(db)
		}
	}
	for db := range typeCounts {
		for typ, n := range typeCounts[db] {
			stats.add(db, payloadType([]byte{byte(typ)}), n)
		}
	}
	if err := kw.finish(); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", artifactKeys, err)
	}
	job.Progress.Report("keys", done, total)
	perDB := map[string]int64{}
	for _, db := range dbs {
		perDB[strconv.Itoa(db)] = counts[db]
	}
	details := map[string]any{
		"read":                "replication",
		"functions":           functions,
		"keys":                done,
		"keysPerDatabase":     perDB,
		"expiredDuringBackup": expired,
		"rdbVersion":          info.version,
	}
	stats.details(details)
	log.WithFields(logrus.Fields{"keys": done, "rdb_version": info.version}).Info("redis logical backup done")
	return &engines.BackupInfo{
		Format:        formatLogical,
		ServerVersion: version,
		SourceInfo:    sourceInfo(ep, ModeLogical, dbs, cfg.Databases.all(), info.version),
		Details:       details,
	}, nil
}

// unsupportedInStream tells a walker's refusal of something it does not
// know (as opposed to a damaged stream).
func unsupportedInStream(err error) bool {
	return strings.Contains(err.Error(), "not supported")
}

// functionsPayload frames function records (RDB function opcodes and
// their code, possibly none) as FUNCTION DUMP does.
func functionsPayload(body []byte, rdbVersion int) []byte {
	p := make([]byte, 0, len(body)+10)
	p = append(p, body...)
	p = binary.LittleEndian.AppendUint16(p, uint16(rdbVersion))
	return binary.LittleEndian.AppendUint64(p, crcJones(0, p))
}

// loadedModules names the modules the server has loaded ("" when none,
// or when the user may not ask): their keys and aux data are in the
// snapshot in encodings only the module knows.
func loadedModules(ctx context.Context, conn *dbConn) string {
	s, err := conn.Info(ctx, "modules").Result()
	if err != nil {
		return ""
	}
	var names []string
	for l := range strings.Lines(s) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "module:name="); ok {
			name, _, _ := strings.Cut(rest, ",")
			names = append(names, name)
		}
	}
	return strings.Join(names, ",")
}
