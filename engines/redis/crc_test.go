package redis

import (
	"math/rand/v2"
	"testing"

	"github.com/hdt3213/rdb/crc64jones"
)

// TestCRCJones checks crcJones against hdt3213/rdb's CRC-64 (which reads
// Redis's files) at every length up to 300 and in pieces.
func TestCRCJones(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 300)
	for i := range buf {
		buf[i] = byte(rng.IntN(256))
	}
	for n := range len(buf) + 1 {
		h := crc64jones.New()
		h.Write(buf[:n])
		want := h.Sum64()
		if got := crcJones(0, buf[:n]); got != want {
			t.Fatalf("length %d: %x, want %x", n, got, want)
		}
		if got := crcJones(crcJones(0, buf[:n/3]), buf[n/3:n]); got != want {
			t.Fatalf("length %d in two pieces: %x, want %x", n, got, want)
		}
	}
	if got := crcJones(0, []byte("123456789")); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("check value %x", got)
	}
}
