package redis

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"

	"github.com/hdt3213/rdb/core"
	"github.com/hdt3213/rdb/crc64jones"
	"github.com/hdt3213/rdb/model"
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
	if _, err := call("REPLCONF", "capa", "eof"); err != nil {
		return fail(fmt.Errorf("replconf: %w", err))
	}
	if _, err := conn.Write([]byte("SYNC\r\n")); err != nil {
		return fail(fmt.Errorf("sync: %w", err))
	}
	// The server sends newlines while it prepares the snapshot.
	var line string
	for {
		line, err = br.ReadString('\n')
		if err != nil {
			return fail(fmt.Errorf("sync: %w", err))
		}
		line = strings.TrimRight(line, "\r\n")
		if line != "" {
			break
		}
	}
	switch {
	case strings.HasPrefix(line, "-"):
		return fail(fmt.Errorf("sync: %s", line[1:]))
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
		return fail(fmt.Errorf("sync: unexpected reply %q", clip(line)))
	}
}

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
	done bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	for !e.done && len(e.hold) <= len(e.mark) {
		buf := make([]byte, 64<<10)
		n, err := e.r.Read(buf)
		e.hold = append(e.hold, buf[:n]...)
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

// recorder keeps the bytes the decoder reads, from the start of the
// current object on, so that each object's raw encoding can be cut out:
// the decoder reports how many bytes it has consumed, and the recorder
// holds every byte from the last cut to what the decoder has buffered.
type recorder struct {
	r    io.Reader
	buf  []byte
	base int64 // stream offset of buf[0]
	crc  hash.Hash64
}

func (rc *recorder) Read(p []byte) (int, error) {
	n, err := rc.r.Read(p)
	rc.buf = append(rc.buf, p[:n]...)
	return n, err
}

// cut returns the bytes [rc.base, to) and forgets them. The returned
// slice is valid until the next Read.
func (rc *recorder) cut(to int64) []byte {
	n := to - rc.base
	seg := rc.buf[:n]
	rc.crc.Write(seg)
	rest := rc.buf[n:]
	out := append([]byte(nil), seg...)
	rc.buf = append(rc.buf[:0], rest...)
	rc.base = to
	return out
}

// parseRDB walks an RDB file with hdt3213/rdb's decoder, which knows
// every type of Redis up to RDB version 12, checks the file's CRC-64, and
// calls fn (when not nil) for the function libraries and for each key.
// With extract, rec.payload is a DUMP payload built from the object's raw
// encoding in the file (so RESTORE gets exactly what the server wrote);
// without, it is nil (a checking pass).
func parseRDB(r io.Reader, fn func(*record) error, extract bool) (*rdbInfo, error) {
	rc := &recorder{r: r, crc: crc64jones.New()}
	dec := core.NewDecoder(rc).WithSpecialOpCode()
	info := &rdbInfo{aux: map[string]string{}, keys: map[int]int64{}}
	var cbErr error
	var funcs [][]byte
	first := true
	head := func() {
		if first && len(rc.buf) >= 9 {
			first = false
			info.version, _ = strconv.Atoi(string(rc.cut(9)[5:]))
		}
	}
	emitFunctions := func() error {
		if info.functions == 0 || fn == nil {
			return nil
		}
		rec := &record{kind: tagFunctions, rdbVersion: info.version}
		if extract {
			rec.payload = dumpPayload(bytes.Join(funcs, nil), info.version)
		}
		funcs = nil
		return fn(rec)
	}
	keysSeen := false
	err := dec.Parse(func(o model.RedisObject) bool {
		head()
		seg := rc.cut(int64(dec.GetReadCount()))
		switch obj := o.(type) {
		case *model.AuxObject:
			switch obj.Key {
			case "redis-ver", "redis-bits", "ctime", "used-mem", "aof-base":
				info.aux[obj.Key] = obj.Value
			}
			return true
		case *model.DBSizeObject:
			return true
		case *model.FunctionsObject:
			info.functions++
			if extract {
				body, err := stripOpcodes(seg, 0xF5)
				if err != nil {
					cbErr = err
					return false
				}
				funcs = append(funcs, body)
			}
			return true
		}
		if !keysSeen {
			// Functions come before the first database in an RDB file.
			keysSeen = true
			if cbErr = emitFunctions(); cbErr != nil {
				return false
			}
		}
		db := o.GetDBIndex()
		info.keys[db]++
		if fn == nil {
			return true
		}
		rec := &record{kind: tagKey, db: db, key: []byte(o.GetKey()), rdbVersion: info.version, obj: o}
		if t := o.GetExpiration(); t != nil {
			rec.expireAt = max(t.UnixMilli(), 1)
		}
		if extract {
			body, err := keyValue(seg)
			if err != nil {
				cbErr = err
				return false
			}
			rec.payload = dumpPayload(body, info.version)
		}
		cbErr = fn(rec)
		return cbErr == nil
	})
	if err == nil {
		err = cbErr
	}
	if err != nil {
		return nil, err
	}
	if head(); first {
		return nil, formatErr("rdb file is truncated")
	}
	if !keysSeen {
		if err := emitFunctions(); err != nil {
			return nil, err
		}
	}
	end := int64(dec.GetReadCount())
	if info.version >= 5 {
		if end-8 < rc.base || int64(len(rc.buf)) < end-rc.base {
			return nil, formatErr("rdb file is truncated")
		}
		rc.cut(end - 8)
		want := rc.crc.Sum64()
		sum := binary.LittleEndian.Uint64(rc.cut(end))
		if sum != 0 && sum != want {
			return nil, formatErr("rdb file checksum mismatch")
		}
	}
	if int64(len(rc.buf)) > end-rc.base {
		return nil, formatErr("data after the rdb file's end")
	}
	// Reach the end of the stream (the artifact reader checks its sha256
	// there).
	if n, err := io.Copy(io.Discard, r); err != nil {
		return nil, err
	} else if n > 0 {
		return nil, formatErr("data after the rdb file's end")
	}
	return info, nil
}

// dumpPayload makes a DUMP payload of an object's type byte and
// encoding: the RDB version (2 bytes, little-endian) and a CRC-64 follow.
func dumpPayload(body []byte, rdbVersion int) []byte {
	p := make([]byte, len(body), len(body)+10)
	copy(p, body)
	p = binary.LittleEndian.AppendUint16(p, uint16(rdbVersion))
	h := crc64jones.New()
	h.Write(p)
	return binary.LittleEndian.AppendUint64(p, h.Sum64())
}

// keyValue cuts a key's segment of the file (opcodes such as SELECTDB
// and EXPIRETIME, the type byte, the key, the value) down to the type
// byte and the value: the body of a DUMP payload.
func keyValue(seg []byte) ([]byte, error) {
	i, err := skipOpcodes(seg)
	if err != nil {
		return nil, err
	}
	typ := seg[i]
	j, err := skipString(seg, i+1)
	if err != nil {
		return nil, err
	}
	body := make([]byte, 0, 1+len(seg)-j)
	body = append(body, typ)
	return append(body, seg[j:]...), nil
}

// stripOpcodes returns seg from the first byte that is op on, after the
// opcodes that may precede it.
func stripOpcodes(seg []byte, op byte) ([]byte, error) {
	i, err := skipOpcodes(seg)
	if err != nil {
		return nil, err
	}
	if seg[i] != op {
		return nil, formatErr("rdb: expected opcode 0x%02x, found 0x%02x", op, seg[i])
	}
	return seg[i:], nil
}

// skipOpcodes skips the opcodes the decoder consumes without reporting
// them: SELECTDB, EXPIRETIME(MS), IDLE, FREQ.
func skipOpcodes(seg []byte) (int, error) {
	i := 0
	for i < len(seg) {
		var err error
		switch seg[i] {
		case 0xFE, 0xF8: // SELECTDB, IDLE: a length
			i, _, err = readLen(seg, i+1)
		case 0xFD: // EXPIRETIME: 4 bytes
			i += 5
		case 0xFC: // EXPIRETIME_MS: 8 bytes
			i += 9
		case 0xF9: // FREQ: 1 byte
			i += 2
		case 0xF7, 0xF6, 0xF4, 0xF3: // module aux, old functions, slot info, key meta
			return 0, formatErr("rdb: opcode 0x%02x is not supported", seg[i])
		default:
			return i, nil
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, formatErr("rdb: object without a type")
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
