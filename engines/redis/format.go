package redis

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// The logical artifact (keys.bin) is a framed binary stream:
//
//	header   "CPSREDIS" (8 bytes), format version (1 byte, = 1)
//	records  one tag byte, then:
//	  'F'  functions: uvarint length, FUNCTION DUMP payload
//	  'D'  database: uvarint number; the keys that follow belong to it
//	  'K'  key: uvarint length, key bytes, uvarint absolute expiry in
//	       Unix milliseconds (0: none), uvarint length, DUMP payload
//	  'E'  end: uvarint number of 'K' records, then the CRC-32C
//	       (Castagnoli, big-endian) of every byte before it
//
// Every database the backup selected has a 'D' record, even when it held
// no key: a restore empties exactly these. A DUMP payload ends with the
// RDB version (2 bytes, little-endian) and a CRC-64 (Jones) of the rest;
// the restore checks both before it touches the target.
const (
	logicalMagic   = "CPSREDIS"
	logicalVersion = 1

	tagFunctions = 'F'
	tagDatabase  = 'D'
	tagKey       = 'K'
	tagEnd       = 'E'

	maxKeyLen     = 512 << 20
	maxPayloadLen = 64 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// keyWriter writes the logical artifact.
type keyWriter struct {
	w    *bufio.Writer
	crc  hash.Hash32
	keys uint64
	tmp  [binary.MaxVarintLen64]byte
	tail [10]byte
}

func newKeyWriter(w io.Writer) (*keyWriter, error) {
	kw := &keyWriter{crc: crc32.New(castagnoli)}
	kw.w = bufio.NewWriterSize(io.MultiWriter(w, kw.crc), 1<<20)
	if _, err := kw.w.WriteString(logicalMagic); err != nil {
		return nil, err
	}
	return kw, kw.w.WriteByte(logicalVersion)
}

func (kw *keyWriter) uvarint(v uint64) {
	n := binary.PutUvarint(kw.tmp[:], v)
	kw.w.Write(kw.tmp[:n])
}

func (kw *keyWriter) bytes(b []byte) {
	kw.uvarint(uint64(len(b)))
	kw.w.Write(b)
}

func (kw *keyWriter) functions(payload []byte) error {
	kw.w.WriteByte(tagFunctions)
	kw.bytes(payload)
	return nil
}

func (kw *keyWriter) database(db int) error {
	kw.w.WriteByte(tagDatabase)
	kw.uvarint(uint64(db))
	return nil
}

func (kw *keyWriter) key(key []byte, expireAtMs int64, payload []byte) error {
	kw.w.WriteByte(tagKey)
	kw.uvarint(uint64(len(key)))
	kw.w.Write(key)
	kw.uvarint(uint64(max(expireAtMs, 0)))
	kw.bytes(payload)
	kw.keys++
	return nil
}

// keyRDB writes a key record whose DUMP payload is an RDB entry's type
// byte and value encoding, framed as DUMP frames it (the RDB version,
// 2 bytes little-endian, and the CRC-64 of everything before), without
// building the payload in memory.
func (kw *keyWriter) keyRDB(key []byte, expireAtMs int64, typ byte, value []byte, rdbVersion int) {
	kw.w.WriteByte(tagKey)
	kw.uvarint(uint64(len(key)))
	kw.w.Write(key)
	kw.uvarint(uint64(max(expireAtMs, 0)))
	kw.uvarint(uint64(1 + len(value) + 10))
	tail := kw.tail[:] // a field: a local array would escape through Write
	binary.LittleEndian.PutUint16(tail[:2], uint16(rdbVersion))
	crc := crcJones(crcJones(crcJones(0, []byte{typ}), value), tail[:2])
	binary.LittleEndian.PutUint64(tail[2:], crc)
	kw.w.WriteByte(typ)
	kw.w.Write(value)
	kw.w.Write(tail)
	kw.keys++
}

// flush hands the buffered records on, surfacing a failed upload early.
func (kw *keyWriter) flush() error { return kw.w.Flush() }

// finish writes the trailer and flushes.
func (kw *keyWriter) finish() error {
	kw.w.WriteByte(tagEnd)
	kw.uvarint(kw.keys)
	if err := kw.w.Flush(); err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], kw.crc.Sum32())
	kw.w.Write(sum[:])
	return kw.w.Flush()
}

// record is one entry of a logical artifact or of an RDB file, as the
// restore replays it.
type record struct {
	kind       byte // tagFunctions, tagDatabase or tagKey
	db         int
	key        []byte
	expireAt   int64 // Unix ms, 0 for none
	payload    []byte
	rdbVersion int // of the payload
	// typ and value are an RDB file's key: its type byte and the value's
	// encoding, valid during the callback only (payload is nil until
	// dump makes it).
	typ   byte
	value []byte
}

// dump returns the record's DUMP payload.
func (r *record) dump() []byte {
	if r.payload == nil && r.value != nil {
		r.payload = dumpPayloadOf(r.typ, r.value, r.rdbVersion)
	}
	return r.payload
}

// typeName names the key's type as TYPE does.
func (r *record) typeName() string {
	if r.payload == nil && r.value != nil {
		return payloadType([]byte{r.typ})
	}
	return payloadType(r.payload)
}

// stringValue returns a string key's value (appending to scratch when
// it must be built); false for any other type.
func (r *record) stringValue(scratch []byte) ([]byte, bool) {
	if r.payload == nil && r.value != nil {
		if r.typ != 0 {
			return nil, false
		}
		return rdbStringValue(r.value, scratch)
	}
	return stringPayloadValue(r.payload, scratch)
}

// keyReader reads the logical artifact. With skipData it checks payloads
// as they stream and keeps neither keys nor payloads in memory.
type keyReader struct {
	r        *sumReader
	skipData bool
	keys     uint64
	done     bool
	rec      record // what fastKey returns
}

// sumReader keeps a CRC-32C of exactly the bytes consumed through it.
type sumReader struct {
	br  *bufio.Reader
	crc hash.Hash32
}

func (s *sumReader) Read(p []byte) (int, error) {
	n, err := s.br.Read(p)
	s.crc.Write(p[:n])
	return n, err
}

func (s *sumReader) ReadByte() (byte, error) {
	b, err := s.br.ReadByte()
	if err == nil {
		s.crc.Write([]byte{b})
	}
	return b, err
}

// errFormat marks a malformed artifact.
var errFormat = errors.New("malformed redis backup artifact")

func formatErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errFormat, fmt.Sprintf(format, a...))
}

func newKeyReader(r io.Reader, skipData bool) (*keyReader, error) {
	kr := &keyReader{r: &sumReader{br: bufio.NewReaderSize(r, 1<<20), crc: crc32.New(castagnoli)}, skipData: skipData}
	var head [len(logicalMagic) + 1]byte
	if _, err := io.ReadFull(kr.r, head[:]); err != nil {
		return nil, eofIsFormat(err)
	}
	if string(head[:len(logicalMagic)]) != logicalMagic {
		return nil, formatErr("bad magic")
	}
	if head[len(logicalMagic)] != logicalVersion {
		return nil, formatErr("format version %d is not %d", head[len(logicalMagic)], logicalVersion)
	}
	return kr, nil
}

func eofIsFormat(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return formatErr("truncated")
	}
	return err
}

func (kr *keyReader) uvarint() (uint64, error) {
	v, err := binary.ReadUvarint(kr.r)
	if err != nil {
		return 0, eofIsFormat(err)
	}
	return v, nil
}

// next returns the next record, or io.EOF after a valid trailer.
func (kr *keyReader) next() (*record, error) {
	if kr.done {
		return nil, io.EOF
	}
	if rec, ok, err := kr.fastKey(); ok || err != nil {
		return rec, err
	}
	tag, err := kr.r.ReadByte()
	if err != nil {
		return nil, eofIsFormat(err)
	}
	switch tag {
	case tagDatabase:
		db, err := kr.uvarint()
		if err != nil {
			return nil, err
		}
		if db > 1<<20 {
			return nil, formatErr("database %d", db)
		}
		return &record{kind: tagDatabase, db: int(db)}, nil
	case tagFunctions:
		p, ver, err := kr.payload()
		if err != nil {
			return nil, err
		}
		return &record{kind: tagFunctions, payload: p, rdbVersion: ver}, nil
	case tagKey:
		n, err := kr.uvarint()
		if err != nil {
			return nil, err
		}
		if n > maxKeyLen {
			return nil, formatErr("key of %d bytes", n)
		}
		rec := &record{kind: tagKey}
		if kr.skipData {
			if _, err := io.CopyN(io.Discard, kr.r, int64(n)); err != nil {
				return nil, eofIsFormat(err)
			}
		} else {
			rec.key = make([]byte, n)
			if _, err := io.ReadFull(kr.r, rec.key); err != nil {
				return nil, eofIsFormat(err)
			}
		}
		exp, err := kr.uvarint()
		if err != nil {
			return nil, err
		}
		if exp > 1<<62 {
			return nil, formatErr("expiry %d", exp)
		}
		rec.expireAt = int64(exp)
		if rec.payload, rec.rdbVersion, err = kr.payload(); err != nil {
			return nil, err
		}
		kr.keys++
		return rec, nil
	case tagEnd:
		n, err := kr.uvarint()
		if err != nil {
			return nil, err
		}
		if n != kr.keys {
			return nil, formatErr("trailer counts %d keys, read %d", n, kr.keys)
		}
		return nil, kr.checkTrailer()
	default:
		return nil, formatErr("unknown record tag 0x%02x", tag)
	}
}

// fastKey reads a key record that lies whole in the read buffer, in
// place, with no allocation: the record, its key and its payload are
// valid until the next call. false (and no error) leaves anything else
// to the general reader, which also names what is wrong with a
// malformed record.
func (kr *keyReader) fastKey() (*record, bool, error) {
	br := kr.r.br
	if br.Buffered() < 4096 {
		_, _ = br.Peek(64 << 10) // fill; an error shows on the general path
	}
	b, _ := br.Peek(br.Buffered())
	if len(b) == 0 || b[0] != tagKey {
		return nil, false, nil
	}
	i := 1
	field := func() (uint64, bool) {
		v, n := binary.Uvarint(b[i:])
		if n <= 0 {
			return 0, false
		}
		i += n
		return v, true
	}
	klen, ok := field()
	if !ok || klen > uint64(len(b)-i) {
		return nil, false, nil
	}
	key := b[i : i+int(klen)]
	i += int(klen)
	exp, ok := field()
	if !ok || exp > 1<<62 {
		return nil, false, nil
	}
	plen, ok := field()
	if !ok || plen < 10 || plen > uint64(len(b)-i) {
		return nil, false, nil
	}
	p := b[i : i+int(plen)]
	i += int(plen)
	if got := binary.LittleEndian.Uint64(p[plen-8:]); got != 0 && got != crcJones(0, p[:plen-8]) {
		return nil, true, formatErr("dump payload checksum mismatch")
	}
	kr.r.crc.Write(b[:i])
	_, _ = br.Discard(i)
	kr.keys++
	kr.rec = record{kind: tagKey, key: key, expireAt: int64(exp), payload: p, rdbVersion: int(binary.LittleEndian.Uint16(p[plen-10:]))}
	return &kr.rec, true, nil
}

// checkTrailer checks the CRC-32C and that nothing follows it.
func (kr *keyReader) checkTrailer() error {
	want := kr.r.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(kr.r, sum[:]); err != nil {
		return eofIsFormat(err)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return formatErr("trailer checksum mismatch")
	}
	if _, err := kr.r.ReadByte(); err == nil {
		return formatErr("data after the trailer")
	} else if !errors.Is(err, io.EOF) {
		return err
	}
	kr.done = true
	return io.EOF
}

// payload reads a length-prefixed DUMP payload and checks its trailer.
func (kr *keyReader) payload() ([]byte, int, error) {
	n, err := kr.uvarint()
	if err != nil {
		return nil, 0, err
	}
	if n < 10 || n > maxPayloadLen {
		return nil, 0, formatErr("payload of %d bytes", n)
	}
	var crc uint64
	var p []byte
	if kr.skipData {
		buf := make([]byte, min(n-10, 1<<20))
		for left := n - 10; left > 0; {
			c := buf[:min(left, uint64(len(buf)))]
			if _, err := io.ReadFull(kr.r, c); err != nil {
				return nil, 0, eofIsFormat(err)
			}
			crc = crcJones(crc, c)
			left -= uint64(len(c))
		}
	} else {
		p = make([]byte, n)
		if _, err := io.ReadFull(kr.r, p[:n-10]); err != nil {
			return nil, 0, eofIsFormat(err)
		}
		crc = crcJones(crc, p[:n-10])
	}
	var tail [10]byte
	if _, err := io.ReadFull(kr.r, tail[:]); err != nil {
		return nil, 0, eofIsFormat(err)
	}
	crc = crcJones(crc, tail[:2])
	if got := binary.LittleEndian.Uint64(tail[2:]); got != 0 && got != crc {
		return nil, 0, formatErr("dump payload checksum mismatch")
	}
	if p != nil {
		copy(p[n-10:], tail[:])
	}
	return p, int(binary.LittleEndian.Uint16(tail[:2])), nil
}
