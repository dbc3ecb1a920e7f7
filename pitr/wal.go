package pitr

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
	"github.com/jackc/pglogrepl"
	"github.com/klauspost/compress/zstd"
)

// WALPrefix holds every source's WAL:
// wal/<cluster>/<source>/<timeline>/<start>-<end>-<attempt>.zst. Like
// backups/, nothing under it is ever rewritten: every object is written
// create-only, once.
const WALPrefix = "wal/"

// SourcePrefix is where one source's WAL lives.
func SourcePrefix(cluster, source string) string {
	return WALPrefix + requests.Segment(cluster) + "/" + requests.Segment(source) + "/"
}

// Segment is one WAL object: the bytes [Start, End) of a timeline, as
// written by attempt Attempt of the stream's lease.
type Segment struct {
	Key      string
	Timeline int32
	Start    pglogrepl.LSN
	End      pglogrepl.LSN
	Attempt  int
	Size     int64
	// Written is when the bucket stored it (its clock).
	Written time.Time
}

// SegmentKey names a WAL object. LSNs and the timeline are fixed-width
// hex, so a listing is in LSN order.
func SegmentKey(cluster, source string, tl int32, start, end pglogrepl.LSN, attempt int) string {
	return fmt.Sprintf("%s%08X/%016X-%016X-%d.zst", SourcePrefix(cluster, source), tl, uint64(start), uint64(end), attempt)
}

// parseKey reads a key under SourcePrefix back; ok false for anything
// else (an object capsule did not write is never used).
func parseKey(prefix string, o bucket.ObjectInfo) (Segment, bool) {
	rest, ok := strings.CutPrefix(o.Key, prefix)
	if !ok {
		return Segment{}, false
	}
	tlHex, name, ok := strings.Cut(rest, "/")
	if !ok || len(tlHex) != 8 {
		return Segment{}, false
	}
	name, ok = strings.CutSuffix(name, ".zst")
	if !ok {
		return Segment{}, false
	}
	parts := strings.Split(name, "-")
	if len(parts) != 3 || len(parts[0]) != 16 || len(parts[1]) != 16 {
		return Segment{}, false
	}
	tl, err1 := strconv.ParseUint(tlHex, 16, 32)
	start, err2 := strconv.ParseUint(parts[0], 16, 64)
	end, err3 := strconv.ParseUint(parts[1], 16, 64)
	attempt, err4 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || end <= start || tl == 0 || attempt < 1 {
		return Segment{}, false
	}
	return Segment{Key: o.Key, Timeline: int32(tl), Start: pglogrepl.LSN(start), End: pglogrepl.LSN(end),
		Attempt: attempt, Size: o.Size, Written: o.LastModified}, true
}

// ListSegments lists a source's WAL objects in timeline and LSN order.
func ListSegments(ctx context.Context, b bucket.Reader, cluster, source string) ([]Segment, error) {
	prefix := SourcePrefix(cluster, source)
	var segs []Segment
	err := bucket.Walk(ctx, b, prefix, func(o bucket.ObjectInfo) error {
		if s, ok := parseKey(prefix, o); ok {
			segs = append(segs, s)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list WAL of %s: %w", source, err)
	}
	sort.SliceStable(segs, func(i, j int) bool {
		if segs[i].Timeline != segs[j].Timeline {
			return segs[i].Timeline < segs[j].Timeline
		}
		return segs[i].Start < segs[j].Start
	})
	return segs, nil
}

// Span is a stretch of one timeline's WAL with no gap.
type Span struct {
	Timeline   int32
	Start, End pglogrepl.LSN
	// Segments are the objects that cover it, in LSN order; where
	// objects overlap (a successor re-sent what a dead holder wrote),
	// each byte is the same, and the first is used.
	Segments []Segment
}

// Spans merges segments into gapless stretches per timeline.
func Spans(segs []Segment) []Span {
	var out []Span
	for _, s := range segs {
		if n := len(out); n > 0 && out[n-1].Timeline == s.Timeline && s.Start <= out[n-1].End {
			if s.End > out[n-1].End {
				out[n-1].End = s.End
				out[n-1].Segments = append(out[n-1].Segments, s)
			}
			continue
		}
		out = append(out, Span{Timeline: s.Timeline, Start: s.Start, End: s.End, Segments: []Segment{s}})
	}
	return out
}

// Header starts every WAL object: a line "capsule-wal/1 " and a JSON
// object, then the WAL, zstd-compressed. SHA256 is of the uncompressed
// WAL: a read checks it. Encryption, when it comes, seals what follows
// the header and names its scheme here.
type Header struct {
	Timeline int32  `json:"timeline"`
	Start    string `json:"start"`
	End      string `json:"end"`
	Bytes    int64  `json:"bytes"`
	SHA256   string `json:"sha256"`
	// Compression is "zstd".
	Compression string `json:"compression"`
	Encryption  string `json:"encryption,omitempty"`
	// ServerTime is the server's clock when it sent the last byte: no
	// transaction in the object committed later.
	ServerTime time.Time `json:"serverTime"`
	SystemID   string    `json:"systemId"`
	Attempt    int       `json:"attempt"`
}

const magic = "capsule-wal/1 "

// maxHeader bounds the Header line a reader accepts.
const maxHeader = 4 << 10

// encode makes a WAL object of wal.
func encode(h Header, wal []byte, enc *zstd.Encoder) []byte {
	sum := sha256.Sum256(wal)
	h.SHA256, h.Bytes, h.Compression = hex.EncodeToString(sum[:]), int64(len(wal)), "zstd"
	hj, _ := json.Marshal(h)
	out := make([]byte, 0, len(magic)+len(hj)+1+len(wal)/2)
	out = append(out, magic...)
	out = append(out, hj...)
	out = append(out, '\n')
	return enc.EncodeAll(wal, out)
}

// ErrCorrupt marks a WAL object that fails its checks.
var ErrCorrupt = errors.New("WAL object is damaged")

// readSegment fetches a WAL object and checks it against its key and
// checksum.
func readSegment(ctx context.Context, b bucket.Reader, s Segment, dec *zstd.Decoder) ([]byte, Header, error) {
	var h Header
	limit := int64(len(magic)+maxHeader) + int64(s.End-s.Start) + (64 << 10)
	data, _, err := bucket.GetBytesLimit(ctx, b, s.Key, limit)
	if err != nil {
		return nil, h, fmt.Errorf("read WAL %s: %w", s.Key, err)
	}
	br := bufio.NewReader(bytes.NewReader(data))
	line, err := br.ReadString('\n')
	rest, ok := strings.CutPrefix(line, magic)
	if err != nil || !ok || json.Unmarshal([]byte(rest), &h) != nil {
		return nil, h, fmt.Errorf("%w: %s has no capsule WAL Header", ErrCorrupt, s.Key)
	}
	if h.Encryption != "" {
		return nil, h, fmt.Errorf("WAL %s is encrypted (%s): this capsule cannot decrypt it", s.Key, h.Encryption)
	}
	if h.Compression != "zstd" {
		return nil, h, fmt.Errorf("%w: %s: unknown compression %q", ErrCorrupt, s.Key, h.Compression)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		return nil, h, err
	}
	wal, err := dec.DecodeAll(body, make([]byte, 0, s.End-s.Start))
	if err != nil {
		return nil, h, fmt.Errorf("%w: %s: %v", ErrCorrupt, s.Key, err)
	}
	sum := sha256.Sum256(wal)
	if int64(len(wal)) != int64(s.End-s.Start) || h.Bytes != int64(len(wal)) || hex.EncodeToString(sum[:]) != h.SHA256 ||
		h.Start != s.Start.String() || h.End != s.End.String() || h.Timeline != s.Timeline {
		return nil, h, fmt.Errorf("%w: %s does not match its checksum or its name", ErrCorrupt, s.Key)
	}
	return wal, h, nil
}

// SegmentFileName is PostgreSQL's name of the WAL file holding lsn.
func SegmentFileName(tl int32, lsn pglogrepl.LSN, segSize int64) string {
	segNo := uint64(lsn) / uint64(segSize)
	perID := uint64(0x100000000) / uint64(segSize)
	return fmt.Sprintf("%08X%08X%08X", tl, segNo/perID, segNo%perID)
}

// ReadSegment fetches one WAL object and checks it: its bytes.
func ReadSegment(ctx context.Context, b bucket.Reader, s Segment) ([]byte, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	wal, _, err := readSegment(ctx, b, s, dec)
	return wal, err
}
