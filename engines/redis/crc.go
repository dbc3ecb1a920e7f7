package redis

import (
	"encoding/binary"
	"hash/crc64"
	"sync"
)

// crcJones updates Redis's CRC-64 (Jones polynomial, reflected, no final
// xor: what DUMP payloads and RDB files carry) with p, eight bytes at a
// time. hdt3213/rdb's crc64jones goes a byte at a time below 64 bytes,
// and a small key's payload is below that: the restore's check of every
// payload cost a tenth of its CPU.
func crcJones(crc uint64, p []byte) uint64 {
	jonesOnce.Do(makeJones)
	t := &jonesTables
	for len(p) >= 8 {
		crc ^= binary.LittleEndian.Uint64(p)
		crc = t[7][crc&0xff] ^ t[6][(crc>>8)&0xff] ^ t[5][(crc>>16)&0xff] ^ t[4][(crc>>24)&0xff] ^
			t[3][(crc>>32)&0xff] ^ t[2][(crc>>40)&0xff] ^ t[1][(crc>>48)&0xff] ^ t[0][crc>>56]
		p = p[8:]
	}
	for _, v := range p {
		crc = t[0][byte(crc)^v] ^ (crc >> 8)
	}
	return crc
}

var (
	jonesOnce   sync.Once
	jonesTables [8]crc64.Table
)

func makeJones() {
	// The Jones polynomial 0xad93d23594c935a9, bit-reflected.
	jonesTables[0] = *crc64.MakeTable(0x95ac9329ac4bc9b5)
	for i := range 256 {
		crc := jonesTables[0][i]
		for j := 1; j < 8; j++ {
			crc = jonesTables[0][crc&0xff] ^ (crc >> 8)
			jonesTables[j][i] = crc
		}
	}
}
