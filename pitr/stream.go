package pitr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/index"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
)

// DefaultFlushEvery is how often the stream writes what it received
// when a segment is not full: the bound on what a disaster loses.
const DefaultFlushEvery = time.Second

// statusEvery is how often the stream tells the server where it is
// even when nothing was written (well inside wal_sender_timeout).
const statusEvery = 10 * time.Second

// StreamConfig is one source's WAL stream.
type StreamConfig struct {
	Bucket  bucket.Bucket
	Cluster string
	Source  engines.Source
	Leaser  Leaser
	// FlushEvery: default DefaultFlushEvery.
	FlushEvery time.Duration
	// Retry is the pause before taking the lease again, or reconnecting
	// after an error; default 2s.
	Retry time.Duration
	Log   logrus.FieldLogger
	// Written, when set, sees every object the stream wrote.
	Written func(Segment, Header)
	// Recipients are the public keys (package crypt) the WAL is
	// encrypted to when the source names none of its own
	// (Source.Recipients), as the executor does for backups: the
	// worker's. Neither: WAL is stored compressed, not encrypted.
	Recipients []string
	// Signer, when set, signs every WAL object (its header, which holds
	// the payload's sha256), inside the object.
	Signer *index.Signer
	// RetainFor, when set, asks the bucket to keep every WAL object
	// immutable for this long (S3 Object Lock), as the executor does for
	// backups (worker.retainFor).
	RetainFor time.Duration
}

// Stream streams one source's WAL into the bucket.
type Stream struct {
	cfg  StreamConfig
	seal *sealer
	// confirmed is the position the bucket acknowledged (LSN), for
	// metrics; serverTime the server's clock of its last byte (unix ns).
	confirmed  atomic.Uint64
	serverTime atomic.Int64
}

// NewStream checks cfg and returns the stream.
func NewStream(cfg StreamConfig) (*Stream, error) {
	if cfg.Bucket == nil || cfg.Leaser == nil || cfg.Source.Name == "" || cfg.Cluster == "" {
		return nil, errors.New("wal stream: bucket, leaser, cluster and source are required")
	}
	if on, _, _, err := postgres.PITR(cfg.Source); err != nil {
		return nil, err
	} else if !on {
		return nil, fmt.Errorf("source %s: pitr is not on", cfg.Source.Name)
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = DefaultFlushEvery
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = engines.DiscardLog()
	}
	cfg.Log = cfg.Log.WithFields(logrus.Fields{"source": cfg.Source.Name, "cluster": cfg.Cluster, "job": "wal-stream"})
	specs := cfg.Source.Recipients
	if len(specs) == 0 {
		specs = cfg.Recipients
	}
	rec, err := crypt.ParseRecipients(specs)
	if err != nil {
		return nil, fmt.Errorf("source %s: recipients: %w", cfg.Source.Name, err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &Stream{cfg: cfg, seal: &sealer{enc: enc, recipients: rec, signer: cfg.Signer,
		cluster: cfg.Cluster, source: cfg.Source.Name}}, nil
}

// Confirmed is the WAL position the bucket holds, and the server's
// clock when it sent its last byte.
func (s *Stream) Confirmed() (pglogrepl.LSN, time.Time) {
	return pglogrepl.LSN(s.confirmed.Load()), time.Unix(0, s.serverTime.Load())
}

// Run holds the stream until ctx ends: it takes the lease (waiting
// while another worker holds it), streams, and when the lease is lost
// stops writing at once and competes for it again.
func (s *Stream) Run(ctx context.Context) error {
	key := LockKey(s.cfg.Cluster, s.cfg.Source.Name)
	for ctx.Err() == nil {
		le, err := s.cfg.Leaser.Acquire(ctx, key)
		if err != nil {
			if !errors.Is(err, ErrHeld) {
				s.cfg.Log.WithError(err).Warn("cannot take the stream's lease")
			}
			sleep(ctx, s.cfg.Retry)
			continue
		}
		log := s.cfg.Log.WithField("attempt", le.Attempt())
		log.Info("holding the WAL stream")
		err = s.hold(ctx, le, log)
		_ = le.Release(ctx)
		if err != nil && ctx.Err() == nil {
			log.WithError(err).Warn("WAL stream stopped")
		}
	}
	return context.Cause(ctx)
}

// hold streams under le, reconnecting after errors, until the lease is
// lost or ctx ends.
func (s *Stream) hold(ctx context.Context, le Lease, log logrus.FieldLogger) error {
	for {
		err := s.streamOnce(ctx, le, log)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrLeaseLost):
			return err
		}
		log.WithError(err).Warn("WAL stream interrupted; reconnecting")
		select {
		case <-le.Lost():
			return ErrLeaseLost
		case <-ctx.Done():
			return nil
		case <-time.After(s.cfg.Retry):
		}
	}
}

// streamOnce opens a replication connection and streams until an error,
// the lease's loss or ctx's end.
func (s *Stream) streamOnce(ctx context.Context, le Lease, log logrus.FieldLogger) error {
	rep, err := postgres.OpenReplication(ctx, s.cfg.Source)
	if err != nil {
		return err
	}
	defer rep.Close()
	created, err := rep.EnsureSlot(ctx)
	if err != nil {
		return err
	}
	if created {
		log.WithField("slot", rep.Slot).Info("created replication slot")
	}
	st, err := postgres.Slot(ctx, s.cfg.Source)
	if err != nil {
		return err
	}
	if !st.Exists || st.RestartLSN == 0 {
		return fmt.Errorf("replication slot %s keeps no WAL", rep.Slot)
	}
	segSize := uint64(rep.SegmentSize)
	start := pglogrepl.LSN(uint64(st.RestartLSN) / segSize * segSize)
	segs, err := ListSegments(ctx, s.cfg.Bucket, s.cfg.Cluster, s.cfg.Source.Name)
	if err != nil {
		return err
	}
	end := func(tl int32) pglogrepl.LSN {
		var have pglogrepl.LSN
		for _, sg := range segs {
			if sg.Timeline == tl && sg.End > have {
				have = sg.End
			}
		}
		return have
	}
	tl := rep.Timeline
	have := end(tl)
	if tl > 1 {
		// A promotion began this timeline: its history goes into the
		// bucket (restores follow it), and when the bucket lacks the
		// parent's WAL up to the switch, that comes first (the server
		// sends a past timeline up to its end).
		parent, switchLSN, err := s.history(ctx, le, rep)
		if err != nil {
			return err
		}
		if have == 0 {
			if hp := end(parent); hp >= start && hp < switchLSN {
				tl, have = parent, hp
			} else if first := pglogrepl.LSN(uint64(switchLSN) / segSize * segSize); start < first {
				// The server has this timeline's files only from the
				// segment of the switch on.
				start = first
			}
		}
	}
	switch {
	case have >= start && have <= rep.XLogPos:
		start = have
	case have > rep.XLogPos:
		return fmt.Errorf("the bucket holds WAL up to %s on timeline %d, past the server's %s: is this the same cluster?", have, tl, rep.XLogPos)
	case have > 0:
		log.WithField("bucket_end", have.String()).WithField("slot_start", start.String()).
			Error("WAL gap: the server no longer has the WAL after the bucket's end; restores need a base backup taken after the gap")
	}
	if st.Active {
		// The lease is ours: a predecessor that lost it (paused, cut off
		// from the bucket) may still hold the slot until
		// wal_sender_timeout. Its writes are fenced; end its connection.
		if err := takeSlot(ctx, le, s.cfg.Source); err != nil {
			return err
		}
		log.Warn("ended the WAL sender of a previous holder of the slot")
	}
	if err := pglogrepl.StartReplication(ctx, rep.Conn, rep.Slot, start, pglogrepl.StartReplicationOptions{
		Timeline: tl, Mode: pglogrepl.PhysicalReplication}); err != nil {
		return fmt.Errorf("START_REPLICATION at %s on timeline %d: %w", start, tl, err)
	}
	log.WithField("start_lsn", start.String()).WithField("timeline", tl).Info("streaming WAL")
	w := &walWriter{s: s, le: le, rep: rep, tl: tl, segSize: segSize, bufStart: start, confirmed: start}
	return w.run(ctx)
}

// takeSlot takes the slot from another connection, while this
// holder is surely the lease's.
func takeSlot(ctx context.Context, le Lease, src engines.Source) error {
	if err := le.Fenced(); err != nil {
		return err
	}
	return postgres.TakeSlot(ctx, src)
}

type walWriter struct {
	s         *Stream
	le        Lease
	rep       *postgres.Replication
	tl        int32 // the timeline streamed: the server's, or a past one
	segSize   uint64
	buf       []byte
	bufStart  pglogrepl.LSN
	confirmed pglogrepl.LSN
	sentAt    time.Time
}

func (w *walWriter) end() pglogrepl.LSN { return w.bufStart + pglogrepl.LSN(len(w.buf)) }

func (w *walWriter) run(ctx context.Context) error {
	flushEvery := w.s.cfg.FlushEvery
	nextFlush := time.Now().Add(flushEvery)
	nextStatus := time.Now().Add(statusEvery)
	for {
		select {
		case <-w.le.Lost():
			return ErrLeaseLost
		default:
		}
		if ctx.Err() != nil {
			// Shutting down: what arrived is written before the lease
			// goes, so the successor starts where this one ended.
			return w.flush(context.WithoutCancel(ctx), len(w.buf))
		}
		deadline := nextStatus
		if len(w.buf) > 0 && nextFlush.Before(deadline) {
			deadline = nextFlush
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		msg, err := w.rep.Conn.ReceiveMessage(rctx)
		cancel()
		if err != nil && !(pgconn.Timeout(err) || ctx.Err() != nil) {
			return fmt.Errorf("receive WAL: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if err := w.handle(ctx, m.Data); err != nil {
				return err
			}
		case *pgproto3.CopyDone:
			if err := w.flush(ctx, len(w.buf)); err != nil {
				return err
			}
			return errors.New("the server ended the timeline (a promotion): streaming the next")
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("WAL stream: %w", pgconn.ErrorResponseToPgError(m))
		}
		now := time.Now()
		if len(w.buf) == 0 {
			nextFlush = now.Add(flushEvery)
		} else if !now.Before(nextFlush) {
			if err := w.flush(ctx, len(w.buf)); err != nil {
				return err
			}
			nextFlush = now.Add(flushEvery)
		}
		if !now.Before(nextStatus) {
			if err := w.status(); err != nil {
				return err
			}
			nextStatus = now.Add(statusEvery)
		}
	}
}

func (w *walWriter) handle(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return err
		}
		if k.ReplyRequested {
			return w.status()
		}
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return err
		}
		if x.WALStart != w.end() {
			return fmt.Errorf("WAL arrived at %s, expected %s", x.WALStart, w.end())
		}
		w.buf = append(w.buf, x.WALData...)
		w.sentAt = x.ServerTime
		// An object never spans two WAL segments: each is a piece of
		// one segment file.
		for {
			boundary := (uint64(w.bufStart)/w.segSize + 1) * w.segSize
			if uint64(w.end()) < boundary {
				break
			}
			if err := w.flush(ctx, int(boundary-uint64(w.bufStart))); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush writes the first n buffered bytes as one object, create-only,
// and only then tells the server it may free them.
func (w *walWriter) flush(ctx context.Context, n int) error {
	if n == 0 {
		return nil
	}
	if err := w.le.Fenced(); err != nil {
		return err
	}
	s := w.s
	start, end := w.bufStart, w.bufStart+pglogrepl.LSN(n)
	h := Header{Timeline: w.tl, Start: start.String(), End: end.String(), ServerTime: w.sentAt.UTC(),
		SystemID: w.rep.SystemID, Attempt: w.le.Attempt()}
	obj, err := s.seal.encode(h, w.buf[:n])
	if err != nil {
		return err
	}
	key := SegmentKey(s.cfg.Cluster, s.cfg.Source.Name, w.tl, start, end, w.le.Attempt())
	var info bucket.ObjectInfo
	for try := 0; ; try++ {
		opts := bucket.PutOptions{IfNoneMatch: true, ContentType: "application/octet-stream"}
		if s.cfg.RetainFor > 0 {
			opts.RetainUntil = time.Now().Add(s.cfg.RetainFor).UTC()
		}
		info, err = s.cfg.Bucket.Put(ctx, key, bytes.NewReader(obj), int64(len(obj)), opts)
		if err == nil || errors.Is(err, bucket.ErrPreconditionFailed) || ctx.Err() != nil {
			break
		}
		// The bucket is unreachable: the slot keeps the WAL on the
		// server meanwhile (the guard watches how much).
		s.cfg.Log.WithError(err).WithField("key", key).Warn("writing WAL failed; retrying")
		if ferr := w.le.Fenced(); ferr != nil {
			return ferr
		}
		sleep(ctx, min(time.Duration(try+1)*200*time.Millisecond, 5*time.Second))
	}
	if errors.Is(err, bucket.ErrPreconditionFailed) {
		// Only a holder of the same attempt could have written this
		// name: this one is a zombie.
		return fmt.Errorf("%w: %s exists already", ErrLeaseLost, key)
	}
	if err != nil {
		return fmt.Errorf("write WAL %s: %w", key, err)
	}
	rest := copy(w.buf, w.buf[n:])
	w.buf = w.buf[:rest]
	w.bufStart, w.confirmed = end, end
	s.confirmed.Store(uint64(end))
	s.serverTime.Store(h.ServerTime.UnixNano())
	if s.cfg.Written != nil {
		s.cfg.Written(Segment{Key: key, Timeline: h.Timeline, Start: start, End: end, Attempt: h.Attempt, Size: int64(len(obj)), Written: info.LastModified}, h)
	}
	return w.status()
}

// status tells the server the bucket holds WAL up to w.confirmed: the
// slot may free what lies before.
func (w *walWriter) status() error {
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), w.rep.Conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: w.confirmed, WALFlushPosition: w.confirmed, WALApplyPosition: w.confirmed})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
