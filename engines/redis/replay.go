package redis

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hdt3213/rdb/lzf"

	"github.com/cnvrg/capsule/engines"
)

// replayer writes a restore's records into the target on one bare RESP
// connection. A goroutine reads the replies while the next batch is
// written, so the server always has work queued; at most replayDepth
// batches are in flight.
//
// A string without an expiry goes into an MSET of the batch's strings:
// one command for thousands of keys costs the server far less than a
// RESTORE each (it parses no payload and dispatches one command). A
// string with an expiry is a SET ... PXAT (Redis 6.2 on; RESTORE before),
// every other type a RESTORE ... REPLACE ABSTTL. Records keep their
// order for any one key: a command for a key that the pending MSET holds
// sends the MSET first (SCAN may list a key twice).
type replayer struct {
	c         *respConn
	dbs       []int
	functions string
	batch     int
	pxat      bool
	observe   func(rec *record, restored bool)

	skipDB bool
	cmds   int // commands written in the current batch
	bytes  int
	keys   int64 // keys written in the current batch
	labels *keyBatch

	mset     []byte // the pending MSET's arguments
	msetN    int
	msetKeys hashSet
	seed     maphash.Seed

	sent     chan replayBatch
	wg       sync.WaitGroup
	mu       sync.Mutex
	err      error
	restored int64 // keys acknowledged
	progress engines.Progress
	total    int64

	expired       int64
	functionsDone string
}

// replayDepth is how many batches may await their replies.
const replayDepth = 2

// replayBatch is a batch in flight: one label per reply (the key, or
// what the command was).
type replayBatch struct {
	labels *keyBatch
	keys   int64
}

func newReplayer(ctx context.Context, ep *endpoint, dbs []int, functions string, batch int, pxat bool, progress engines.Progress, total int64, observe func(*record, bool)) (*replayer, error) {
	c, err := ep.dialRESP(ctx)
	if err != nil {
		return nil, err
	}
	r := &replayer{c: c, dbs: dbs, functions: functions, batch: batch, pxat: pxat, observe: observe,
		labels: &keyBatch{}, seed: maphash.MakeSeed(),
		sent: make(chan replayBatch, replayDepth-1), progress: progress, total: total}
	r.wg.Add(1)
	go r.readReplies()
	return r, nil
}

// readReplies checks every reply. After a failure it reads no more and
// closes the connection, so that the writer fails too.
func (r *replayer) readReplies() {
	defer r.wg.Done()
	failed := false
	for b := range r.sent {
		if failed {
			continue
		}
		for i := range b.labels.len() {
			if err := r.c.readOK(); err != nil {
				r.fail(fmt.Errorf("%s: %w", b.labels.key(i), err))
				failed = true
				r.c.close()
				break
			}
		}
		if failed {
			continue
		}
		r.mu.Lock()
		r.restored += b.keys
		n := r.restored
		r.mu.Unlock()
		r.progress.Report("keys", n, r.total)
	}
}

func (r *replayer) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
}

func (r *replayer) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// label records what the next command's reply answers.
func (r *replayer) label(parts ...string) {
	for _, p := range parts {
		r.labels.buf = append(r.labels.buf, p...)
	}
	r.labels.ends = append(r.labels.ends, len(r.labels.buf))
	r.cmds++
}

func (r *replayer) labelKey(cmd string, key []byte) {
	r.labels.buf = append(r.labels.buf, cmd...)
	r.labels.buf = append(r.labels.buf, " key "...)
	r.labels.buf = strconv.AppendQuote(r.labels.buf, clip(string(key)))
	r.labels.ends = append(r.labels.ends, len(r.labels.buf))
	r.cmds++
}

func (r *replayer) add(rec *record) error {
	if err := r.failed(); err != nil {
		return err
	}
	switch rec.kind {
	case tagDatabase:
		r.skipDB = !slices.Contains(r.dbs, rec.db)
		if r.skipDB {
			return nil
		}
		r.writeMSET()
		r.c.command("SELECT", strconv.Itoa(rec.db))
		r.label("select database ", strconv.Itoa(rec.db))
		r.see(rec, true)
	case tagFunctions:
		r.see(rec, true)
		policy := "REPLACE"
		switch r.functions {
		case "skip":
			r.functionsDone = "skipped"
			return nil
		case "flush":
			r.functionsDone, policy = "flushed and restored", "FLUSH"
		default:
			r.functionsDone = "restored (replace)"
		}
		r.c.array(4)
		r.c.argString("FUNCTION")
		r.c.argString("RESTORE")
		r.c.arg(rec.payload)
		r.c.argString(policy)
		r.label("function restore")
	case tagKey:
		if r.skipDB {
			return nil
		}
		if rec.expireAt > 0 && rec.expireAt <= time.Now().UnixMilli() {
			r.expired++ // expired since the backup: not resurrected
			r.see(rec, false)
			return nil
		}
		r.see(rec, true)
		r.key(rec)
		r.keys++
		r.bytes += len(rec.key) + len(rec.payload) + len(rec.value)
	}
	if r.cmds+r.msetN >= r.batch || r.bytes >= batchBytes {
		return r.endBatch()
	}
	return nil
}

func (r *replayer) see(rec *record, restored bool) {
	if r.observe != nil {
		r.observe(rec, restored)
	}
}

// key writes one key's command, or adds it to the pending MSET.
func (r *replayer) key(rec *record) {
	h := maphash.Bytes(r.seed, rec.key)
	if r.msetKeys.has(h) {
		r.writeMSET()
	}
	var tmp [24]byte
	v, isString := rec.stringValue(tmp[:0])
	switch {
	case isString && rec.expireAt == 0:
		r.mset = appendArg(r.mset, rec.key)
		r.mset = appendArg(r.mset, v)
		r.msetN++
		r.msetKeys.add(h)
	case isString && r.pxat:
		r.c.array(5)
		r.c.argString("SET")
		r.c.arg(rec.key)
		r.c.arg(v)
		r.c.argString("PXAT")
		r.c.argInt(rec.expireAt)
		r.labelKey("set", rec.key)
	default:
		r.c.array(6)
		r.c.argString("RESTORE")
		r.c.arg(rec.key)
		r.c.argInt(rec.expireAt)
		r.c.arg(rec.dump())
		r.c.argString("REPLACE")
		r.c.argString("ABSTTL")
		r.labelKey("restore", rec.key)
	}
}

// hashSet is a set of key hashes (a Go map cost a tenth of the replay's
// CPU): open addressing, emptied in O(1) by a new generation. A
// collision only sends an MSET early.
type hashSet struct {
	slots []uint64
	gens  []uint32
	gen   uint32
	n     int
}

func (s *hashSet) has(h uint64) bool {
	if len(s.slots) == 0 {
		return false
	}
	mask := uint64(len(s.slots) - 1)
	for i := h & mask; s.gens[i] == s.gen; i = (i + 1) & mask {
		if s.slots[i] == h {
			return true
		}
	}
	return false
}

func (s *hashSet) add(h uint64) {
	if 2*(s.n+1) > len(s.slots) {
		old, oldGens, gen := s.slots, s.gens, s.gen
		size := max(1024, 2*len(s.slots))
		s.slots, s.gens, s.gen, s.n = make([]uint64, size), make([]uint32, size), 1, 0
		for i, g := range oldGens {
			if g == gen {
				s.add(old[i])
			}
		}
	}
	mask := uint64(len(s.slots) - 1)
	i := h & mask
	for s.gens[i] == s.gen {
		if s.slots[i] == h {
			return
		}
		i = (i + 1) & mask
	}
	s.slots[i], s.gens[i] = h, s.gen
	s.n++
}

func (s *hashSet) clear() {
	s.gen++
	s.n = 0
	if s.gen == 0 { // wrapped: forget every stamp
		clear(s.gens)
		s.gen = 1
	}
}

// appendArg appends a bulk string argument.
func appendArg(b, arg []byte) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(arg)), 10)
	b = append(b, '\r', '\n')
	b = append(b, arg...)
	return append(b, '\r', '\n')
}

// writeMSET writes the pending MSET.
func (r *replayer) writeMSET() {
	if r.msetN == 0 {
		return
	}
	r.c.array(1 + 2*r.msetN)
	r.c.argString("MSET")
	r.c.bw.Write(r.mset)
	r.label("mset of ", strconv.Itoa(r.msetN), " string keys")
	r.mset = r.mset[:0]
	r.msetN = 0
	r.msetKeys.clear()
}

// endBatch sends the batch and hands its replies to the reader.
func (r *replayer) endBatch() error {
	r.writeMSET()
	if r.cmds == 0 {
		return nil
	}
	if err := r.c.flush(); err != nil {
		if ferr := r.failed(); ferr != nil {
			return ferr
		}
		return err
	}
	r.sent <- replayBatch{labels: r.labels, keys: r.keys}
	r.labels = &keyBatch{buf: make([]byte, 0, len(r.labels.buf)), ends: make([]int, 0, len(r.labels.ends))}
	r.cmds, r.bytes, r.keys = 0, 0, 0
	return nil
}

// finish sends what is left, waits for every reply and closes the
// connection.
func (r *replayer) finish() error {
	err := r.endBatch()
	close(r.sent)
	r.wg.Wait()
	r.c.close()
	if ferr := r.failed(); ferr != nil {
		return ferr
	}
	return err
}

// stringPayloadValue returns the value of a DUMP payload of a string
// (RDB type 0); false for any other payload.
func stringPayloadValue(p, scratch []byte) ([]byte, bool) {
	if len(p) < 12 || p[0] != 0 {
		return nil, false
	}
	return rdbStringValue(p[1:len(p)-10], scratch)
}

// rdbStringValue decodes an RDB string encoding that makes up all of
// raw: plain, integer-encoded or LZF-compressed. It appends to scratch
// when it must build the value.
func rdbStringValue(raw, scratch []byte) ([]byte, bool) {
	if len(raw) == 0 {
		return nil, false
	}
	b := raw[0]
	if b>>6 == 3 {
		switch b & 0x3F {
		case 0:
			if len(raw) == 2 {
				return strconv.AppendInt(scratch, int64(int8(raw[1])), 10), true
			}
		case 1:
			if len(raw) == 3 {
				return strconv.AppendInt(scratch, int64(int16(binary.LittleEndian.Uint16(raw[1:]))), 10), true
			}
		case 2:
			if len(raw) == 5 {
				return strconv.AppendInt(scratch, int64(int32(binary.LittleEndian.Uint32(raw[1:]))), 10), true
			}
		case 3:
			j, clen, err := readLen(raw, 1)
			if err != nil {
				return nil, false
			}
			j, ulen, err := readLen(raw, j)
			if err != nil || uint64(len(raw)-j) != clen || clen == 0 || ulen > maxPayloadLen {
				return nil, false
			}
			v, err := lzf.Decompress(raw[j:], int(clen), int(ulen))
			if err != nil || uint64(len(v)) != ulen {
				return nil, false
			}
			return v, true
		}
		return nil, false
	}
	j, n, err := readLen(raw, 0)
	if err != nil || uint64(len(raw)-j) != n {
		return nil, false
	}
	return raw[j:], true
}
