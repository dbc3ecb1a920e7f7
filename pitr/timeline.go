package pitr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/jackc/pglogrepl"
)

// HistoryKey names the stored history file of timeline tl (a timeline
// a promotion began): wal/<cluster>/<source>/<timeline>.history.zst,
// beside the timelines' directories of WAL. Written once, create-only,
// like WAL objects, and in the same form (header, signature, payload:
// the file as the server sent it, compressed, with its checksum), but
// never encrypted: it holds no data.
func HistoryKey(cluster, source string, tl int32) string {
	return fmt.Sprintf("%s%08X.history.zst", SourcePrefix(cluster, source), tl)
}

// historyKind is Header.Kind of a history object.
const historyKind = "history"

// historySegment is the pseudo segment a history object is read as:
// the bytes [0, len) of its timeline.
func historySegment(key string, tl int32, n int64) Segment {
	return Segment{Key: key, Timeline: tl, Start: 0, End: pglogrepl.LSN(n)}
}

// TimelineEntry is one line of a timeline history file: timeline TLI
// ran until (the LSN) End, where its child began.
type TimelineEntry struct {
	TLI int32
	End pglogrepl.LSN
}

// parseHistory reads a history file (PostgreSQL's: "<parent tli>\t<switch
// LSN>\t<reason>" per ancestor, oldest first).
func parseHistory(content []byte) ([]TimelineEntry, error) {
	var out []TimelineEntry
	for _, line := range strings.Split(string(content), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("timeline history: bad line %q", line)
		}
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil || tli == 0 {
			return nil, fmt.Errorf("timeline history: bad timeline in %q", line)
		}
		end, err := pglogrepl.ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("timeline history: bad LSN in %q", line)
		}
		if n := len(out); n > 0 && (int32(tli) <= out[n-1].TLI || end < out[n-1].End) {
			return nil, fmt.Errorf("timeline history: %q out of order", line)
		}
		out = append(out, TimelineEntry{TLI: int32(tli), End: end})
	}
	return out, nil
}

// storeHistory writes timeline tl's history file into the bucket unless
// it is there; the write is create-only, so whoever wrote it first
// wins, and every holder sends the same file.
func (s *Stream) storeHistory(ctx context.Context, le Lease, tl int32, content []byte, sysID string) error {
	key := HistoryKey(s.cfg.Cluster, s.cfg.Source.Name, tl)
	if _, err := s.cfg.Bucket.Head(ctx, key); err == nil {
		return nil
	} else if !errors.Is(err, bucket.ErrNotFound) {
		return fmt.Errorf("timeline %d history: %w", tl, err)
	}
	if err := le.Fenced(); err != nil {
		return err
	}
	n := int64(len(content))
	h := Header{Kind: historyKind, Timeline: tl, Start: pglogrepl.LSN(0).String(), End: pglogrepl.LSN(n).String(),
		ServerTime: time.Now().UTC(), SystemID: sysID, Attempt: le.Attempt()}
	// Not encrypted: like a WAL object's header, it holds positions,
	// times and PostgreSQL's reasons, nothing of the data, and the
	// recoverable window reads it without a key.
	plain := &sealer{enc: s.seal.enc, signer: s.seal.signer, cluster: s.seal.cluster, source: s.seal.source}
	obj, err := plain.encode(h, content)
	if err != nil {
		return err
	}
	opts := bucket.PutOptions{IfNoneMatch: true, ContentType: "application/octet-stream"}
	if s.cfg.RetainFor > 0 {
		opts.RetainUntil = time.Now().Add(s.cfg.RetainFor).UTC()
	}
	if _, err := s.cfg.Bucket.Put(ctx, key, bytes.NewReader(obj), int64(len(obj)), opts); err != nil && !errors.Is(err, bucket.ErrPreconditionFailed) {
		return fmt.Errorf("write timeline %d history %s: %w", tl, key, err)
	}
	return nil
}

// history stores the server's timeline's history file in the bucket
// (when it is not there) and returns the parent timeline and the LSN
// where the server's timeline began.
func (s *Stream) history(ctx context.Context, le Lease, rep *postgres.Replication) (int32, pglogrepl.LSN, error) {
	th, err := pglogrepl.TimelineHistory(ctx, rep.Conn, rep.Timeline)
	if err != nil {
		return 0, 0, fmt.Errorf("TIMELINE_HISTORY %d: %w", rep.Timeline, err)
	}
	entries, err := parseHistory(th.Content)
	if err != nil {
		return 0, 0, err
	}
	if len(entries) == 0 {
		return 0, 0, fmt.Errorf("TIMELINE_HISTORY %d: the history names no parent timeline", rep.Timeline)
	}
	if err := s.storeHistory(ctx, le, rep.Timeline, th.Content, rep.SystemID); err != nil {
		return 0, 0, err
	}
	last := entries[len(entries)-1]
	return last.TLI, last.End, nil
}

// history is a stored timeline history: the file and its entries.
type history struct {
	tl      int32
	content []byte
	entries []TimelineEntry
}

// readHistory reads, checks (checksum, signature by o's trust, the
// system identifier) and parses timeline tl's stored history; nil when
// the bucket has none.
func readHistory(ctx context.Context, b bucket.Reader, o *opener, tl int32, sysID string) (*history, error) {
	key := HistoryKey(o.cluster, o.source, tl)
	// The header says how long the file is; read it first.
	data, _, err := bucket.GetBytesLimit(ctx, b, key, 1<<20)
	if errors.Is(err, bucket.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read timeline history %s: %w", key, err)
	}
	obj, err := split(key, data)
	if err != nil {
		return nil, err
	}
	if obj.h.Kind != historyKind || obj.h.Timeline != tl {
		return nil, fmt.Errorf("%w: %s is not timeline %d's history", ErrCorrupt, key, tl)
	}
	if obj.h.SystemID != "" && sysID != "" && obj.h.SystemID != sysID {
		return nil, fmt.Errorf("timeline history %s is of the server with system identifier %s, not %s", key, obj.h.SystemID, sysID)
	}
	seg := historySegment(key, tl, obj.h.Bytes)
	content, _, err := o.read(ctx, b, seg)
	if err != nil {
		return nil, err
	}
	entries, err := parseHistory(content)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	return &history{tl: tl, content: content, entries: entries}, nil
}

// leg is the WAL a restore replays from one timeline: [From, To) of
// Timeline, out of Span.
type leg struct {
	Timeline int32
	From, To pglogrepl.LSN
	Span     Span
	// Switch, on every leg but the last, is where the next timeline
	// began: the next timeline's file of its segment gets this leg's
	// bytes of that segment too.
	Switch pglogrepl.LSN
}

// route is the WAL a restore from a base backup replays, timeline by
// timeline (the base backup's first, the target timeline last), and the
// history file of the target timeline (nil when it is the base
// backup's).
type route struct {
	legs []leg
	hist *history
}

// Timeline is the timeline recovery ends on.
func (r route) Timeline() int32 { return r.legs[len(r.legs)-1].Timeline }

// End is the end of the WAL the route holds: the latest recoverable
// point.
func (r route) End() pglogrepl.LSN { return r.legs[len(r.legs)-1].To }

// last is the span of the last leg.
func (r route) last() Span { return r.legs[len(r.legs)-1].Span }

// findRoute is the route from base backup bb to the newest timeline the
// bucket holds gapless WAL for that descends from bb's timeline after
// bb's stop: on each timeline of the target's history, from where it
// began (or bb's start) to where its child began; on the target
// timeline to the end of the WAL. A timeline whose history is missing
// or whose WAL has a gap is passed over for an older one. ok is false
// when not even bb's own timeline covers bb.
func findRoute(ctx context.Context, b bucket.Reader, o *opener, spans []Span, bb base) (route, bool, error) {
	var tls []int32
	seen := map[int32]bool{}
	for _, s := range spans {
		if s.Timeline > bb.d.Timeline && !seen[s.Timeline] {
			seen[s.Timeline] = true
			tls = append(tls, s.Timeline)
		}
	}
	from := segStart(bb.start, bb.d.WALSegmentSize)
	for i := len(tls) - 1; i >= 0; i-- {
		h, err := readHistory(ctx, b, o, tls[i], bb.d.SystemID)
		if err != nil {
			return route{}, false, err
		}
		if h == nil {
			continue
		}
		if r, ok := routeFrom(spans, bb, from, h); ok {
			return r, true, nil
		}
	}
	s, ok := covering(spans, bb)
	if !ok {
		return route{}, false, nil
	}
	r := route{legs: []leg{{Timeline: s.Timeline, From: from, To: s.End, Span: s}}}
	if bb.d.Timeline > 1 {
		// A base backup taken after a promotion: its own timeline's
		// history, when stored, goes along.
		h, err := readHistory(ctx, b, o, bb.d.Timeline, bb.d.SystemID)
		if err != nil {
			return route{}, false, err
		}
		r.hist = h
	}
	return r, true, nil
}

// routeFrom builds the route to h's timeline; false when bb's timeline
// is not in h's history with the fork after bb's stop, or the WAL of
// the timelines on the way has a gap. A child timeline's WAL may begin
// before its switch point (the server's first file of it begins with
// the parent's bytes): the parent then needs reach only there.
func routeFrom(spans []Span, bb base, from pglogrepl.LSN, h *history) (route, bool) {
	steps := append(append([]TimelineEntry(nil), h.entries...), TimelineEntry{TLI: h.tl})
	i := 0
	for i < len(steps) && steps[i].TLI != bb.d.Timeline {
		i++
	}
	if i == len(steps) || (i < len(steps)-1 && steps[i].End < bb.stop) {
		return route{}, false
	}
	var legs []leg
	reach := from
	for ; i < len(steps); i++ {
		e, lastStep := steps[i], i == len(steps)-1
		var sp Span
		ok := false
		for _, s := range spans {
			if s.Timeline == e.TLI && s.Start <= reach && s.End > reach {
				sp, ok = s, true
				break
			}
		}
		if !ok {
			return route{}, false
		}
		l := leg{Timeline: e.TLI, From: max(reach, sp.Start), To: sp.End, Span: sp}
		if len(legs) == 0 {
			l.From = from
		} else {
			// The child's first file holds the parent's bytes before the
			// switch too: stage them from the child's own WAL.
			l.From = max(sp.Start, segStart(legs[len(legs)-1].Switch, bb.d.WALSegmentSize))
		}
		if !lastStep {
			l.To, l.Switch = min(sp.End, e.End), e.End
		}
		legs = append(legs, l)
		reach = l.To
	}
	return route{legs: legs, hist: h}, true
}
