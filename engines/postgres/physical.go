package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/internal/pgserver"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// FormatBase is the BackupInfo.Format of a physical base backup
// (BASE_BACKUP over the replication protocol): one tar archive of the
// data directory, artifact BaseArtifact, restored by point-in-time
// recovery with the WAL the stream keeps in the bucket.
const FormatBase = "pg_basebackup-tar.v1"

// BaseArtifact is the artifact of a base backup that holds the data
// directory (the server's base.tar).
const BaseArtifact = "base.tar"

// Slot limits' defaults (see config).
const (
	defaultSlotAlert = 1 << 30
	defaultSlotMax   = 8 << 30
)

// minPITRVersion is the oldest server a base backup reads: PostgreSQL 15
// sends every archive in one COPY stream, which is what baseBackup reads.
const minPITRVersion = 150000

// BaseDetails is what BackupInfo.Details holds for a base backup.
type BaseDetails struct {
	Mode string `json:"mode"` // "base"
	// StartLSN and StopLSN bound the WAL a restore must replay at least
	// (from the checkpoint the backup began at to its end); Timeline is
	// the server's timeline when it began.
	StartLSN string `json:"startLSN"`
	StopLSN  string `json:"stopLSN"`
	Timeline int32  `json:"timeline"`
	// SystemID is the server's system identifier: WAL of another
	// cluster never replays onto this backup.
	SystemID         string    `json:"systemId"`
	ServerVersionNum int       `json:"serverVersionNum"`
	WALSegmentSize   int64     `json:"walSegmentSize"`
	Archives         []string  `json:"archives"`
	BackupStart      time.Time `json:"backupStart"`
	BackupStop       time.Time `json:"backupStop"`
	// Databases are the server's databases and their tables when the
	// backup began: a verification checks that the recovered cluster
	// has them. Empty in base backups taken before they were recorded.
	Databases []BaseDatabase `json:"databases,omitempty"`
}

// ReadBaseDetails reads a base backup's details; an error when info is
// not one.
func ReadBaseDetails(info engines.BackupInfo) (*BaseDetails, error) {
	if info.Format != FormatBase {
		return nil, fmt.Errorf("backup format %q is not a base backup (%s)", info.Format, FormatBase)
	}
	var d BaseDetails
	if err := (engines.Source{Name: "backup", Engine: "postgres", Config: info.Details}).Decode(&d); err != nil {
		return nil, fmt.Errorf("base backup details: %w", err)
	}
	if _, err := pglogrepl.ParseLSN(d.StartLSN); err != nil {
		return nil, fmt.Errorf("base backup details: startLSN: %w", err)
	}
	if _, err := pglogrepl.ParseLSN(d.StopLSN); err != nil {
		return nil, fmt.Errorf("base backup details: stopLSN: %w", err)
	}
	if d.Timeline < 1 || d.WALSegmentSize <= 0 || d.ServerVersionNum <= 0 {
		return nil, errors.New("base backup details: timeline, walSegmentSize and serverVersionNum are required")
	}
	return &d, nil
}

// PITR reports whether src has point-in-time recovery on, and its slot
// limits.
func PITR(src engines.Source) (on bool, alertBytes, maxBytes int64, err error) {
	ci, err := parseSource(src)
	if err != nil {
		return false, 0, 0, err
	}
	return ci.pitr, ci.slotAlert, ci.slotMax, nil
}

var slotUnsafe = regexp.MustCompile(`[^a-z0-9_]+`)

// SlotName is the physical replication slot capsule creates for source:
// capsule_<source> in the characters a slot name takes (a-z, 0-9, _),
// with a hash of the name when it had others, within 63 bytes.
func SlotName(source string) string {
	clean := slotUnsafe.ReplaceAllString(strings.ToLower(source), "_")
	name := "capsule_" + clean
	if clean != source || len(name) > 63 {
		sum := sha256.Sum256([]byte(source))
		name = "capsule_" + clean[:min(len(clean), 45)] + "_" + hex.EncodeToString(sum[:4])
	}
	return name
}

// Replication is an open physical replication connection to a source.
type Replication struct {
	Conn       *pgconn.PgConn
	SystemID   string
	Timeline   int32
	XLogPos    pglogrepl.LSN
	VersionNum int
	Version    string
	// SegmentSize is the server's wal_segment_size in bytes.
	SegmentSize int64
	// Slot is the source's slot name (SlotName).
	Slot string
}

// Close closes the connection.
func (r *Replication) Close() { _ = r.Conn.Close(context.Background()) }

// OpenReplication connects to src for physical replication and checks
// what streaming needs, with an error that names the missing setting:
// a role with REPLICATION, a pg_hba.conf line for replication, a free
// WAL sender, wal_level replica or logical.
func OpenReplication(ctx context.Context, src engines.Source) (*Replication, error) {
	j, err := New().newJob(ctx, src, nil)
	if err != nil {
		return nil, err
	}
	return openReplication(ctx, src.Name, j.ci, j.password)
}

func openReplication(ctx context.Context, source string, ci *conninfo, password string) (*Replication, error) {
	pc, err := connConfig(ci, password, ci.database)
	if err != nil {
		return nil, fmt.Errorf("replication connection: %w", err)
	}
	cc := &pc.Config
	cc.RuntimeParams["replication"] = "true"
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cc)
	if err != nil {
		return nil, replicationError(ci, scrub(err, password))
	}
	r := &Replication{Conn: conn, Slot: SlotName(source), Version: conn.ParameterStatus("server_version")}
	fail := func(err error) (*Replication, error) { r.Close(); return nil, err }
	if r.VersionNum, err = versionNum(r.Version); err != nil {
		return fail(err)
	}
	level, err := show(ctx, conn, "wal_level")
	if err != nil {
		return fail(err)
	}
	if level == "minimal" {
		return fail(fmt.Errorf("server %s:%s has wal_level = minimal: point-in-time recovery needs wal_level = replica (or logical) in postgresql.conf, then a restart", ci.host, ci.port))
	}
	seg, err := show(ctx, conn, "wal_segment_size")
	if err != nil {
		return fail(err)
	}
	if r.SegmentSize, err = parseSize(seg); err != nil {
		return fail(fmt.Errorf("wal_segment_size %q: %w", seg, err))
	}
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fail(replicationError(ci, err))
	}
	r.SystemID, r.Timeline, r.XLogPos = sys.SystemID, sys.Timeline, sys.XLogPos
	return r, nil
}

// replicationError explains the server's refusals of a replication
// connection by the setting that decides them.
func replicationError(ci *conninfo, err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return fmt.Errorf("replication connection to %s:%s as %s: %w", ci.host, ci.port, ci.user, err)
	}
	msg := pe.Message
	switch {
	case strings.Contains(msg, "replication connection"):
		return fmt.Errorf("replication connection to %s:%s as %s refused by pg_hba.conf: add a line such as \"host replication %s <worker address> scram-sha-256\": %w", ci.host, ci.port, ci.user, ci.user, err)
	case strings.Contains(msg, "replication role") || strings.Contains(msg, "REPLICATION attribute") || pe.Code == "42501":
		return fmt.Errorf("role %s lacks REPLICATION on %s:%s (ALTER ROLE %s REPLICATION): %w", ci.user, ci.host, ci.port, ident(ci.user), err)
	case strings.Contains(msg, "max_wal_senders"):
		return fmt.Errorf("no free WAL sender on %s:%s: raise max_wal_senders (it counts every streaming replica and capsule): %w", ci.host, ci.port, err)
	case strings.Contains(msg, "wal_level"):
		return fmt.Errorf("server %s:%s: point-in-time recovery needs wal_level = replica (or logical): %w", ci.host, ci.port, err)
	}
	return fmt.Errorf("replication connection to %s:%s as %s: %w", ci.host, ci.port, ci.user, err)
}

// show runs SHOW name on a replication connection.
func show(ctx context.Context, conn *pgconn.PgConn, name string) (string, error) {
	res, err := conn.Exec(ctx, "SHOW "+name).ReadAll()
	if err != nil {
		return "", fmt.Errorf("SHOW %s: %w", name, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return "", fmt.Errorf("SHOW %s: unexpected answer", name)
	}
	return string(res[0].Rows[0][0]), nil
}

// parseSize reads a PostgreSQL memory setting as SHOW gives it ("16MB").
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mul    int64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
			if err != nil || v <= 0 {
				return 0, errors.New("not a size")
			}
			return v * u.mul, nil
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, errors.New("not a size")
	}
	return v, nil
}

// SlotState is what the server says about capsule's slot.
type SlotState struct {
	Exists bool
	Active bool
	// RestartLSN is the oldest WAL the slot keeps.
	RestartLSN pglogrepl.LSN
	// LagBytes is the WAL the slot holds back: the server's current
	// position minus RestartLSN.
	LagBytes int64
}

// sqlConn opens an ordinary connection to src's database, for the
// slot's SQL functions and views.
func sqlConn(ctx context.Context, src engines.Source) (*pgx.Conn, error) {
	j, err := New().newJob(ctx, src, nil)
	if err != nil {
		return nil, err
	}
	return j.connect(ctx, j.ci.database)
}

// Slot reads the state of src's slot over an ordinary connection.
func Slot(ctx context.Context, src engines.Source) (SlotState, error) {
	conn, err := sqlConn(ctx, src)
	if err != nil {
		return SlotState{}, err
	}
	defer conn.Close(context.Background())
	var st SlotState
	var restart *string
	var lag *int64
	err = conn.QueryRow(ctx, `SELECT active, restart_lsn::text, (pg_current_wal_lsn() - restart_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, SlotName(src.Name)).Scan(&st.Active, &restart, &lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read slot %s: %w", SlotName(src.Name), err)
	}
	st.Exists = true
	if restart != nil {
		if st.RestartLSN, err = pglogrepl.ParseLSN(*restart); err != nil {
			return st, err
		}
	}
	if lag != nil {
		st.LagBytes = *lag
	}
	return st, nil
}

// EnsureSlot creates src's physical slot, reserving WAL at once, unless
// it exists. The server then keeps every WAL segment from the slot's
// position until the stream confirms it is in the bucket.
func (r *Replication) EnsureSlot(ctx context.Context) (created bool, err error) {
	_, err = r.Conn.Exec(ctx, fmt.Sprintf("CREATE_REPLICATION_SLOT %s PHYSICAL RESERVE_WAL", ident(r.Slot))).ReadAll()
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &pe) && pe.Code == "42710": // duplicate_object
		return false, nil
	case errors.As(err, &pe) && strings.Contains(pe.Message, "max_replication_slots"):
		return false, fmt.Errorf("cannot create replication slot %s: raise max_replication_slots: %w", r.Slot, err)
	case errors.As(err, &pe) && strings.Contains(pe.Message, "wal_level"):
		return false, fmt.Errorf("cannot create replication slot %s: wal_level must be replica or logical: %w", r.Slot, err)
	}
	return false, fmt.Errorf("create replication slot %s: %w", r.Slot, err)
}

// TakeSlot ends the WAL sender that holds src's slot, if any: a stream
// that holds the lease takes the slot from a predecessor that lost it
// but still has its connection (paused, partitioned from the bucket),
// rather than wait for wal_sender_timeout.
func TakeSlot(ctx context.Context, src engines.Source) error {
	conn, err := sqlConn(ctx, src)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	slot := SlotName(src.Name)
	for i := 0; i < 50; i++ {
		var active bool
		err := conn.QueryRow(ctx, `SELECT coalesce(bool_or(pg_terminate_backend(active_pid)), false) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot).Scan(&active)
		if err != nil {
			return fmt.Errorf("end the WAL sender of slot %s: %w", slot, err)
		}
		if !active {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("slot %s stays active", slot)
}

// DropSlot drops src's slot, ending the WAL sender that holds it first.
// The server frees the WAL the slot kept; the stream starts over with a
// new slot and a gap in the bucket's WAL that the next base backup ends.
func DropSlot(ctx context.Context, src engines.Source) error {
	conn, err := sqlConn(ctx, src)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	slot := SlotName(src.Name)
	for i := 0; ; i++ {
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
		if err == nil || i >= 20 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("drop replication slot %s: %w", slot, err)
	}
	return nil
}

// baseBackup writes a physical base backup of the server: every archive
// BASE_BACKUP sends becomes an artifact (base.tar for the data
// directory, <oid>.tar per tablespace), streamed with no local copy.
// The WAL it needs is not in it: the source's stream keeps it in the
// bucket, and the slot (created here when missing) keeps it on the
// server until then.
func (e *Engine) baseBackup(ctx context.Context, j *job, bj *engines.BackupJob) (*engines.BackupInfo, error) {
	rep, err := openReplication(ctx, bj.Source.Name, j.ci, j.password)
	if err != nil {
		return nil, err
	}
	defer rep.Close()
	if rep.VersionNum < minPITRVersion {
		return nil, fmt.Errorf("server %s:%s is PostgreSQL %s: capsule's base backups need 15 or later", j.ci.host, j.ci.port, rep.Version)
	}
	if _, err := rep.EnsureSlot(ctx); err != nil {
		return nil, err
	}
	d := BaseDetails{Mode: "base", SystemID: rep.SystemID, ServerVersionNum: rep.VersionNum,
		WALSegmentSize: rep.SegmentSize, BackupStart: time.Now().UTC()}
	// Recorded before the copy begins: a table dropped while it runs is
	// the only way a verification can miss a recorded one.
	if d.Databases, err = j.baseCatalog(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		j.log.WithError(err).Warn("could not record the databases and tables of the base backup: its verifications will not check them")
	}
	start, err := pglogrepl.StartBaseBackup(ctx, rep.Conn, pglogrepl.BaseBackupOptions{
		Label: "capsule " + bj.ID, Fast: true, NoWait: true, Progress: true,
	})
	if err != nil {
		return nil, replicationError(j.ci, fmt.Errorf("BASE_BACKUP: %w", err))
	}
	d.StartLSN, d.Timeline = start.LSN.String(), start.TimelineID
	var (
		w     io.WriteCloser
		total int64
		done  int64
	)
	closeOpen := func() error {
		if w == nil {
			return nil
		}
		err := w.Close()
		w = nil
		return err
	}
	defer func() { _ = closeOpen() }()
	for _, ts := range start.Tablespaces {
		total += int64(ts.Size) // pglogrepl reads sizes as int8: an estimate at best
	}
copying:
	for {
		msg, err := rep.Conn.ReceiveMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("BASE_BACKUP: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyOutResponse, *pgproto3.NoticeResponse:
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case 'n': // a new archive: name\0 location\0
				if err := closeOpen(); err != nil {
					return nil, err
				}
				parts := strings.SplitN(string(m.Data[1:]), "\x00", 3)
				name := parts[0]
				if filepath.Base(name) != name || !strings.HasSuffix(name, ".tar") {
					return nil, fmt.Errorf("BASE_BACKUP: unexpected archive name %q", name)
				}
				if w, err = bj.Artifacts.Create(name); err != nil {
					return nil, err
				}
				d.Archives = append(d.Archives, name)
			case 'd':
				if w == nil {
					return nil, errors.New("BASE_BACKUP: data before an archive began")
				}
				if _, err := w.Write(m.Data[1:]); err != nil {
					return nil, err
				}
				done += int64(len(m.Data) - 1)
			case 'p':
				if bj.Progress != nil && len(m.Data) >= 9 {
					bj.Progress.Report("basebackup", done, max(total, done))
				}
			case 'm':
				// A manifest was not asked for; never written.
				return nil, errors.New("BASE_BACKUP: unexpected manifest")
			default:
				return nil, fmt.Errorf("BASE_BACKUP: unexpected message %q", m.Data[0])
			}
		case *pgproto3.CopyDone:
			break copying
		case *pgproto3.ErrorResponse:
			return nil, replicationError(j.ci, pgconn.ErrorResponseToPgError(m))
		default:
			return nil, fmt.Errorf("BASE_BACKUP: unexpected %T", msg)
		}
	}
	if err := closeOpen(); err != nil {
		return nil, err
	}
	stop, err := pglogrepl.FinishBaseBackup(ctx, rep.Conn)
	if err != nil {
		return nil, fmt.Errorf("BASE_BACKUP: %w", err)
	}
	d.StopLSN, d.BackupStop = stop.LSN.String(), time.Now().UTC()
	// The data directory's archive comes after the tablespaces'.
	if !slices.Contains(d.Archives, BaseArtifact) {
		return nil, fmt.Errorf("BASE_BACKUP: sent no %s", BaseArtifact)
	}
	m, err := toMap(d)
	if err != nil {
		return nil, err
	}
	j.log.WithField("start_lsn", d.StartLSN).WithField("stop_lsn", d.StopLSN).Info("base backup streamed")
	return &engines.BackupInfo{
		Format: FormatBase, ServerVersion: rep.Version, ToolVersion: "BASE_BACKUP",
		SourceInfo: map[string]string{"host": j.ci.host, "port": j.ci.port, "user": j.ci.user, "database": j.ci.database, "mode": "base"},
		Details:    m,
	}, nil
}

// BinDir finds the server programs (initdb, postgres, pg_ctl) of a major
// version: $CAPSULE_PG_BINDIR when set, else Debian's and Red Hat's
// places, else the directory of the postgres program on PATH when it is
// of that major.
func BinDir(serverNum int) (string, error) {
	_, maj := major(serverNum)
	var tried []string
	cands := []string{os.Getenv("CAPSULE_PG_BINDIR"),
		"/usr/lib/postgresql/" + maj + "/bin", "/usr/pgsql-" + maj + "/bin", "/usr/local/pgsql/bin"}
	for _, dir := range cands {
		if dir == "" {
			continue
		}
		tried = append(tried, dir)
		out, err := pgserver.ProgramVersion(dir, "postgres")
		if err != nil {
			continue
		}
		v, err := parseToolVersion("postgres", out)
		if err != nil {
			continue
		}
		if n, err := versionNum(v); err == nil && n/10000 == serverNum/10000 {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL %s server programs found (tried %s; set CAPSULE_PG_BINDIR)", maj, strings.Join(tried, ", "))
}
