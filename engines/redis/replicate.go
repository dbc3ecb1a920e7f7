package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
)

// fallbackError says why the restore did not load the backup by a full
// sync, with the target as it was: restoreLoad: auto replays instead,
// restoreLoad: replicate fails with it.
type fallbackError struct{ reason string }

func (e *fallbackError) Error() string { return e.reason }

func fallback(format string, a ...any) error {
	return &fallbackError{reason: fmt.Sprintf(format, a...)}
}

// connectTimeout is how long the target has to connect to the worker
// after REPLICAOF.
var connectTimeout = 5 * time.Second

// testHooks let the tests stand in the way of the full sync.
var testHooks struct {
	// announce changes the address the target is told to connect to.
	announce func(ip string, port int) (string, int)
	// listening is called with the worker's listening address before
	// REPLICAOF.
	listening func(addr string)
	// beforeTransfer runs between the checking pass and the transfer.
	beforeTransfer func()
	// transfer wraps the connection the snapshot is written to.
	transfer func(io.Writer) io.Writer
}

// replicaSetup is what the full sync changes on the target, to be put
// back.
type replicaSetup struct {
	conn               *dbConn
	oldAuth, oldUser   string
	diskless           string
	replicaOf, authSet bool
}

// configGet returns one parameter's value.
func configGet(ctx context.Context, conn *dbConn, name string) (string, error) {
	v, err := conn.Do(ctx, "CONFIG", "GET", name).Result()
	if err != nil {
		return "", err
	}
	switch m := v.(type) {
	case []any:
		if len(m) == 2 {
			s, _ := m[1].(string)
			return s, nil
		}
		if len(m) == 0 {
			return "", nil
		}
	case map[any]any:
		s, _ := m[name].(string)
		return s, nil
	}
	return "", fmt.Errorf("CONFIG GET %s: unexpected reply", name)
}

// infoFields returns the name:value lines of an INFO section.
func infoFields(ctx context.Context, conn *dbConn, section string) (map[string]string, error) {
	s, err := conn.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

// replicateCheck tells whether a full sync means what the restore
// means; a *fallbackError says why not.
func replicateCheck(ctx context.Context, job *engines.RestoreJob, ep *endpoint, conn *dbConn, sum *summary, dbs []int, functionsPolicy string) (*replicaSetup, error) {
	if ep.network == "unix" {
		return nil, fallback("the target is on a unix socket")
	}
	if job.Backup.Format == formatLogical && fmt.Sprint(job.Backup.Details["read"]) == "scan" {
		return nil, fallback("the backup was read with SCAN, which may list a key twice (a loading server stops on that)")
	}
	var total int64
	for _, n := range sum.keys {
		total += n
	}
	if total > maxFullSyncKeys {
		return nil, fallback("the backup holds %d keys: checking more than %d for duplicates (a loading server stops on one) would take more than 64 MB of the worker's memory", total, maxFullSyncKeys)
	}
	repl, err := infoFields(ctx, conn, "replication")
	if err != nil {
		return nil, fallback("INFO replication: %v", err)
	}
	if repl["role"] != "master" {
		return nil, fallback("the target is a replica (role:%s): its master would replace what a full sync loads", repl["role"])
	}
	ks, err := infoFields(ctx, conn, "keyspace")
	if err != nil {
		return nil, fallback("INFO keyspace: %v", err)
	}
	for k, v := range ks {
		n, err := strconv.Atoi(strings.TrimPrefix(k, "db"))
		if err != nil || !strings.HasPrefix(k, "db") {
			continue
		}
		if !slices.Contains(dbs, n) && !strings.HasPrefix(v, "keys=0,") {
			return nil, fallback("database %d of the target holds keys (%s) and the restore does not replace it: a full sync would empty it", n, v)
		}
	}
	if job.Backup.Format == formatRDB {
		for _, db := range sum.dbs {
			if !slices.Contains(dbs, db) {
				return nil, fallback("the snapshot holds database %d, which the restore does not select: a full sync would load it", db)
			}
		}
	}
	libs := 0
	if l, err := conn.Do(ctx, "FUNCTION", "LIST").Slice(); err == nil {
		libs = len(l)
	} else if !isUnknownCommand(err) {
		return nil, fallback("FUNCTION LIST: %v", err)
	}
	switch {
	case functionsPolicy == "replace" && libs > 0:
		return nil, fallback("functions: replace keeps the target's other %d function libraries, which a full sync would drop (functions: flush allows it)", libs)
	case functionsPolicy == "skip" && libs > 0:
		return nil, fallback("functions: skip keeps the target's %d function libraries, which a full sync would drop", libs)
	case libs > 0 && !sum.functions:
		return nil, fallback("the backup holds no function libraries and the target's %d would stay with a replay, where a full sync drops them", libs)
	case functionsPolicy == "skip" && job.Backup.Format == formatRDB && sum.functions:
		return nil, fallback("functions: skip, but the snapshot holds function libraries that a full sync would load")
	}
	s := &replicaSetup{conn: conn}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"masterauth", &s.oldAuth}, {"masteruser", &s.oldUser}, {"repl-diskless-load", &s.diskless}} {
		if *p.dst, err = configGet(ctx, conn, p.name); err != nil {
			return nil, fallback("CONFIG GET %s: %v (a full sync needs +config +replicaof +info)", p.name, err)
		}
	}
	if v, err := configGet(ctx, conn, "tls-replication"); err == nil && v == "yes" {
		return nil, fallback("the target replicates over TLS (tls-replication yes), which the worker does not serve")
	}
	return s, nil
}

// undo makes the target a master again and puts masterauth and
// masteruser back, on a context of its own (the restore's may be over).
func (s *replicaSetup) undo() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if s.replicaOf {
		if err := s.conn.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
			errs = append(errs, fmt.Errorf("REPLICAOF NO ONE: %w", err))
		} else {
			s.replicaOf = false
		}
	}
	if s.authSet {
		err := s.conn.Do(ctx, "CONFIG", "SET", "masterauth", s.oldAuth).Err()
		if err == nil && s.oldUser != "" {
			err = s.conn.Do(ctx, "CONFIG", "SET", "masteruser", s.oldUser).Err()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("putting masterauth and masteruser back: %w", err))
		} else {
			s.authSet = false
		}
	}
	return errors.Join(errs...)
}

// state says what the target is after undo.
func (s *replicaSetup) state(undoErr error) string {
	if undoErr == nil {
		return "it is a master again and its masterauth is as it was"
	}
	return fmt.Sprintf("putting it back failed (%v): it may still be a replica of the worker's gone address; run REPLICAOF NO ONE and check masterauth", undoErr)
}

// replicateInto loads the backup into the target by one full sync from
// the worker. A *fallbackError means the target is as it was.
func replicateInto(ctx context.Context, job *engines.RestoreJob, ep *endpoint, s *replicaSetup, sum *summary, dbs []int, targetDBs int, artifact, functionsPolicy string, log logrus.FieldLogger) (*engines.RestoreInfo, error) {
	conn := s.conn
	// The worker's own address as the target sees it: the local end
	// of a connection to the target.
	raw, closeRaw, err := ep.dialRaw(ctx)
	if err != nil {
		return nil, err
	}
	local := raw.LocalAddr().(*net.TCPAddr).IP.String()
	closeRaw()
	token := randomHex(32)
	m, err := listenMaster(local, token)
	if err != nil {
		return nil, fallback("%v", err)
	}
	defer m.close()
	ip, port := local, m.addr().Port
	if testHooks.announce != nil {
		ip, port = testHooks.announce(ip, port)
	}
	if testHooks.listening != nil {
		testHooks.listening(m.addr().String())
	}

	s.authSet = true
	err = conn.Do(ctx, "CONFIG", "SET", "masterauth", token).Err()
	if err == nil && s.oldUser != "" {
		err = conn.Do(ctx, "CONFIG", "SET", "masteruser", "").Err()
	}
	if err != nil {
		if uerr := s.undo(); uerr != nil {
			return nil, fmt.Errorf("CONFIG SET masterauth: %w; %s", err, s.state(uerr))
		}
		return nil, fallback("CONFIG SET masterauth: %v", err)
	}
	// Only the holder of the lease may change the target.
	if err := job.CheckFence(ctx); err != nil {
		log.WithError(err).Warn("redis restore does not load: this attempt no longer holds the request")
		if uerr := s.undo(); uerr != nil {
			return nil, fmt.Errorf("%w; %s", err, s.state(uerr))
		}
		return nil, err
	}

	start := time.Now()
	s.replicaOf = true
	if err := conn.Do(ctx, "REPLICAOF", ip, strconv.Itoa(port)).Err(); err != nil {
		var refused goredis.Error
		if errors.As(err, &refused) {
			s.replicaOf = false // the server refused it (NOPERM, cluster mode): nothing to undo
		}
		if uerr := s.undo(); uerr != nil {
			return nil, fmt.Errorf("REPLICAOF: %w; %s", err, s.state(uerr))
		}
		return nil, fallback("REPLICAOF: %v", err)
	}
	log.WithFields(logrus.Fields{"master": net.JoinHostPort(ip, strconv.Itoa(port)), "repl_diskless_load": s.diskless}).Info("redis target is a replica of the worker for one full sync")
	rc, err := m.waitReplica(ctx, connectTimeout)
	if err != nil {
		uerr := s.undo()
		if errors.Is(err, errNoReplica) && uerr == nil {
			return nil, fallback("the target did not connect to the worker at %s within %v (%d other connections refused; a NetworkPolicy or firewall between them?)",
				net.JoinHostPort(ip, strconv.Itoa(port)), connectTimeout, m.refused.Load())
		}
		return nil, fmt.Errorf("waiting for the target's replication connection: %w; %s", err, s.state(uerr))
	}
	defer rc.conn.Close()
	stop := context.AfterFunc(ctx, func() { rc.conn.Close() })
	defer stop()

	// Pass 2: the snapshot, built as the artifact streams.
	if testHooks.beforeTransfer != nil {
		testHooks.beforeTransfer()
	}
	cutoff := time.Now().UnixMilli()
	var keys, expired int64
	var build func(io.Writer) error
	size := func() (int64, error) { return sum.size, nil }
	switch job.Backup.Format {
	case formatRDB:
		build = func(w io.Writer) error {
			n, x, err := teeRDB(ctx, job, artifact, w, cutoff, sum, targetDBs)
			keys, expired = n, x
			return err
		}
	default:
		version := sum.rdbVersion
		if version == 0 {
			version = 9
		}
		build = func(w io.Writer) error {
			b := newRDBBuilder(w, version, dbs, sum.keys, sum.expires, functionsPolicy != "skip", cutoff, targetDBs)
			if _, err := readArtifact(ctx, job, artifact, true, b.add); err != nil {
				return err
			}
			keys, expired = b.keys, b.expired
			return b.finish()
		}
		size = func() (int64, error) {
			c := &countWriter{w: io.Discard}
			err := build(c)
			return c.n, err
		}
	}
	if testHooks.transfer != nil {
		inner := build
		build = func(w io.Writer) error { return inner(testHooks.transfer(w)) }
	}
	connected := time.Now()
	if err := m.send(rc, build, size); err != nil {
		rc.conn.Close()
		uerr := s.undo()
		var nl *notLoadableError
		if errors.As(err, &nl) && uerr == nil {
			return nil, fallback("the backup cannot be loaded by a full sync (%v); the transfer was cut before its end and the target kept its data", err)
		}
		var gone *replicaGoneError
		if errors.As(err, &gone) && uerr == nil && ctx.Err() == nil {
			return nil, fallback("%v (see its log); it kept its data", err)
		}
		return nil, fmt.Errorf("restore by full sync: the transfer was cut before its end, so the target discarded it and keeps its old data; %s: %w", s.state(uerr), ctxErr(ctx, err))
	}
	sent := time.Now()
	job.Progress.Report("load", 0, 0)
	if err := rc.awaitLoad(ctx); err != nil {
		uerr := s.undo()
		return nil, fmt.Errorf("the target failed to load the snapshot after the whole transfer (%v; see its log): with repl-diskless-load %s its databases may be emptied and partly loaded, or the server may have stopped; %s", ctxErr(ctx, err), s.diskless, s.state(uerr))
	}
	// The replica acknowledges once loaded; INFO confirms it.
	for i := 0; ; i++ {
		repl, err1 := infoFields(ctx, conn, "replication")
		pers, err2 := infoFields(ctx, conn, "persistence")
		if err := errors.Join(err1, err2); err == nil && repl["master_link_status"] == "up" && repl["master_sync_in_progress"] == "0" && pers["loading"] == "0" {
			break
		} else if i == 500 || ctx.Err() != nil {
			uerr := s.undo()
			return nil, fmt.Errorf("the target acknowledged the snapshot but does not report it loaded (master_link_status:%s, loading:%s, %v); %s", repl["master_link_status"], pers["loading"], ctxErr(ctx, err), s.state(uerr))
		}
		time.Sleep(20 * time.Millisecond)
	}
	loaded := time.Now()
	if uerr := s.undo(); uerr != nil {
		return nil, fmt.Errorf("the target loaded the backup, but %s", s.state(uerr))
	}
	downtime := time.Since(start)
	// Where the downtime went: the target connecting, the transfer (the
	// second pass), the target's load after it.
	phases := map[string]string{
		"connect":  connected.Sub(start).Round(time.Millisecond).String(),
		"transfer": sent.Sub(connected).Round(time.Millisecond).String(),
		"load":     loaded.Sub(sent).Round(time.Millisecond).String(),
	}
	log.WithFields(logrus.Fields{"keys": keys, "expired_skipped": expired, "downtime": downtime, "phases": phases}).Info("redis restore by full sync done")
	functions := "replaced by the backup's (full sync)"
	if functionsPolicy == "skip" {
		functions = "skipped"
	}
	return &engines.RestoreInfo{
		Downtime: downtime,
		Details: map[string]any{
			"load":             "replicate",
			"keys":             keys,
			"expiredSkipped":   expired,
			"databases":        dbs,
			"functions":        functions,
			"replDisklessLoad": s.diskless,
			"phases":           phases,
		},
	}, nil
}

// teeRDB writes a stored RDB file to w as it reads it, walking it to
// find keys listed twice (which a loading server stops on) and counting
// the keys and those already expired at cutoff (loaded with their
// expiry, they are gone on the first access).
func teeRDB(ctx context.Context, job *engines.RestoreJob, artifact string, w io.Writer, cutoff int64, sum *summary, maxDB int) (keys, expired int64, err error) {
	rc, err := job.Artifacts.Open(ctx, artifact)
	if err != nil {
		return 0, 0, err
	}
	defer rc.Close()
	var total int64
	for _, n := range sum.keys {
		total += n
	}
	seen := newKeySeen(total)
	tee := &teeWriter{w: w}
	_, err = parseRDBTo(rc, func(rec *record) error {
		if rec.kind != tagKey {
			return nil
		}
		if err := seen.add(rec.db, rec.key); err != nil {
			return err
		}
		keys++
		if rec.expireAt > 0 && rec.expireAt <= cutoff {
			expired++
		}
		return nil
	}, false, tee, maxDB)
	if tee.werr != nil {
		return 0, 0, tee.werr
	}
	if err != nil {
		var ce *engines.ChecksumError
		var nl *notLoadableError
		if !errors.As(err, &ce) && !errors.As(err, &nl) && ctx.Err() == nil {
			// Read on: a corrupt artifact is better named as such.
			if _, derr := io.Copy(io.Discard, rc); errors.As(derr, &ce) {
				return 0, 0, ce
			}
		}
		return 0, 0, fmt.Errorf("artifact %s: %w", artifact, err)
	}
	return keys - expired, expired, nil
}

// teeWriter keeps a write's error, to name it rather than what the
// walker makes of it.
type teeWriter struct {
	w    io.Writer
	werr error
}

func (t *teeWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil && t.werr == nil {
		t.werr = err
	}
	return n, err
}
