package pitr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
)

// Window is the stretch of time a point-in-time restore of a source can
// reach: from the end of its oldest base backup that gapless WAL
// follows, to the newest WAL after its newest such backup.
type Window struct {
	Cluster string `json:"cluster"`
	Source  string `json:"source"`
	// Earliest is when the oldest usable base backup finished (the
	// worker's clock); Latest the database server's clock when it sent
	// the newest WAL the bucket holds after the newest usable one.
	Earliest time.Time `json:"earliest"`
	Latest   time.Time `json:"latest"`
	// EarliestLSN and LatestLSN are the same points as WAL positions.
	EarliestLSN string `json:"earliestLSN"`
	LatestLSN   string `json:"latestLSN"`
	Timeline    int32  `json:"timeline"`
	// BaseBackups counts the base backups a restore can start from.
	BaseBackups int `json:"baseBackups"`
	// WALObjects and WALBytes are what the bucket holds of the source's
	// WAL (stored bytes).
	WALObjects int   `json:"walObjects"`
	WALBytes   int64 `json:"walBytes"`
}

// maxUntrustedTail is how many of the newest WAL objects the window
// passes over when trust refuses them, looking for the newest trusted
// one, before it reports the stream's end as untrusted instead.
const maxUntrustedTail = 32

// RecoverableWindow computes a source's window; nil when no restore is
// possible (no base backup with the WAL it needs). Where trust checks
// signatures, it counts only base backups trust accepts, follows only
// history files it accepts, and ends at the newest WAL object whose
// signature it accepts (the window a restore under the same trust can
// reach, as far as the ends show: a restore checks every object it
// replays).
func RecoverableWindow(ctx context.Context, b bucket.Reader, cluster, source string, trust *index.Trust) (*Window, error) {
	all, _, err := bases(ctx, b, cluster, source, trust)
	if err != nil || len(all) == 0 {
		return nil, err
	}
	segs, err := ListSegments(ctx, b, cluster, source)
	if err != nil {
		return nil, err
	}
	spans := Spans(segs)
	w := &Window{Cluster: cluster, Source: source, WALObjects: len(segs)}
	for _, s := range segs {
		w.WALBytes += s.Size
	}
	// Headers and history files are read without a key (their payload
	// stays closed), judged by trust.
	o, err := newOpener(cluster, source, nil, trust)
	if err != nil {
		return nil, err
	}
	defer o.close()
	var newest route
	for i := len(all) - 1; i >= 0; i-- { // oldest first
		bb := all[i]
		r, ok, err := findRoute(ctx, b, o, spans, bb)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if w.BaseBackups == 0 {
			w.Earliest, w.EarliestLSN = bb.idx.FinishedAt, bb.stop.String()
		}
		w.BaseBackups++
		newest = r
	}
	if w.BaseBackups == 0 {
		return nil, nil
	}
	segs = newest.last().Segments
	for i := len(segs) - 1; i >= 0; i-- {
		obj, err := o.fetch(ctx, b, segs[i])
		if errors.Is(err, ErrUntrusted) && len(segs)-i < maxUntrustedTail {
			continue
		}
		if err != nil {
			return nil, err
		}
		end := segs[i].End
		if end > newest.End() {
			end = newest.End()
		}
		w.Latest, w.LatestLSN, w.Timeline = obj.h.ServerTime, end.String(), newest.Timeline()
		return w, nil
	}
	// Every object of the last timeline's span is untrusted.
	return nil, nil
}

// PruneWAL deletes the WAL no kept base backup needs: every object that
// ends before the segment the oldest committed base backup starts in
// (on its timeline or an earlier one). With no base backup nothing is
// deleted: the first one may be under way. Objects Object Lock keeps
// stay until a later run. It returns how many objects it deleted.
func PruneWAL(ctx context.Context, b bucket.Bucket, cluster, source string) (int, error) {
	all, _, err := bases(ctx, b, cluster, source, nil)
	if err != nil || len(all) == 0 {
		return 0, err
	}
	oldest := all[len(all)-1]
	cut := segStart(oldest.start, oldest.d.WALSegmentSize)
	segs, err := ListSegments(ctx, b, cluster, source)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range segs {
		if s.Timeline > oldest.d.Timeline || (s.Timeline == oldest.d.Timeline && s.End > cut) {
			continue
		}
		if err := b.Delete(ctx, s.Key); err != nil {
			if errors.Is(err, bucket.ErrRetained) {
				continue
			}
			return n, fmt.Errorf("delete WAL %s: %w", s.Key, err)
		}
		n++
	}
	return n, nil
}

// Newest is the source's newest WAL object (the highest end on the
// highest timeline) and its header: its ServerTime is the latest moment
// the bucket holds. ErrNotFound (bucket's) when there is none.
func Newest(ctx context.Context, b bucket.Reader, cluster, source string) (Segment, Header, error) {
	segs, err := ListSegments(ctx, b, cluster, source)
	if err != nil {
		return Segment{}, Header{}, err
	}
	if len(segs) == 0 {
		return Segment{}, Header{}, fmt.Errorf("no WAL of %s: %w", source, bucket.ErrNotFound)
	}
	newest := segs[len(segs)-1]
	for _, s := range segs {
		if s.Timeline == newest.Timeline && s.End > newest.End {
			newest = s
		}
	}
	// The header alone (readable without a key, not judged: a listing's
	// figure, not a restore).
	o, err := newOpener(cluster, source, nil, nil)
	if err != nil {
		return Segment{}, Header{}, err
	}
	defer o.close()
	obj, err := o.fetch(ctx, b, newest)
	return newest, obj.h, err
}
