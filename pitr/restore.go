package pitr

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/pgserver"
	"github.com/cnvrg/capsule/requests"
	"github.com/jackc/pglogrepl"
	"github.com/sirupsen/logrus"
)

// Target is the point a restore recovers to: exactly one of Time, LSN
// or Latest.
type Target struct {
	Time   time.Time
	LSN    pglogrepl.LSN
	Latest bool
	// immediate (a verification's) ends recovery as soon as the cluster
	// is consistent; LSN then bounds the WAL staged.
	immediate bool
}

func (t Target) String() string {
	switch {
	case t.Latest:
		return "the latest recoverable point"
	case t.LSN != 0:
		return "LSN " + t.LSN.String()
	}
	return t.Time.UTC().Format(time.RFC3339Nano)
}

// Validate checks that exactly one target is set.
func (t Target) Validate() error {
	n := 0
	for _, set := range []bool{!t.Time.IsZero(), t.LSN != 0, t.Latest} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of --time, --lsn and --latest")
	}
	return nil
}

// RestoreConfig is one point-in-time restore.
type RestoreConfig struct {
	Bucket  bucket.Bucket
	Cluster string
	// Source is the source whose base backups and WAL are restored.
	Source string
	Target Target
	// Into is the server the recovered data is loaded into (its
	// databases swapped in by rename, as the postgres engine's restores
	// do). Unset with DataDir.
	Into *engines.Source
	// DataDir, when set, receives a complete data directory instead: the
	// recovered, promoted cluster, shut down cleanly, ready for a new
	// server to start on. It must not exist or be empty.
	DataDir string
	// Scratch is where the temporary server runs (default the system's
	// temporary directory). It needs room for the whole cluster.
	Scratch string
	// ID names the restore in side databases (a request id).
	ID  string
	Log logrus.FieldLogger
	// Options are the postgres engine's restore options (database,
	// roles, noOwner).
	Options map[string]string
	// DropPrevious drops the replaced databases after the swap.
	DropPrevious bool
	// Attempt, Fence and StaleStaging fence the load into Into as the
	// engine's restores are fenced (engines.RestoreJob): a worker's
	// request attempt names its side databases and confirms its lease
	// right before the swap. Zero and nil in a restore run from the CLI.
	Attempt      int
	Fence        func(ctx context.Context) error
	StaleStaging func(ctx context.Context, id string, attempt int) (bool, error)
	// Phase, when set, is told what the restore does now.
	Phase func(string)
	// Identities open an encrypted base backup and encrypted WAL (the
	// worker's and the source's); without one that fits, the restore
	// fails naming the recipients that would.
	Identities *crypt.Identities
	// Trust judges the signatures of the base backups and of the WAL,
	// by the same rules: an untrusted one is never used (an unsigned one
	// only with AllowUnsigned). Nil checks none.
	Trust *index.Trust
}

// RestoreResult says what was restored.
type RestoreResult struct {
	// BackupID is the base backup the restore started from.
	BackupID string `json:"backupId"`
	// Target is the point asked for.
	Target   string `json:"target"`
	Timeline int32  `json:"timeline"`
	FromLSN  string `json:"fromLSN"`
	// WALUpTo is the end of the WAL staged for replay.
	WALUpTo string `json:"walUpTo"`
	// RecoveredLSN is where recovery ended, and RecoveredReason what
	// PostgreSQL recorded of why (the new timeline's history: "before
	// 2026-12-07 05:03:50+00", "at lsn 0/3000060", "no recovery target
	// specified" for the latest point).
	RecoveredLSN    string `json:"recoveredLSN,omitempty"`
	RecoveredReason string `json:"recoveredReason,omitempty"`
	// Bytes and StoredBytes are the base backup's sizes.
	Bytes       int64         `json:"bytes,omitempty"`
	StoredBytes int64         `json:"storedBytes,omitempty"`
	Downtime    time.Duration `json:"downtime,omitempty"`
	Previous    string        `json:"previous,omitempty"`
	DataDir     string        `json:"dataDir,omitempty"`
	// Tablespaces are, for a restore into a data directory, the
	// directories of its tablespaces by OID (in its TablespaceDir,
	// each linked from pg_tblspc/<oid>).
	Tablespaces map[string]string `json:"tablespaces,omitempty"`
}

// TablespaceDir is the directory in a data directory written by a
// restore (--to-dir) that holds the cluster's tablespaces other than
// the default, one directory per OID, each linked (by its absolute
// path) from pg_tblspc/<oid>: nothing is written outside the directory
// asked for. They belong beside the data directory: PostgreSQL runs
// with them where they are, but a base backup of the new server would
// copy them twice (as files of the data directory and as tablespaces);
// move each out and re-point its link first.
const TablespaceDir = "capsule_tablespaces"

// base is a committed base backup with its details.
type base struct {
	idx *index.BackupIndex
	d   *postgres.BaseDetails
	// start and stop: d's LSNs.
	start, stop pglogrepl.LSN
}

// bases lists a source's committed base backups, newest first, and
// says why it left out any that trust refuses.
func bases(ctx context.Context, b bucket.Reader, cluster, source string, trust *index.Trust) ([]base, []string, error) {
	entries, err := index.List(ctx, b, index.Filter{Cluster: cluster, Source: source, Trust: trust})
	if err != nil {
		return nil, nil, err
	}
	var out []base
	var refused []string
	for _, e := range entries {
		if e.Format != postgres.FormatBase || e.Status != requests.StatusSucceeded {
			continue
		}
		if err := e.TrustError(); err != nil {
			refused = append(refused, err.Error())
			continue
		}
		d, err := postgres.ReadBaseDetails(engines.BackupInfo{Format: e.Format, Details: e.Details})
		if err != nil {
			continue
		}
		start, _ := pglogrepl.ParseLSN(d.StartLSN)
		stop, _ := pglogrepl.ParseLSN(d.StopLSN)
		out = append(out, base{idx: e.BackupIndex, d: d, start: start, stop: stop})
	}
	return out, refused, nil
}

// covering is the span that holds every byte of WAL from the segment of
// bb's start through its stop, on bb's timeline; false when there is
// none.
func covering(spans []Span, bb base) (Span, bool) {
	from := segStart(bb.start, bb.d.WALSegmentSize)
	for _, s := range spans {
		if s.Timeline == bb.d.Timeline && s.Start <= from && s.End >= bb.stop {
			return s, true
		}
	}
	return Span{}, false
}

func segStart(l pglogrepl.LSN, segSize int64) pglogrepl.LSN {
	return pglogrepl.LSN(uint64(l) / uint64(segSize) * uint64(segSize))
}

// lastTime is the server's clock when it sent the last byte of span:
// the latest moment a restore from it recovers.
// Only the header is read (it is readable without a key), and judged
// by the opener's trust.
func lastTime(ctx context.Context, b bucket.Reader, o *opener, s Span) (time.Time, error) {
	obj, err := o.fetch(ctx, b, s.Segments[len(s.Segments)-1])
	return obj.h.ServerTime, err
}

// choose picks the newest base backup that the target can start from,
// with the WAL span it replays.
// Its errors that say the target can never be reached as asked wrap
// executor.ErrPointInTimeRefused.
func choose(ctx context.Context, b bucket.Reader, o *opener, cluster, source string, t Target) (base, route, error) {
	all, refused, err := bases(ctx, b, cluster, source, o.trust)
	if err != nil {
		return base{}, route{}, err
	}
	if len(all) == 0 && len(refused) > 0 {
		return base{}, route{}, fmt.Errorf("%w: source %s has no trusted base backup in cluster %s: %s", executor.ErrPointInTimeRefused, source, cluster, strings.Join(refused, "; "))
	}
	if len(all) == 0 {
		return base{}, route{}, fmt.Errorf("%w: source %s has no base backup in cluster %s: point-in-time restores start from one (pitr: true makes the source's backups base backups)", executor.ErrPointInTimeRefused, source, cluster)
	}
	segs, err := ListSegments(ctx, b, cluster, source)
	if err != nil {
		return base{}, route{}, err
	}
	spans := Spans(segs)
	reasons := refused
	for _, bb := range all {
		switch {
		case !t.Time.IsZero() && bb.idx.FinishedAt.After(t.Time):
			reasons = append(reasons, fmt.Sprintf("%s finished at %s, after the target", bb.idx.BackupID, bb.idx.FinishedAt.Format(time.RFC3339)))
			continue
		case t.LSN != 0 && bb.stop > t.LSN:
			reasons = append(reasons, fmt.Sprintf("%s ends at %s, after the target", bb.idx.BackupID, bb.stop))
			continue
		}
		r, ok, err := findRoute(ctx, b, o, spans, bb)
		if err != nil {
			return base{}, route{}, err
		}
		if !ok {
			reasons = append(reasons, fmt.Sprintf("%s: the bucket lacks WAL between %s and %s on timeline %d", bb.idx.BackupID, bb.start, bb.stop, bb.d.Timeline))
			continue
		}
		switch {
		case t.LSN != 0 && r.End() < t.LSN:
			return base{}, route{}, fmt.Errorf("%w: LSN %s is past the latest recoverable point %s", executor.ErrPointInTimeRefused, t.LSN, r.End())
		case !t.Time.IsZero():
			latest, err := lastTime(ctx, b, o, r.last())
			if err != nil {
				return base{}, route{}, err
			}
			if t.Time.After(latest) {
				return base{}, route{}, fmt.Errorf("%w: %s is after the latest recoverable point %s (use --latest for it)", executor.ErrPointInTimeRefused, t.Time.UTC().Format(time.RFC3339Nano), latest.UTC().Format(time.RFC3339Nano))
			}
		}
		return bb, r, nil
	}
	return base{}, route{}, fmt.Errorf("%w: no base backup of %s can reach %s: %s", executor.ErrPointInTimeRefused, source, t, strings.Join(reasons, "; "))
}

// recoveredHook, set by tests, runs while the temporary server is up,
// recovered and promoted, with its socket directory and port.
var recoveredHook func(socketDir string, port int)

// Restore recovers the source to cfg.Target in a temporary server and
// loads the result into cfg.Into, or leaves it in cfg.DataDir.
func Restore(ctx context.Context, cfg RestoreConfig) (*RestoreResult, error) {
	if err := cfg.Target.Validate(); err != nil {
		return nil, err
	}
	if (cfg.Into == nil) == (cfg.DataDir == "") {
		return nil, errors.New("restore into a server or into a data directory (--to-dir), one of them")
	}
	if cfg.Log == nil {
		cfg.Log = engines.DiscardLog()
	}
	log := cfg.Log.WithFields(logrus.Fields{"source": cfg.Source, "target": cfg.Target.String()})
	phase := func(p string) {
		if cfg.Phase != nil {
			cfg.Phase(p)
		}
	}
	o, err := newOpener(cfg.Cluster, cfg.Source, cfg.Identities, cfg.Trust)
	if err != nil {
		return nil, err
	}
	defer o.close()
	phase("choose base backup")
	bb, r, err := choose(ctx, cfg.Bucket, o, cfg.Cluster, cfg.Source, cfg.Target)
	if err != nil {
		return nil, err
	}
	log = log.WithField("backup_id", bb.idx.BackupID)
	if err := precheck(ctx, cfg.Bucket, o, bb, r.legs[0].Span); err != nil {
		return nil, err
	}
	bin, err := postgres.BinDir(bb.d.ServerVersionNum)
	if err != nil {
		return nil, err
	}
	if err := enterable(cfg.Scratch); err != nil {
		return nil, err
	}
	scratch, err := os.MkdirTemp(cfg.Scratch, "capsule-pitr-")
	if err != nil {
		return nil, fmt.Errorf("scratch space: %w", err)
	}
	defer os.RemoveAll(scratch)
	data := filepath.Join(scratch, "data")
	if cfg.DataDir != "" {
		data = cfg.DataDir
		if ents, err := os.ReadDir(data); err == nil && len(ents) > 0 {
			return nil, fmt.Errorf("--to-dir %s is not empty", data)
		}
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	srv, err := pgserver.New(bin, data, scratch)
	if err != nil {
		return nil, err
	}
	log.Info("unpacking the base backup")
	phase("unpack base backup")
	// Tablespaces go beside the temporary server's data directory, or
	// into the new data directory: nothing is written outside it.
	tsRoot := filepath.Join(scratch, "tablespaces")
	if cfg.DataDir != "" {
		tsRoot = filepath.Join(data, TablespaceDir)
	}
	tablespaces, err := unpackBase(ctx, executor.OpenArtifacts(cfg.Bucket, bb.idx, cfg.Identities), bb.d, data, tsRoot, nil)
	if err != nil {
		return nil, err
	}
	from := segStart(bb.start, bb.d.WALSegmentSize)
	log.WithField("from", from.String()).WithField("to", r.End().String()).WithField("timeline", r.Timeline()).Info("staging WAL")
	phase("stage WAL")
	if err := stageWAL(ctx, cfg.Bucket, o, r, bb, cfg.Target, filepath.Join(data, "pg_wal")); err != nil {
		return nil, err
	}
	autoConf, err := os.ReadFile(filepath.Join(data, "postgresql.auto.conf"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if u := bb.idx.SourceInfo["user"]; u != "" {
		// A role the cluster surely has: the one that made the backup.
		srv.User = u
	}
	if err := prepareRecovery(srv, scratch, cfg.Target, r.Timeline()); err != nil {
		return nil, err
	}
	cleanSocket, err := privateServer(srv, scratch)
	defer cleanSocket()
	if err != nil {
		return nil, err
	}
	if cfg.DataDir != "" {
		if err := srv.Own(data); err != nil {
			return nil, err
		}
	}
	log.Info("replaying WAL in a temporary server")
	phase("replay WAL")
	if err := srv.Start(ctx, 6*time.Hour); err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	defer srv.Kill()
	if err := waitPromoted(ctx, srv); err != nil {
		return nil, err
	}
	if recoveredHook != nil {
		recoveredHook(srv.Socket, srv.Port)
	}
	res := &RestoreResult{BackupID: bb.idx.BackupID, Target: cfg.Target.String(), Timeline: r.Timeline(),
		FromLSN: bb.start.String(), WALUpTo: r.End().String(), Bytes: bb.idx.Bytes, StoredBytes: bb.idx.StoredBytes}
	res.RecoveredLSN, res.RecoveredReason = recoveredPoint(filepath.Join(data, "pg_wal"))
	if cfg.DataDir != "" {
		if err := srv.Stop(); err != nil {
			return nil, err
		}
		// The recovery settings were the temporary server's: the new
		// server gets the source's own.
		if err := os.WriteFile(filepath.Join(data, "postgresql.auto.conf"), autoConf, 0o600); err != nil {
			return nil, err
		}
		if err := srv.Own(data); err != nil {
			return nil, err
		}
		res.DataDir, res.Tablespaces = data, tablespaces
		log.Info("data directory written")
		return res, nil
	}
	phase("load into target")
	info, err := load(ctx, srv, scratch, bb, cfg, log)
	if err != nil {
		return nil, err
	}
	res.Downtime, res.Previous = info.Downtime, info.Previous
	return res, nil
}

// precheck fails before anything is unpacked when the identities at
// hand open neither the base backup's encrypted artifacts nor its first
// WAL object, or that object is untrusted: a restore or verification
// learns it in seconds, not after copying the whole cluster. Every other
// object is still checked as it is staged.
func precheck(ctx context.Context, b bucket.Reader, o *opener, bb base, span Span) error {
	for _, art := range bb.idx.Artifacts {
		if art.Encryption == nil {
			continue
		}
		if art.Encryption.Scheme != crypt.Scheme {
			return fmt.Errorf("artifact %s of base backup %s is encrypted with %q: this capsule decrypts only %s", art.Name, bb.idx.BackupID, art.Encryption.Scheme, crypt.Scheme)
		}
		if err := o.ids.Check("base backup "+bb.idx.BackupID, art.Encryption.Recipients); err != nil {
			return err
		}
	}
	from := segStart(bb.start, bb.d.WALSegmentSize)
	for _, s := range span.Segments {
		if s.End <= from {
			continue
		}
		obj, err := o.fetch(ctx, b, s)
		if err != nil {
			return err
		}
		if obj.h.Encryption == crypt.Scheme {
			return o.ids.Check("WAL "+s.Key, obj.h.Recipients)
		}
		return nil
	}
	return nil
}

// unpack extracts a tar artifact into dir: directories, regular files
// and symbolic links, none outside dir.
func unpack(ctx context.Context, arts engines.ArtifactReader, name, dir string) error {
	rc, err := arts.Open(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			// The archive's end marker is not the artifact's end: read
			// to it, where the checksum's verdict comes. Without this, a
			// damaged archive whose tar structure survived was used.
			if _, err := io.Copy(io.Discard, rc); err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		clean := filepath.Clean(h.Name)
		if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("%s: entry %q leaves the data directory", name, h.Name)
		}
		p := filepath.Join(dir, clean)
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode|0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return fmt.Errorf("write %s: %w", clean, err)
			}
			if err := f.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			// pg_wal or pg_tblspc links of the source host mean
			// nothing here.
			if err := os.MkdirAll(p, 0o700); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: entry %q has an unexpected type %q", name, h.Name, h.Typeflag)
		}
	}
}

// stageWAL writes the segment files recovery replays into pg_wal,
// leg by leg of r: from the segment of bb's start to the end of the
// route (or the target LSN's segment), each timeline's WAL in its own
// timeline's files, and the bytes before a switch point in its segment
// also in the next timeline's file of it (as the server's own copy at
// a promotion has them), with the target timeline's history file. The
// last file holds zeros after the route's end, where recovery stops.
// Every object is checked (name, checksum, signature, the server it
// came from) before a byte of it is staged.
func stageWAL(ctx context.Context, b bucket.Reader, o *opener, r route, bb base, t Target, walDir string) error {
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return err
	}
	if r.hist != nil {
		name := filepath.Join(walDir, fmt.Sprintf("%08X.history", r.hist.tl))
		if err := os.WriteFile(name, r.hist.content, 0o600); err != nil {
			return err
		}
	}
	segSize := bb.d.WALSegmentSize
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	write := func(tl int32, at pglogrepl.LSN, data []byte) error {
		name := SegmentFileName(tl, at, segSize)
		f := files[name]
		if f == nil {
			// Few files are open at once: close those of earlier segments.
			for n, g := range files {
				if err := g.Close(); err != nil {
					return err
				}
				delete(files, n)
			}
			var err error
			if f, err = os.OpenFile(filepath.Join(walDir, name), os.O_CREATE|os.O_RDWR, 0o600); err != nil {
				return err
			}
			if err := f.Truncate(segSize); err != nil {
				f.Close()
				return err
			}
			files[name] = f
		}
		seg := uint64(at) / uint64(segSize)
		_, err := f.WriteAt(data, int64(uint64(at)-seg*uint64(segSize)))
		return err
	}
	for li, l := range r.legs {
		if t.LSN != 0 && l.From > t.LSN+pglogrepl.LSN(segSize) {
			break
		}
		for _, s := range l.Span.Segments {
			if s.End <= l.From || s.Start >= l.To {
				continue
			}
			if t.LSN != 0 && s.Start > t.LSN+pglogrepl.LSN(segSize) {
				break
			}
			wal, h, err := o.read(ctx, b, s)
			if err != nil {
				return err
			}
			if h.SystemID != "" && bb.d.SystemID != "" && h.SystemID != bb.d.SystemID {
				return fmt.Errorf("WAL %s is of the server with system identifier %s, the base backup %s of %s", s.Key, h.SystemID, bb.idx.BackupID, bb.d.SystemID)
			}
			from, to := max(s.Start, l.From), min(s.End, l.To)
			piece := wal[from-s.Start : to-s.Start]
			if err := write(l.Timeline, from, piece); err != nil {
				return err
			}
			if li < len(r.legs)-1 && segStart(from, segSize) == segStart(l.Switch, segSize) {
				if err := write(r.legs[li+1].Timeline, from, piece); err != nil {
					return err
				}
			}
		}
	}
	for n, f := range files {
		if err := f.Close(); err != nil {
			return err
		}
		delete(files, n)
	}
	return nil
}

// maxSocketPath is the longest Unix socket path Linux takes (sun_path
// holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// socketParent is the directory the temporary server's socket directory
// goes in: scratch, or a new private directory in the system's
// temporary directory when the socket's path under scratch would be too
// long for a Unix socket (the server would then have no way in at all).
func socketParent(scratch string) (string, error) {
	if len(filepath.Join(scratch, "sock", ".s.PGSQL.65535")) <= maxSocketPath {
		return scratch, nil
	}
	d, err := os.MkdirTemp("", "capsule-pitr-")
	if err != nil {
		return "", err
	}
	if len(filepath.Join(d, "sock", ".s.PGSQL.65535")) > maxSocketPath {
		os.RemoveAll(d)
		return "", fmt.Errorf("no short enough path for the temporary server's Unix socket: scratch %s and the temporary directory %s are too long", scratch, os.TempDir())
	}
	return d, nil
}

// prepareRecovery sets the temporary server up for targeted recovery:
// recovery.signal, the target, the timeline tl to follow, promotion at the target, no archiving,
// no hot standby, and its own pg_hba.conf (trust on its Unix socket
// only: the server listens on no TCP address, its socket directory is
// private, and it lives only as long as the restore).
func prepareRecovery(srv *pgserver.Server, scratch string, t Target, tl int32) error {
	hba := filepath.Join(scratch, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("local all all trust\n"), 0o600); err != nil {
		return err
	}
	srv.HBAFile = hba
	conf := filepath.Join(srv.Dir, "postgresql.conf")
	if _, err := os.Stat(conf); os.IsNotExist(err) {
		// Debian keeps the configuration in /etc: the backup has none.
		if err := os.WriteFile(conf, nil, 0o600); err != nil {
			return err
		}
	}
	for _, f := range []string{"pg_ident.conf"} {
		p := filepath.Join(srv.Dir, f)
		if _, err := os.Stat(p); os.IsNotExist(err) {
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				return err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(srv.Dir, "recovery.signal"), nil, 0o600); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(srv.Dir, "standby.signal"))
	settings := map[string]string{
		// WAL is staged in pg_wal; there is no archive to ask.
		"restore_command":          "false",
		"recovery_target_action":   "promote",
		"recovery_target_timeline": strconv.Itoa(int(tl)),
		"archive_mode":             "off",
		"hot_standby":              "off",
		"primary_conninfo":         "",
		"primary_slot_name":        "",
		"ssl":                      "off",
		"shared_preload_libraries": "",
	}
	switch {
	case t.immediate:
		settings["recovery_target"] = "immediate"
	case !t.Time.IsZero():
		settings["recovery_target_time"] = t.Time.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
	case t.LSN != 0:
		settings["recovery_target_lsn"] = t.LSN.String()
	}
	return srv.Configure("postgresql.auto.conf", settings)
}

// waitPromoted waits until recovery reached its target and the server
// left recovery.
func waitPromoted(ctx context.Context, srv *pgserver.Server) error {
	for {
		conn, err := srv.Connect(ctx, "template1")
		if err == nil {
			var in bool
			err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&in)
			conn.Close(context.Background())
			if err == nil && !in {
				return nil
			}
		}
		if exited, werr := srv.Exited(); exited {
			return fmt.Errorf("recovery failed (%v): %s", werr, srv.Tail(2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// load dumps the recovered databases from the temporary server with the
// postgres engine and restores them into cfg.Into the way every
// postgres restore goes: side databases, swapped in by rename. The dump
// is staged in scratch: the temporary server is gone before the swap
// finishes otherwise.
func load(ctx context.Context, srv *pgserver.Server, scratch string, bb base, cfg RestoreConfig, log logrus.FieldLogger) (*engines.RestoreInfo, error) {
	conn, err := srv.Connect(ctx, "template1")
	if err != nil {
		return nil, err
	}
	var super string
	err = conn.QueryRow(ctx, `SELECT rolname FROM pg_roles WHERE oid = 10`).Scan(&super)
	conn.Close(context.Background())
	if err != nil {
		return nil, fmt.Errorf("find the recovered cluster's superuser: %w", err)
	}
	db, all, err := targetDatabase(*cfg.Into)
	if err != nil {
		return nil, err
	}
	tmpSettings := map[string]any{
		"url": srv.URLAs(super, db),
	}
	if all {
		tmpSettings["databases"] = "all"
	}
	dumpDir := filepath.Join(scratch, "dump")
	if err := os.MkdirAll(dumpDir, 0o700); err != nil {
		return nil, err
	}
	eng := postgres.New()
	arts := &dirArtifacts{dir: dumpDir}
	log.Info("dumping the recovered data from the temporary server")
	info, err := eng.Backup(ctx, &engines.BackupJob{ID: cfg.ID,
		Source:    engines.Source{Name: cfg.Source + "@" + cfg.Target.String(), Engine: "postgres", Config: tmpSettings},
		Artifacts: arts, Log: log})
	if err != nil {
		return nil, fmt.Errorf("dump the recovered data: %w", err)
	}
	srv.Kill()
	log.Info("restoring into the live server")
	id := cfg.ID
	if id == "" {
		id = requests.NewID()
	}
	ri, err := eng.Restore(ctx, &engines.RestoreJob{ID: id, Attempt: max(cfg.Attempt, 1), Fence: cfg.Fence, StaleStaging: cfg.StaleStaging,
		Target: *cfg.Into, Backup: *info, Artifacts: arts,
		Options: engines.RestoreOptions{DropPrevious: cfg.DropPrevious, Extra: cfg.Options}, Log: log})
	if err != nil {
		return nil, err
	}
	return ri, nil
}

// targetDatabase reads the database a postgres source names, and whether
// it covers every database.
func targetDatabase(src engines.Source) (string, bool, error) {
	raw, _ := src.Config["url"].(string)
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return "", false, fmt.Errorf("source %s: url: not a postgres URL", src.Name)
	}
	db := strings.TrimPrefix(u.Path, "/")
	all := src.Config["databases"] == "all"
	if db == "" {
		db = "postgres"
	}
	return db, all, nil
}

// dirArtifacts keeps a dump's artifacts as files in a scratch directory.
type dirArtifacts struct {
	dir   string
	names []string
}

func (d *dirArtifacts) Create(name string) (io.WriteCloser, error) {
	if filepath.Base(name) != name || name == "." || name == ".." {
		return nil, fmt.Errorf("bad artifact name %q", name)
	}
	f, err := os.OpenFile(filepath.Join(d.dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	d.names = append(d.names, name)
	return f, nil
}

func (d *dirArtifacts) Names() []string { return d.names }

func (d *dirArtifacts) Open(_ context.Context, name string) (io.ReadCloser, error) {
	for _, n := range d.names {
		if n == name {
			return os.Open(filepath.Join(d.dir, name))
		}
	}
	return nil, fmt.Errorf("no artifact %s", name)
}

func (d *dirArtifacts) Verify(ctx context.Context, name string) error {
	rc, err := d.Open(ctx, name)
	if err != nil {
		return err
	}
	return rc.Close()
}

// enterable checks, when capsule runs as root (the temporary server
// then runs as user postgres), that every directory down to scratch is
// searchable by other users: postgres fails with a bare "permission
// denied" otherwise.
func enterable(scratch string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if scratch == "" {
		scratch = os.TempDir()
	}
	abs, err := filepath.Abs(scratch)
	if err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("scratch space: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("scratch space %s: directory %s is not searchable by other users (mode %v), and the temporary server runs as user postgres: chmod o+x it or choose another (worker.scratch, --scratch)", abs, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// recoveredPoint reads where recovery ended from the newest timeline
// history file in walDir (written at promotion): its last line is the
// parent timeline, the switch LSN and PostgreSQL's reason. Empty when
// there is none.
func recoveredPoint(walDir string) (lsn, reason string) {
	hist, _ := filepath.Glob(filepath.Join(walDir, "*.history"))
	if len(hist) == 0 {
		return "", ""
	}
	sort.Strings(hist) // hex timeline ids of equal width
	data, err := os.ReadFile(hist[len(hist)-1])
	if err != nil {
		return "", ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	f := strings.SplitN(lines[len(lines)-1], "\t", 3)
	if len(f) < 2 {
		return "", ""
	}
	lsn = strings.TrimSpace(f[1])
	if len(f) == 3 {
		reason = strings.TrimSpace(f[2])
	}
	return lsn, reason
}

// tablespaceArchive matches the archive BASE_BACKUP sends for a
// tablespace: its OID.
var tablespaceArchive = regexp.MustCompile(`^[1-9][0-9]{0,9}\.tar$`)

// unpackBase unpacks a base backup: base.tar into data, and each
// tablespace's archive (<oid>.tar) into tsRoot/<oid>, with
// pg_tblspc/<oid> in data made a link to it (the source host's
// location, which base.tar's link names, means nothing here and is
// never followed). It returns the tablespace directories by OID. An
// archive name that is not an OID's, or a link that would lead out of
// tsRoot, is refused. checked, when set, is told of each archive as it
// was unpacked or failed.
func unpackBase(ctx context.Context, arts engines.ArtifactReader, d *postgres.BaseDetails, data, tsRoot string, checked func(name string, err error) error) (map[string]string, error) {
	if checked == nil {
		checked = func(_ string, err error) error { return err }
	}
	if err := checked(postgres.BaseArtifact, unpack(ctx, arts, postgres.BaseArtifact, data)); err != nil {
		return nil, err
	}
	// A tablespace_map would have recovery make links to the source
	// host's locations: the links are made here instead.
	if err := os.Remove(filepath.Join(data, "tablespace_map")); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	root, err := filepath.Abs(tsRoot)
	if err != nil {
		return nil, err
	}
	var dirs map[string]string
	for _, name := range d.Archives {
		if name == postgres.BaseArtifact {
			continue
		}
		if !tablespaceArchive.MatchString(name) {
			return nil, checked(name, fmt.Errorf("base backup archive %q is neither %s nor a tablespace's <oid>.tar: refused", name, postgres.BaseArtifact))
		}
		oid := strings.TrimSuffix(name, ".tar")
		dir := filepath.Join(root, oid)
		if rel, err := filepath.Rel(root, dir); err != nil || rel != oid {
			return nil, checked(name, fmt.Errorf("tablespace %s would leave %s: refused", oid, root))
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if err := checked(name, unpack(ctx, arts, name, dir)); err != nil {
			return nil, err
		}
		link := filepath.Join(data, "pg_tblspc", oid)
		// base.tar held the link as an entry, unpacked as an empty
		// directory: anything in it is not a link's.
		if err := os.Remove(link); err != nil && !os.IsNotExist(err) {
			return nil, checked(name, fmt.Errorf("pg_tblspc/%s in %s is not the tablespace's link: %w", oid, postgres.BaseArtifact, err))
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
			return nil, err
		}
		if err := os.Symlink(dir, link); err != nil {
			return nil, err
		}
		if dirs == nil {
			dirs = map[string]string{}
		}
		dirs[oid] = dir
	}
	return dirs, nil
}

// privateServer gives the temporary server on scratch to its user and
// makes it reachable only through a private socket. The temporary server
// trusts every connection: it listens on no TCP address, only on a socket
// in a directory no other user can enter, so no other user or pod process
// on this host reads the recovered data or connects as its superuser. The
// returned function removes the socket's directory when it is not under
// scratch (a scratch path too deep for a socket path).
func privateServer(srv *pgserver.Server, scratch string) (func(), error) {
	none := func() {}
	if err := srv.Own(scratch); err != nil {
		return none, err
	}
	srv.SocketOnly = true
	sockParent, err := socketParent(scratch)
	if err != nil {
		return none, err
	}
	clean := none
	if sockParent != scratch {
		clean = func() { os.RemoveAll(sockParent) }
		if err := srv.Own(sockParent); err != nil {
			return clean, err
		}
	}
	if err := srv.PrivateSocket(filepath.Join(sockParent, "sock")); err != nil {
		return clean, err
	}
	return clean, nil
}
