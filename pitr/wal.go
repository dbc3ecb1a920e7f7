package pitr

import (
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
	"github.com/cnvrg/capsule/crypt"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/sshsig"
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
// object; then, when Signature is "sshsig", an armored SSH signature of
// that line (its newline included); then the payload: the WAL,
// zstd-compressed and, when Encryption is "age", encrypted with age to
// Recipients. The header is readable without a key and says nothing of
// the data: positions, times and checksums only (SHA256, of the plain
// WAL, is left out of encrypted objects).
type Header struct {
	// Kind is "" for WAL and "history" for a timeline's history file
	// (HistoryKey; Start and End then bound the file's bytes from 0).
	Kind     string `json:"kind,omitempty"`
	Timeline int32  `json:"timeline"`
	Start    string `json:"start"`
	End      string `json:"end"`
	Bytes    int64  `json:"bytes"`
	// SHA256 is of the uncompressed WAL; set only when the payload is
	// not encrypted (a hash of plain WAL would let a reader test
	// guesses of its content).
	SHA256 string `json:"sha256,omitempty"`
	// Compression is "zstd".
	Compression string `json:"compression"`
	// Encryption is "" (none) or crypt.Scheme ("age"): the payload is an
	// age file encrypted to Recipients (canonical public keys).
	Encryption string   `json:"encryption,omitempty"`
	Recipients []string `json:"recipients,omitempty"`
	// PayloadSHA256 is of the stored payload (what follows the header
	// and its signature): the signature covers the payload through it.
	// Objects written before it was added have none.
	PayloadSHA256 string `json:"payloadSha256,omitempty"`
	// Signature is "" (unsigned) or "sshsig": an armored SSH signature
	// (namespace index.WALNamespace) of the header line follows it.
	Signature string `json:"signature,omitempty"`
	// Cluster and Source name whose WAL this is, so that a signed object
	// copied under another source's prefix is refused there.
	Cluster string `json:"cluster,omitempty"`
	Source  string `json:"source,omitempty"`
	// ServerTime is the server's clock when it sent the last byte: no
	// transaction in the object committed later.
	ServerTime time.Time `json:"serverTime"`
	SystemID   string    `json:"systemId"`
	Attempt    int       `json:"attempt"`
}

const magic = "capsule-wal/1 "

// SignatureScheme is Header.Signature of a signed object.
const SignatureScheme = "sshsig"

// maxHeader bounds the Header line a reader accepts (room for a few
// RSA recipients).
const maxHeader = 32 << 10

// sealer makes WAL objects: compressed, encrypted when there are
// recipients, signed when there is a signer.
type sealer struct {
	enc             *zstd.Encoder
	recipients      *crypt.Recipients
	signer          *index.Signer
	cluster, source string
}

// encode makes a WAL object of wal.
func (s *sealer) encode(h Header, wal []byte) ([]byte, error) {
	h.Bytes, h.Compression, h.Cluster, h.Source = int64(len(wal)), "zstd", s.cluster, s.source
	payload := s.enc.EncodeAll(wal, make([]byte, 0, len(wal)/2))
	if s.recipients != nil {
		var buf bytes.Buffer
		w, err := s.recipients.Encrypt(&buf)
		if err != nil {
			return nil, fmt.Errorf("encrypt WAL: %w", err)
		}
		if _, err := w.Write(payload); err != nil {
			return nil, fmt.Errorf("encrypt WAL: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("encrypt WAL: %w", err)
		}
		payload = buf.Bytes()
		h.Encryption, h.Recipients = crypt.Scheme, s.recipients.Keys()
	} else {
		sum := sha256.Sum256(wal)
		h.SHA256 = hex.EncodeToString(sum[:])
	}
	psum := sha256.Sum256(payload)
	h.PayloadSHA256 = hex.EncodeToString(psum[:])
	if s.signer != nil {
		h.Signature = SignatureScheme
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	line := make([]byte, 0, len(magic)+len(hj)+1)
	line = append(append(append(line, magic...), hj...), '\n')
	var sig []byte
	if s.signer != nil {
		if sig, err = s.signer.Sign(index.WALNamespace, line); err != nil {
			return nil, fmt.Errorf("sign WAL: %w", err)
		}
	}
	out := make([]byte, 0, len(line)+len(sig)+len(payload))
	return append(append(append(out, line...), sig...), payload...), nil
}

// ErrCorrupt marks a WAL object that fails its checks.
var ErrCorrupt = errors.New("WAL object is damaged")

// ErrUntrusted is wrapped by the error about a WAL object that no
// trusted key signed (index.ErrUntrusted: the same refusal as a
// backup's).
var ErrUntrusted = index.ErrUntrusted

// UntrustedError refuses a WAL object that no trusted key signed.
type UntrustedError struct {
	Key, Reason string
	// Unsigned: the object has no signature at all (written before
	// signing was on); --allow-unsigned accepts it.
	Unsigned bool
}

func (e *UntrustedError) Error() string {
	msg := fmt.Sprintf("WAL %s is untrusted and not used: %s", e.Key, e.Reason)
	if e.Unsigned {
		msg += "; WAL written before signing is accepted only with --allow-unsigned"
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrUntrusted) true.
func (e *UntrustedError) Unwrap() error { return ErrUntrusted }

// object is a WAL object split into its parts, not yet opened.
type object struct {
	h       Header
	line    []byte // the header line, newline included: what is signed
	sig     []byte // nil when unsigned
	payload []byte
}

// opener reads WAL objects: it checks them against their names, the
// reader's trust, and opens their payload with its identities.
type opener struct {
	dec             *zstd.Decoder
	ids             *crypt.Identities
	trust           *index.Trust
	cluster, source string
}

func newOpener(cluster, source string, ids *crypt.Identities, trust *index.Trust) (*opener, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &opener{dec: dec, ids: ids, trust: trust, cluster: cluster, source: source}, nil
}

func (o *opener) close() { o.dec.Close() }

// fetch reads a WAL object, splits it and judges its signature; it does
// not open the payload.
func (o *opener) fetch(ctx context.Context, b bucket.Reader, s Segment) (object, error) {
	n := int64(s.End - s.Start)
	// Room for the header, a signature, age's header and its 16 bytes
	// per 64 KiB chunk, and zstd's framing of incompressible WAL.
	limit := int64(len(magic)+maxHeader+sshsig.MaxSize) + n + n/4096 + (256 << 10)
	data, _, err := bucket.GetBytesLimit(ctx, b, s.Key, limit)
	if err != nil {
		return object{}, fmt.Errorf("read WAL %s: %w", s.Key, err)
	}
	obj, err := split(s.Key, data)
	if err != nil {
		return obj, err
	}
	h := obj.h
	wantKind := ""
	if strings.HasSuffix(s.Key, ".history.zst") {
		wantKind = historyKind
	}
	if h.Kind != wantKind || h.Start != s.Start.String() || h.End != s.End.String() || h.Timeline != s.Timeline || h.Bytes != n {
		return obj, fmt.Errorf("%w: %s does not match its name", ErrCorrupt, s.Key)
	}
	if (h.Cluster != "" && h.Cluster != o.cluster) || (h.Source != "" && h.Source != o.source) {
		return obj, fmt.Errorf("%w: %s is WAL of source %s in cluster %s, not of %s in %s", ErrCorrupt, s.Key, h.Source, h.Cluster, o.source, o.cluster)
	}
	if h.PayloadSHA256 != "" {
		sum := sha256.Sum256(obj.payload)
		if hex.EncodeToString(sum[:]) != h.PayloadSHA256 {
			return obj, fmt.Errorf("%w: %s: the payload does not match its checksum", ErrCorrupt, s.Key)
		}
	}
	if o.trust.Checks() {
		sig := o.trust.Check(index.WALNamespace, obj.line, obj.sig, obj.sig != nil)
		if sig.State == index.SigSigned && (h.Cluster == "" || h.Source == "" || h.PayloadSHA256 == "") {
			sig = index.Signature{State: index.SigUntrusted, Reason: "a signed header that names no cluster, source or payload checksum"}
		}
		if sig.State == index.SigUntrusted {
			return obj, &UntrustedError{Key: s.Key, Reason: sig.Reason, Unsigned: sig.Missing()}
		}
	}
	return obj, nil
}

// split parses a WAL object's header and signature.
func split(key string, data []byte) (object, error) {
	var obj object
	nl := bytes.IndexByte(data[:min(len(data), len(magic)+maxHeader)], '\n')
	if nl < 0 || !bytes.HasPrefix(data, []byte(magic)) || json.Unmarshal(data[len(magic):nl], &obj.h) != nil {
		return obj, fmt.Errorf("%w: %s has no capsule WAL Header", ErrCorrupt, key)
	}
	obj.line, obj.payload = data[:nl+1], data[nl+1:]
	switch obj.h.Signature {
	case "":
	case SignatureScheme:
		endMark := []byte("-----END SSH SIGNATURE-----\n")
		i := bytes.Index(obj.payload[:min(len(obj.payload), sshsig.MaxSize)], endMark)
		if i < 0 {
			return obj, fmt.Errorf("%w: %s: the header says it is signed but no signature follows it", ErrCorrupt, key)
		}
		obj.sig, obj.payload = obj.payload[:i+len(endMark)], obj.payload[i+len(endMark):]
	default:
		return obj, fmt.Errorf("%w: %s: unknown signature scheme %q", ErrCorrupt, key, obj.h.Signature)
	}
	return obj, nil
}

// open decrypts and decompresses an object's payload and checks it.
func (o *opener) open(s Segment, obj object) ([]byte, error) {
	h := obj.h
	payload := obj.payload
	switch h.Encryption {
	case "":
		if h.SHA256 == "" {
			return nil, fmt.Errorf("%w: %s has no checksum", ErrCorrupt, s.Key)
		}
	case crypt.Scheme:
		if len(h.Recipients) == 0 {
			return nil, fmt.Errorf("%w: %s: encrypted to no recipient", ErrCorrupt, s.Key)
		}
		if err := o.ids.Check("WAL "+s.Key, h.Recipients); err != nil {
			return nil, err
		}
		r, err := o.ids.Decrypt(bytes.NewReader(payload))
		if err == nil {
			payload, err = io.ReadAll(io.LimitReader(r, int64(len(payload))))
		}
		if err != nil {
			return nil, fmt.Errorf("%w: decrypt %s: %v", ErrCorrupt, s.Key, err)
		}
	default:
		return nil, fmt.Errorf("WAL %s is encrypted with %q: this capsule decrypts only %s", s.Key, h.Encryption, crypt.Scheme)
	}
	if h.Compression != "zstd" {
		return nil, fmt.Errorf("%w: %s: unknown compression %q", ErrCorrupt, s.Key, h.Compression)
	}
	wal, err := o.dec.DecodeAll(payload, make([]byte, 0, s.End-s.Start))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, s.Key, err)
	}
	if int64(len(wal)) != int64(s.End-s.Start) {
		return nil, fmt.Errorf("%w: %s holds %d bytes of WAL, its name says %d", ErrCorrupt, s.Key, len(wal), s.End-s.Start)
	}
	if h.SHA256 != "" {
		sum := sha256.Sum256(wal)
		if hex.EncodeToString(sum[:]) != h.SHA256 {
			return nil, fmt.Errorf("%w: %s does not match its checksum", ErrCorrupt, s.Key)
		}
	}
	return wal, nil
}

// read fetches, checks and opens one WAL object.
func (o *opener) read(ctx context.Context, b bucket.Reader, s Segment) ([]byte, Header, error) {
	obj, err := o.fetch(ctx, b, s)
	if err != nil {
		return nil, obj.h, err
	}
	wal, err := o.open(s, obj)
	return wal, obj.h, err
}

// SegmentFileName is PostgreSQL's name of the WAL file holding lsn.
func SegmentFileName(tl int32, lsn pglogrepl.LSN, segSize int64) string {
	segNo := uint64(lsn) / uint64(segSize)
	perID := uint64(0x100000000) / uint64(segSize)
	return fmt.Sprintf("%08X%08X%08X", tl, segNo/perID, segNo%perID)
}

// ReadSegment fetches one WAL object of a source and checks it: its
// bytes. ids open an encrypted one; trust judges its signature (nil
// checks none).
func ReadSegment(ctx context.Context, b bucket.Reader, cluster, source string, s Segment, ids *crypt.Identities, trust *index.Trust) ([]byte, error) {
	o, err := newOpener(cluster, source, ids, trust)
	if err != nil {
		return nil, err
	}
	defer o.close()
	wal, _, err := o.read(ctx, b, s)
	return wal, err
}
