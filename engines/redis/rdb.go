package redis

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// replStream opens a replication connection and asks for the server's
// snapshot the way redis-cli --rdb does: AUTH, REPLCONF rdb-only 1 (the
// server sends the RDB and no command stream), REPLCONF capa eof (a
// diskless transfer when the server does those, so no file is written on
// its disk), SYNC. It returns a reader of exactly the RDB's bytes.
func (e *endpoint) replStream(ctx context.Context) (io.Reader, func(), error) {
	conn, closeFn, err := e.dialRaw(ctx)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (io.Reader, func(), error) {
		closeFn()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 1<<20)
	call := func(args ...string) (string, error) {
		var b bytes.Buffer
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := conn.Write(b.Bytes()); err != nil {
			return "", err
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(line, "-") {
			return "", errors.New(line[1:])
		}
		return line, nil
	}
	if e.password != "" {
		args := []string{"AUTH", e.password}
		if e.user != "" {
			args = []string{"AUTH", e.user, e.password}
		}
		if _, err := call(args...); err != nil {
			return fail(fmt.Errorf("auth: %w", err))
		}
	} else if e.user != "" {
		return fail(errors.New("a user in the url needs a password"))
	}
	// Older servers do not know rdb-only; they send the command stream
	// after the RDB, which is never read.
	_, _ = call("REPLCONF", "rdb-only", "1")
	// From here on a failure comes before any byte of the snapshot: the
	// server refused to replicate (an ACL without +sync +replconf, SYNC
	// renamed or disabled, a replica without its master) or went away.
	refused := func(err error) (io.Reader, func(), error) {
		return fail(&syncRefusedError{err: err})
	}
	if _, err := call("REPLCONF", "capa", "eof"); err != nil {
		return refused(fmt.Errorf("replconf: %w", err))
	}
	if _, err := conn.Write([]byte("SYNC\r\n")); err != nil {
		return refused(fmt.Errorf("sync: %w", err))
	}
	// The server sends newlines while it prepares the snapshot.
	var line string
	for {
		line, err = br.ReadString('\n')
		if err != nil {
			return refused(fmt.Errorf("sync: %w", err))
		}
		line = strings.TrimRight(line, "\r\n")
		if line != "" {
			break
		}
	}
	switch {
	case strings.HasPrefix(line, "-"):
		return refused(fmt.Errorf("sync: %s", line[1:]))
	case strings.HasPrefix(line, "$EOF:"):
		mark := []byte(line[len("$EOF:"):])
		if len(mark) != 40 {
			return fail(fmt.Errorf("sync: bad EOF mark of %d bytes", len(mark)))
		}
		return &eofReader{r: br, mark: mark}, closeFn, nil
	case strings.HasPrefix(line, "$"):
		n, err := strconv.ParseInt(line[1:], 10, 64)
		if err != nil || n < 0 {
			return fail(fmt.Errorf("sync: bad bulk length %q", line))
		}
		return &exactReader{r: io.LimitReader(br, n), left: n}, closeFn, nil
	default:
		return refused(fmt.Errorf("sync: unexpected reply %q", clip(line)))
	}
}

// syncRefusedError is a replication request that failed before the
// snapshot's first byte: nothing of it was read, and a logical backup
// may still read the keyspace with SCAN.
type syncRefusedError struct{ err error }

func (e *syncRefusedError) Error() string { return e.err.Error() }
func (e *syncRefusedError) Unwrap() error { return e.err }

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// exactReader reports a short stream as io.ErrUnexpectedEOF.
type exactReader struct {
	r    io.Reader
	left int64
}

func (x *exactReader) Read(p []byte) (int, error) {
	n, err := x.r.Read(p)
	x.left -= int64(n)
	if errors.Is(err, io.EOF) && x.left > 0 {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// eofReader returns the bytes before a 40-byte end mark (diskless
// replication) and io.EOF at the mark.
type eofReader struct {
	r    *bufio.Reader
	mark []byte
	hold []byte // bytes read but not returned: possibly the mark
	buf  []byte // what each read fills
	done bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	for !e.done && len(e.hold) <= len(e.mark) {
		if e.buf == nil {
			e.buf = make([]byte, 64<<10)
		}
		n, err := e.r.Read(e.buf)
		e.hold = append(e.hold, e.buf[:n]...)
		if i := bytes.Index(e.hold, e.mark); i >= 0 {
			e.hold = e.hold[:i] // anything after the mark is not the RDB's
			e.done = true
			break
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	if !e.done {
		// Keep the last len(mark) bytes back: they may begin the mark.
		n := copy(p, e.hold[:len(e.hold)-len(e.mark)])
		e.hold = append(e.hold[:0], e.hold[n:]...)
		return n, nil
	}
	if len(e.hold) == 0 {
		return 0, io.EOF
	}
	n := copy(p, e.hold)
	e.hold = e.hold[n:]
	return n, nil
}

// rdbInfo is what a pass over an RDB file found.
type rdbInfo struct {
	version   int
	aux       map[string]string
	keys      map[int]int64
	functions int
}

// rdbWalker reads an RDB file element by element without decoding
// values: it knows each type's encoding only well enough to find where
// it ends, keeps the element's bytes (seg), and keeps the CRC-64 of the
// file. Decoding every value into objects (as hdt3213/rdb's decoder
// does) cost most of the worker's CPU in RDB mode; a value is decoded
// only when a sample needs it (payloadObject).
type rdbWalker struct {
	br  *bufio.Reader
	crc uint64
	seg []byte // the current element's bytes
	// version is the file's RDB version.
	version int
	num     [24]byte // scratch for an integer-encoded key
}

// take appends the next n bytes of the stream to seg.
func (w *rdbWalker) take(n uint64) error {
	if n > maxPayloadLen {
		return formatErr("rdb: an element of %d bytes", n)
	}
	// Grow as the bytes arrive: a forged length must not allocate what
	// the stream does not hold.
	for n > 0 {
		c := min(n, 1<<20)
		start := len(w.seg)
		w.seg = grow(w.seg, int(c))
		if _, err := io.ReadFull(w.br, w.seg[start:]); err != nil {
			return eofIsFormat(err)
		}
		n -= c
	}
	return nil
}

func (w *rdbWalker) byte() (byte, error) {
	b, err := w.br.ReadByte()
	if err != nil {
		return 0, eofIsFormat(err)
	}
	w.seg = append(w.seg, b)
	return b, nil
}

// length reads an RDB length (not a special string encoding).
func (w *rdbWalker) length() (uint64, error) {
	b, err := w.byte()
	if err != nil {
		return 0, err
	}
	switch b >> 6 {
	case 0:
		return uint64(b & 0x3F), nil
	case 1:
		c, err := w.byte()
		return uint64(b&0x3F)<<8 | uint64(c), err
	case 2:
		switch b {
		case 0x80:
			if err := w.take(4); err != nil {
				return 0, err
			}
			return uint64(binary.BigEndian.Uint32(w.seg[len(w.seg)-4:])), nil
		case 0x81:
			if err := w.take(8); err != nil {
				return 0, err
			}
			return binary.BigEndian.Uint64(w.seg[len(w.seg)-8:]), nil
		}
	}
	return 0, formatErr("rdb: bad length byte 0x%02x", b)
}

// str skips a string (plain, integer-encoded or LZF) and returns where
// it starts in seg.
func (w *rdbWalker) str() (int, error) {
	start := len(w.seg)
	b, err := w.br.ReadByte()
	if err != nil {
		return 0, eofIsFormat(err)
	}
	if b>>6 != 3 {
		if err := w.br.UnreadByte(); err != nil {
			return 0, err
		}
		n, err := w.length()
		if err != nil {
			return 0, err
		}
		return start, w.take(n)
	}
	w.seg = append(w.seg, b)
	switch b & 0x3F {
	case 0:
		return start, w.take(1)
	case 1:
		return start, w.take(2)
	case 2:
		return start, w.take(4)
	case 3:
		clen, err := w.length()
		if err != nil {
			return 0, err
		}
		if _, err := w.length(); err != nil {
			return 0, err
		}
		return start, w.take(clen)
	}
	return 0, formatErr("rdb: bad string encoding 0x%02x", b)
}

// strings skips n strings.
func (w *rdbWalker) strings(n uint64) error {
	for ; n > 0; n-- {
		if _, err := w.str(); err != nil {
			return err
		}
	}
	return nil
}

// lengths skips n lengths.
func (w *rdbWalker) lengths(n int) error {
	for ; n > 0; n-- {
		if _, err := w.length(); err != nil {
			return err
		}
	}
	return nil
}

// value skips a value of RDB type typ.
func (w *rdbWalker) value(typ byte) error {
	switch typ {
	case 0: // string
		_, err := w.str()
		return err
	case 9, 10, 11, 12, 13, 16, 17, 20: // zipmap, ziplist, intset, listpack: one blob
		_, err := w.str()
		return err
	case 1, 2, 14: // list, set, quicklist (of ziplists): n strings
		n, err := w.length()
		if err != nil {
			return err
		}
		return w.strings(n)
	case 4: // hash: n field and value strings
		n, err := w.length()
		if err != nil {
			return err
		}
		return w.strings(2 * n)
	case 3: // zset: n members with a textual score
		n, err := w.length()
		if err != nil {
			return err
		}
		for ; n > 0; n-- {
			if _, err := w.str(); err != nil {
				return err
			}
			l, err := w.byte()
			if err != nil {
				return err
			}
			if l < 253 {
				if err := w.take(uint64(l)); err != nil {
					return err
				}
			}
		}
		return nil
	case 5: // zset2: n members with a binary score
		n, err := w.length()
		if err != nil {
			return err
		}
		for ; n > 0; n-- {
			if _, err := w.str(); err != nil {
				return err
			}
			if err := w.take(8); err != nil {
				return err
			}
		}
		return nil
	case 18: // quicklist2: n (container, blob)
		n, err := w.length()
		if err != nil {
			return err
		}
		for ; n > 0; n-- {
			if _, err := w.length(); err != nil {
				return err
			}
			if _, err := w.str(); err != nil {
				return err
			}
		}
		return nil
	case 15, 19, 21:
		return w.stream(typ)
	}
	return formatErr("rdb: value type %d is not supported (a module's type, or a newer Redis's)", typ)
}

// stream skips a stream of type 15 (listpacks), 19 (listpacks 2, Redis
// 7.0) or 21 (listpacks 3, Redis 7.2).
func (w *rdbWalker) stream(typ byte) error {
	n, err := w.length()
	if err != nil {
		return err
	}
	if err := w.strings(2 * n); err != nil { // node keys and listpacks
		return err
	}
	// length, last id (ms, seq); from v2 first id, max deleted id,
	// entries added
	fields := 3
	if typ >= 19 {
		fields += 5
	}
	if err := w.lengths(fields); err != nil {
		return err
	}
	groups, err := w.length()
	if err != nil {
		return err
	}
	for ; groups > 0; groups-- {
		if _, err := w.str(); err != nil { // name
			return err
		}
		last := 2 // last id
		if typ >= 19 {
			last++ // entries read
		}
		if err := w.lengths(last); err != nil {
			return err
		}
		pel, err := w.length()
		if err != nil {
			return err
		}
		for ; pel > 0; pel-- {
			if err := w.take(16 + 8); err != nil { // id, delivery time
				return err
			}
			if _, err := w.length(); err != nil { // delivery count
				return err
			}
		}
		consumers, err := w.length()
		if err != nil {
			return err
		}
		for ; consumers > 0; consumers-- {
			if _, err := w.str(); err != nil {
				return err
			}
			times := uint64(8) // seen time
			if typ >= 21 {
				times += 8 // active time
			}
			if err := w.take(times); err != nil {
				return err
			}
			cpel, err := w.length()
			if err != nil {
				return err
			}
			if err := w.take(16 * cpel); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseRDB walks an RDB file, checks its CRC-64, and calls fn (when not
// nil) for the function libraries and for each key, with rec.typ and
// rec.value the key's raw encoding in the file (valid during the call;
// rec.dump() makes a DUMP payload of it, so RESTORE gets exactly what
// the server wrote). With extract the functions record holds its
// payload (a checking pass needs none).
func parseRDB(r io.Reader, fn func(*record) error, extract bool) (*rdbInfo, error) {
	return parseRDBTo(r, fn, extract, nil, 0)
}

// parseRDBTo is parseRDB that also writes the file to out element by
// element, each only once it was walked and fn returned nil for it:
// nothing reaches out that the walk did not check (a full sync's replica
// that loads from the socket as it streams would stop the server on a
// malformed element or a duplicate key). With maxDB > 0 a SELECTDB of a
// database from maxDB up fails the walk (a loading server exits on one).
func parseRDBTo(r io.Reader, fn func(*record) error, extract bool, out io.Writer, maxDB int) (*rdbInfo, error) {
	w := &rdbWalker{br: bufio.NewReaderSize(r, 1<<20)}
	emit := func() error {
		if out == nil || len(w.seg) == 0 {
			return nil
		}
		_, err := out.Write(w.seg)
		return err
	}
	info := &rdbInfo{aux: map[string]string{}, keys: map[int]int64{}}
	if err := w.take(9); err != nil {
		return nil, formatErr("rdb file is truncated")
	}
	if string(w.seg[:5]) != "REDIS" {
		return nil, formatErr("rdb: bad magic")
	}
	v, err := strconv.Atoi(string(w.seg[5:9]))
	if err != nil || v < 1 {
		return nil, formatErr("rdb: bad version %q", w.seg[5:9])
	}
	info.version, w.version = v, v
	var funcs []byte
	keysSeen := false
	emitFunctions := func() error {
		if keysSeen {
			return nil
		}
		keysSeen = true // functions come before the first key
		if info.functions == 0 || fn == nil {
			return nil
		}
		rec := &record{kind: tagFunctions, rdbVersion: info.version}
		if extract {
			rec.payload = dumpPayload(funcs, info.version)
		}
		funcs = nil
		return fn(rec)
	}
	db := 0
	var expireAt int64
	rec := &record{kind: tagKey}
	for {
		if err := emit(); err != nil {
			return nil, err
		}
		w.crc = crcJones(w.crc, w.seg)
		w.seg = w.seg[:0]
		op, err := w.byte()
		if err != nil {
			return nil, err
		}
		switch op {
		case 0xFA: // aux field
			k, err := w.str()
			if err != nil {
				return nil, err
			}
			vs, err := w.str()
			if err != nil {
				return nil, err
			}
			key, _ := rdbStringValue(w.seg[k:vs], nil)
			switch string(key) {
			case "redis-ver", "redis-bits", "ctime", "used-mem", "aof-base":
				val, _ := rdbStringValue(w.seg[vs:], nil)
				info.aux[string(key)] = string(val)
			}
		case 0xFB: // resize db
			if err := w.lengths(2); err != nil {
				return nil, err
			}
		case 0xFE: // select db
			n, err := w.length()
			if err != nil {
				return nil, err
			}
			if n > 1<<20 {
				return nil, formatErr("rdb: database %d", n)
			}
			if maxDB > 0 && n >= uint64(maxDB) {
				return nil, notLoadable("the snapshot selects database %d, but the target has %d", n, maxDB)
			}
			db = int(n)
		case 0xFD: // expire time, seconds
			if err := w.take(4); err != nil {
				return nil, err
			}
			expireAt = int64(binary.LittleEndian.Uint32(w.seg[len(w.seg)-4:])) * 1000
		case 0xFC: // expire time, ms
			if err := w.take(8); err != nil {
				return nil, err
			}
			expireAt = int64(binary.LittleEndian.Uint64(w.seg[len(w.seg)-8:]))
		case 0xF8: // idle
			if _, err := w.length(); err != nil {
				return nil, err
			}
		case 0xF9: // freq
			if _, err := w.byte(); err != nil {
				return nil, err
			}
		case 0xF5: // a function library
			if _, err := w.str(); err != nil {
				return nil, err
			}
			info.functions++
			if extract {
				funcs = append(funcs, w.seg...)
			}
		case 0xFF: // end
			if err := emit(); err != nil {
				return nil, err
			}
			w.crc = crcJones(w.crc, w.seg)
			w.seg = w.seg[:0]
			if err := emitFunctions(); err != nil {
				return nil, err
			}
			if info.version >= 5 {
				want := w.crc
				if err := w.take(8); err != nil {
					return nil, formatErr("rdb file is truncated")
				}
				if sum := binary.LittleEndian.Uint64(w.seg); sum != 0 && sum != want {
					return nil, formatErr("rdb file checksum mismatch")
				}
				if err := emit(); err != nil {
					return nil, err
				}
			}
			if _, err := w.br.ReadByte(); err == nil {
				return nil, formatErr("data after the rdb file's end")
			}
			// Reach the end of the stream (the artifact reader checks
			// its sha256 there).
			if n, err := io.Copy(io.Discard, r); err != nil {
				return nil, err
			} else if n > 0 {
				return nil, formatErr("data after the rdb file's end")
			}
			return info, nil
		case 0xF7, 0xF6, 0xF4, 0xF3: // module aux, old functions, slot info, key meta
			return nil, formatErr("rdb: opcode 0x%02x is not supported", op)
		default:
			// A key: its type, name and value.
			if err := emitFunctions(); err != nil {
				return nil, err
			}
			typStart := len(w.seg) - 1
			k, err := w.str()
			if err != nil {
				return nil, err
			}
			vStart := len(w.seg)
			if err := w.value(op); err != nil {
				return nil, err
			}
			info.keys[db]++
			if fn != nil {
				key, ok := rdbStringValue(w.seg[k:vStart], w.num[:0])
				if !ok {
					return nil, formatErr("rdb: bad key encoding")
				}
				*rec = record{kind: tagKey, db: db, key: key, rdbVersion: info.version, typ: w.seg[typStart], value: w.seg[vStart:]}
				if expireAt != 0 {
					rec.expireAt = max(expireAt, 1)
				}
				if err := fn(rec); err != nil {
					return nil, err
				}
			}
			expireAt = 0
		}
	}
}

// dumpPayload makes a DUMP payload of an object's type byte and
// encoding: the RDB version (2 bytes, little-endian) and a CRC-64 follow.
func dumpPayload(body []byte, rdbVersion int) []byte {
	return dumpPayloadOf(body[0], body[1:], rdbVersion)
}

// dumpPayloadOf makes a DUMP payload of a type byte and a value's
// encoding.
func dumpPayloadOf(typ byte, value []byte, rdbVersion int) []byte {
	p := make([]byte, 0, 1+len(value)+10)
	p = append(p, typ)
	p = append(p, value...)
	p = binary.LittleEndian.AppendUint16(p, uint16(rdbVersion))
	return binary.LittleEndian.AppendUint64(p, crcJones(0, p))
}

// readLen reads an RDB length at seg[i:], returning the index after it.
func readLen(seg []byte, i int) (int, uint64, error) {
	if i >= len(seg) {
		return 0, 0, formatErr("rdb: truncated length")
	}
	b := seg[i]
	switch b >> 6 {
	case 0:
		return i + 1, uint64(b & 0x3F), nil
	case 1:
		if i+2 > len(seg) {
			return 0, 0, formatErr("rdb: truncated length")
		}
		return i + 2, uint64(b&0x3F)<<8 | uint64(seg[i+1]), nil
	case 2:
		switch b {
		case 0x80:
			if i+5 > len(seg) {
				return 0, 0, formatErr("rdb: truncated length")
			}
			return i + 5, uint64(binary.BigEndian.Uint32(seg[i+1:])), nil
		case 0x81:
			if i+9 > len(seg) {
				return 0, 0, formatErr("rdb: truncated length")
			}
			return i + 9, binary.BigEndian.Uint64(seg[i+1:]), nil
		}
	}
	return 0, 0, formatErr("rdb: bad length byte 0x%02x", b)
}

// skipString skips an RDB string (plain, integer-encoded or LZF).
func skipString(seg []byte, i int) (int, error) {
	if i >= len(seg) {
		return 0, formatErr("rdb: truncated string")
	}
	b := seg[i]
	if b>>6 == 3 {
		switch b & 0x3F {
		case 0:
			return i + 2, nil
		case 1:
			return i + 3, nil
		case 2:
			return i + 5, nil
		case 3:
			j, clen, err := readLen(seg, i+1)
			if err != nil {
				return 0, err
			}
			j, _, err = readLen(seg, j)
			if err != nil {
				return 0, err
			}
			if uint64(len(seg)-j) < clen {
				return 0, formatErr("rdb: truncated string")
			}
			return j + int(clen), nil
		}
		return 0, formatErr("rdb: bad string encoding 0x%02x", b)
	}
	j, n, err := readLen(seg, i)
	if err != nil {
		return 0, err
	}
	if uint64(len(seg)-j) < n {
		return 0, formatErr("rdb: truncated string")
	}
	return j + int(n), nil
}
