package redis

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"strconv"
)

// notLoadableError is content that a full sync must not send: a key
// listed twice in a database (a server loading an RDB stops on that,
// where RESTORE ... REPLACE takes the last), a value whose encoding the
// walker does not know or that does not end where its payload ends, or
// function records in an unknown format. It is found while the snapshot
// streams, before its end: the transfer is cut, the target discards it,
// and restoreLoad: auto replays instead (which names a key the server
// refuses).
type notLoadableError struct{ err error }

func (e *notLoadableError) Error() string { return e.err.Error() }
func (e *notLoadableError) Unwrap() error { return e.err }

func notLoadable(format string, a ...any) error {
	return &notLoadableError{err: fmt.Errorf(format, a...)}
}

// keySeen tells a key listed twice in a database, by a 64-bit hash of
// the database and the key: its low bits choose the slot, its high 32
// bits are kept there. Two distinct keys taken for one (about one chance
// in a thousand at a million keys) only make auto replay. An
// open-addressing table sized once from the checking pass's key count
// (4 to 8 bytes a key, 8 MB at a million).
type keySeen struct {
	slots []uint32 // 0: empty
	n     int
	seed  maphash.Seed
}

// maxFullSyncKeys bounds the keys a full sync checks for duplicates: a
// table of 2^24 slots, 64 MB. A larger backup is replayed.
var maxFullSyncKeys int64 = 3<<22 - 1

func newKeySeen(keys int64) *keySeen {
	size := 1024
	for int64(size)*3 < (keys+1)*4 {
		size *= 2
	}
	return &keySeen{slots: make([]uint32, size), seed: maphash.MakeSeed()}
}

// add records a key; an error when it was seen before, or when there
// are more keys than the checking pass counted (the artifact changed
// under the restore).
func (k *keySeen) add(db int, key []byte) error {
	if 4*(k.n+1) > 3*len(k.slots) {
		return notLoadable("more keys than the checking pass counted")
	}
	h := maphash.Bytes(k.seed, key) ^ uint64(db+1)*0x9E3779B97F4A7C15
	if !k.insert(h) {
		return notLoadable("key %s is listed twice in database %d (or its 64-bit hash shares slot and fingerprint with another key's, about once in a thousand restores of a million keys)", strconv.Quote(clip(string(key))), db)
	}
	return nil
}

func (k *keySeen) insert(h uint64) bool {
	fp := uint32(h>>32) | 1
	mask := uint64(len(k.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch k.slots[i] {
		case 0:
			k.slots[i] = fp
			k.n++
			return true
		case fp:
			return false
		}
	}
}

// valueChecker walks a DUMP payload's value encoding as the RDB walker
// walks a file's, so that a value the server could not load is found
// before the snapshot ends, not by the target's loader (which exits the
// server on a malformed file it reads from disk).
type valueChecker struct {
	r bytes.Reader
	w rdbWalker
}

func (c *valueChecker) check(typ byte, value []byte) error {
	c.r.Reset(value)
	if c.w.br == nil {
		c.w.br = bufio.NewReaderSize(&c.r, 64<<10)
	} else {
		c.w.br.Reset(&c.r)
	}
	c.w.seg = c.w.seg[:0]
	if err := c.w.value(typ); err != nil {
		return err
	}
	if c.w.br.Buffered() != 0 || c.r.Len() != 0 {
		return formatErr("a value of type %d longer than its encoding", typ)
	}
	if cap(c.w.seg) > 4<<20 {
		c.w.seg = nil // do not keep a large value's buffer
	}
	return nil
}

// rdbBuilder writes an RDB file from a logical artifact's records, as
// the server writes one for a replica: the header REDIS<version>, the
// function libraries (FUNCTION2 records, as FUNCTION DUMP holds them),
// per database SELECTDB and RESIZEDB (the key and expiry counts, so that
// the loader sizes its tables once), per key an optional EXPIRETIME_MS,
// the DUMP payload's type byte, the key as an RDB string and the value
// bytes (the payload without its RDB version and CRC-64), then EOF and
// the CRC-64 of it all.
type rdbBuilder struct {
	w         io.Writer
	buf       []byte
	crc       uint64
	version   int
	dbs       []int
	sizes     map[int]int64
	expires   map[int]int64
	functions bool // write the backup's functions
	cutoff    int64
	started   bool
	inDB      bool
	skipDB    bool
	selected  bool // SELECTDB written for db
	db        int
	maxDB     int // the target's databases
	seen      *keySeen
	check     valueChecker

	keys, expired int64
	wroteFuncs    bool
}

func newRDBBuilder(w io.Writer, version int, dbs []int, sizes, expires map[int]int64, functions bool, cutoff int64, maxDB int) *rdbBuilder {
	var keys int64
	for _, db := range dbs {
		keys += sizes[db]
	}
	return &rdbBuilder{w: w, version: version, dbs: dbs, sizes: sizes, expires: expires, functions: functions,
		cutoff: cutoff, seen: newKeySeen(keys), buf: make([]byte, 0, 1<<18), maxDB: maxDB}
}

// appendRDBLen appends an RDB length.
func appendRDBLen(b []byte, n uint64) []byte {
	switch {
	case n < 1<<6:
		return append(b, byte(n))
	case n < 1<<14:
		return append(b, byte(n>>8)|0x40, byte(n))
	case n <= 0xFFFFFFFF:
		return binary.BigEndian.AppendUint32(append(b, 0x80), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0x81), n)
	}
}

func (b *rdbBuilder) flush() error {
	if len(b.buf) == 0 {
		return nil
	}
	b.crc = crcJones(b.crc, b.buf)
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

func (b *rdbBuilder) start() {
	if !b.started {
		b.started = true
		b.buf = fmt.Appendf(b.buf, "REDIS%04d", b.version)
	}
}

// add writes one record.
func (b *rdbBuilder) add(rec *record) error {
	b.start()
	switch rec.kind {
	case tagFunctions:
		if b.inDB {
			return notLoadable("function libraries after the first database")
		}
		if !b.functions || b.wroteFuncs {
			return nil
		}
		body := rec.payload[:len(rec.payload)-10]
		for i := 0; i < len(body); {
			if body[i] != 0xF5 {
				return notLoadable("function payload: record 0x%02x is not a FUNCTION2 record", body[i])
			}
			j, err := skipString(body, i+1)
			if err != nil {
				return notLoadable("function payload: %w", err)
			}
			i = j
		}
		b.buf = append(b.buf, body...)
		b.wroteFuncs = true
	case tagDatabase:
		b.inDB = true
		b.skipDB = !slices.Contains(b.dbs, rec.db)
		if b.skipDB {
			return nil
		}
		// SELECTDB comes with the database's first key: a database
		// without keys needs none (and one the target lacks must get
		// none: a loading server exits on it).
		b.db, b.selected = rec.db, false
	case tagKey:
		if b.skipDB {
			return nil
		}
		if rec.expireAt > 0 && rec.expireAt <= b.cutoff {
			b.expired++ // expired since the backup: not resurrected
			return nil
		}
		p := rec.payload
		if len(p) < 12 {
			return notLoadable("key %s: a DUMP payload of %d bytes", strconv.Quote(clip(string(rec.key))), len(p))
		}
		typ, value := p[0], p[1:len(p)-10]
		if err := b.check.check(typ, value); err != nil {
			return notLoadable("key %s: %w", strconv.Quote(clip(string(rec.key))), err)
		}
		if err := b.seen.add(b.db, rec.key); err != nil {
			return err
		}
		if !b.selected {
			if b.db >= b.maxDB {
				return notLoadable("database %d has keys, but the target has %d databases", b.db, b.maxDB)
			}
			b.selected = true
			b.buf = appendRDBLen(append(b.buf, 0xFE), uint64(b.db))
			b.buf = appendRDBLen(append(b.buf, 0xFB), uint64(b.sizes[b.db]))
			b.buf = appendRDBLen(b.buf, uint64(b.expires[b.db]))
		}
		if rec.expireAt > 0 {
			b.buf = binary.LittleEndian.AppendUint64(append(b.buf, 0xFC), uint64(rec.expireAt))
		}
		b.buf = append(b.buf, typ)
		b.buf = appendRDBLen(b.buf, uint64(len(rec.key)))
		b.buf = append(b.buf, rec.key...)
		if len(value) > 1<<16 {
			if err := b.flush(); err != nil {
				return err
			}
			b.crc = crcJones(b.crc, value)
			if _, err := b.w.Write(value); err != nil {
				return err
			}
		} else {
			b.buf = append(b.buf, value...)
		}
		b.keys++
	}
	if len(b.buf) >= 1<<18 {
		return b.flush()
	}
	return nil
}

// finish writes the EOF opcode and the CRC-64.
func (b *rdbBuilder) finish() error {
	b.start()
	b.buf = append(b.buf, 0xFF)
	if err := b.flush(); err != nil {
		return err
	}
	var sum [8]byte
	binary.LittleEndian.PutUint64(sum[:], b.crc)
	_, err := b.w.Write(sum[:])
	return err
}
