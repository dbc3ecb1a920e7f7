package redis

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/hdt3213/rdb/core"
	"github.com/hdt3213/rdb/model"
)

// What a backup records about its keys, so that a verification can check
// a scratch restore against it (details of the index):
//
//	typesPerDatabase  {"0": {"string": 12, "hash": 3}, ...}: every key by type
//	sample            {"keys": n, "sha256": ...}: a digest of the values of
//	                  a deterministic sample of persistent keys
//
// The sample is the sampleSize persistent keys (no expiry: they cannot
// vanish between the backup and a verification) of the backed-up
// databases with the smallest FNV-1a hash of their database and name.
// Each sampled value is reduced to a canonical form (the type and the
// value, independent of the encoding the server chose: set members and
// hash fields sorted, a zset by member), and the sample's digest is the
// sha256 of the sampled keys' hashes, names and value digests in hash
// order. No key name or value is recorded: only the count and the
// digest. A verification finds the same keys in the artifact, restores
// them, DUMPs them from the scratch server and compares.
const sampleSize = 32

// sampleMethod names the sampling in the index, so that a later
// version can change it without misreading an older backup's sample.
const sampleMethod = "fnv1a-smallest-persistent/1"

// payloadType names the Redis type of a DUMP payload by its first byte
// (the RDB object type), as TYPE names it.
func payloadType(p []byte) string {
	if len(p) == 0 {
		return "unknown"
	}
	switch p[0] {
	case 0:
		return "string"
	case 1, 10, 14, 18:
		return "list"
	case 2, 11, 20:
		return "set"
	case 3, 5, 12, 17:
		return "zset"
	case 4, 9, 13, 16, 22, 23, 24, 25:
		return "hash"
	case 15, 19, 21:
		return "stream"
	case 6, 7:
		return "module"
	}
	return "type-" + strconv.Itoa(int(p[0]))
}

// payloadObject decodes a DUMP payload into its value, by wrapping it in
// a one-key RDB file for the decoder that reads the RDB artifacts.
func payloadObject(p []byte) (model.RedisObject, error) {
	if len(p) < 11 {
		return nil, fmt.Errorf("dump payload of %d bytes is too short", len(p))
	}
	version := binary.LittleEndian.Uint16(p[len(p)-10:])
	body := p[:len(p)-10]
	var f bytes.Buffer
	fmt.Fprintf(&f, "REDIS%04d", version)
	f.Write([]byte{0xFE, 0x00, body[0], 0x01, 'k'})
	f.Write(body[1:])
	f.WriteByte(0xFF)
	f.Write(make([]byte, 8))
	var obj model.RedisObject
	err := core.NewDecoder(bytes.NewReader(f.Bytes())).Parse(func(o model.RedisObject) bool {
		obj = o
		return false
	})
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errors.New("dump payload holds no value")
	}
	return obj, nil
}

// valueDigest is the sha256 of a value's canonical form; false for a
// type it does not know (a module's).
func valueDigest(o model.RedisObject) ([32]byte, bool) {
	h := sha256.New()
	var tmp [binary.MaxVarintLen64]byte
	num := func(v uint64) { h.Write(tmp[:binary.PutUvarint(tmp[:], v)]) }
	str := func(b []byte) { num(uint64(len(b))); h.Write(b) }
	sorted := func(items [][]byte) {
		slices.SortFunc(items, bytes.Compare)
		num(uint64(len(items)))
		for _, it := range items {
			str(it)
		}
	}
	id := func(s *model.StreamId) {
		if s == nil {
			num(0)
			num(0)
			return
		}
		num(s.Ms)
		num(s.Sequence)
	}
	switch x := o.(type) {
	case *model.StringObject:
		str([]byte("string"))
		str(x.Value)
	case *model.ListObject:
		str([]byte("list"))
		num(uint64(len(x.Values)))
		for _, v := range x.Values {
			str(v)
		}
	case *model.SetObject:
		str([]byte("set"))
		sorted(slices.Clone(x.Members))
	case *model.ZSetObject:
		str([]byte("zset"))
		entries := slices.Clone(x.Entries)
		sort.Slice(entries, func(i, j int) bool { return entries[i].Member < entries[j].Member })
		num(uint64(len(entries)))
		for _, e := range entries {
			str([]byte(e.Member))
			num(math.Float64bits(e.Score))
		}
	case *model.HashObject:
		str([]byte("hash"))
		fields := make([]string, 0, len(x.Hash))
		for f := range x.Hash {
			fields = append(fields, f)
		}
		sort.Strings(fields)
		num(uint64(len(fields)))
		for _, f := range fields {
			str([]byte(f))
			str(x.Hash[f])
			num(uint64(x.FieldExpirations[f]))
		}
	case *model.StreamObject:
		// The messages, the consumer groups with their pending entries
		// and consumers; not the node layout, nor times of delivery and
		// of consumers' last activity.
		str([]byte("stream"))
		num(x.Length)
		id(x.LastId)
		var msgs int
		for _, e := range x.Entries {
			for _, m := range e.Msgs {
				if m.Deleted {
					continue
				}
				msgs++
				id(m.Id)
				keys := make([]string, 0, len(m.Fields))
				for k := range m.Fields {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				num(uint64(len(keys)))
				for _, k := range keys {
					str([]byte(k))
					str([]byte(m.Fields[k]))
				}
			}
		}
		num(uint64(msgs))
		groups := slices.Clone(x.Groups)
		sort.Slice(groups, func(i, j int) bool { return groups[i].Name < groups[j].Name })
		num(uint64(len(groups)))
		for _, g := range groups {
			str([]byte(g.Name))
			id(g.LastId)
			pending := slices.Clone(g.Pending)
			sort.Slice(pending, func(i, j int) bool {
				a, b := pending[i].Id, pending[j].Id
				return a.Ms < b.Ms || a.Ms == b.Ms && a.Sequence < b.Sequence
			})
			num(uint64(len(pending)))
			for _, p := range pending {
				id(p.Id)
				num(p.DeliveryCount)
			}
			consumers := slices.Clone(g.Consumers)
			sort.Slice(consumers, func(i, j int) bool { return consumers[i].Name < consumers[j].Name })
			num(uint64(len(consumers)))
			for _, c := range consumers {
				str([]byte(c.Name))
				num(uint64(len(c.Pending)))
			}
		}
	default:
		return [32]byte{}, false
	}
	var d [32]byte
	h.Sum(d[:0])
	return d, true
}

// keyHash orders keys for the sample.
func keyHash(db int, key []byte) uint64 {
	h := fnv.New64a()
	var tmp [binary.MaxVarintLen64]byte
	h.Write(tmp[:binary.PutUvarint(tmp[:], uint64(db))])
	h.Write(key)
	return h.Sum64()
}

// sampledKey is one key of a sample.
type sampledKey struct {
	hash   uint64
	db     int
	key    string
	digest [32]byte
}

func (a sampledKey) less(b sampledKey) bool {
	if a.hash != b.hash {
		return a.hash < b.hash
	}
	if a.db != b.db {
		return a.db < b.db
	}
	return a.key < b.key
}

// sampler keeps the sampleSize smallest keys it is offered, whatever the
// order: the same keys at backup time and at verification.
type sampler struct {
	keys []sampledKey // ascending
}

// mayKeep tells whether offer could keep the key: a cheap check that
// spares a caller building the value callback for nearly every key.
func (s *sampler) mayKeep(db int, key []byte) bool {
	return len(s.keys) < sampleSize || keyHash(db, key) <= s.keys[len(s.keys)-1].hash
}

// offer considers a persistent key; value is called only when the key
// would be kept, and a value it cannot digest (false) leaves the key
// out.
func (s *sampler) offer(db int, key []byte, value func() (model.RedisObject, error)) {
	k := sampledKey{hash: keyHash(db, key), db: db}
	if len(s.keys) == sampleSize && !k.less(s.keys[len(s.keys)-1]) {
		return
	}
	k.key = string(key)
	i := sort.Search(len(s.keys), func(i int) bool { return !s.keys[i].less(k) })
	if i < len(s.keys) && s.keys[i].hash == k.hash && s.keys[i].db == k.db && s.keys[i].key == k.key {
		return // offered twice
	}
	o, err := value()
	if err != nil {
		return
	}
	d, ok := valueDigest(o)
	if !ok {
		return
	}
	k.digest = d
	s.keys = slices.Insert(s.keys, i, k)
	if len(s.keys) > sampleSize {
		s.keys = s.keys[:sampleSize]
	}
}

// sum is the sample's digest.
func (s *sampler) sum() string {
	h := sha256.New()
	var tmp [binary.MaxVarintLen64]byte
	for _, k := range s.keys {
		h.Write(binary.BigEndian.AppendUint64(nil, k.hash))
		h.Write(tmp[:binary.PutUvarint(tmp[:], uint64(k.db))])
		h.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(k.key)))])
		h.Write([]byte(k.key))
		h.Write(k.digest[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// keyStats is what a backup records about its keys.
type keyStats struct {
	types  map[int]map[string]int64
	sample sampler
}

func newKeyStats() *keyStats { return &keyStats{types: map[int]map[string]int64{}} }

func (s *keyStats) count(db int, typ string) {
	m := s.types[db]
	if m == nil {
		m = map[string]int64{}
		s.types[db] = m
	}
	m[typ]++
}

// add counts n keys of type typ in database db.
func (s *keyStats) add(db int, typ string, n int64) {
	if n == 0 {
		return
	}
	m := s.types[db]
	if m == nil {
		m = map[string]int64{}
		s.types[db] = m
	}
	m[typ] += n
}

// details adds the stats to an index's details.
func (s *keyStats) details(d map[string]any) {
	types := map[string]map[string]int64{}
	for db, m := range s.types {
		types[strconv.Itoa(db)] = m
	}
	d["typesPerDatabase"] = types
	d["sample"] = map[string]any{"keys": len(s.sample.keys), "sha256": s.sample.sum(), "method": sampleMethod}
}
