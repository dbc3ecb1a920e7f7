package executor_test

import (
	"context"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/klauspost/compress/zstd"
)

// TestEncoderWindow: the default and fastest levels compress with a
// 512 KiB window (the encoder keeps twice that as history: the worker's
// memory), zstd-better with the library's larger one.
func TestEncoderWindow(t *testing.T) {
	for _, c := range []struct {
		compression string
		max, min    uint64
	}{{"zstd", 512 << 10, 0}, {"zstd-fastest", 512 << 10, 0}, {"zstd-better", 0, 4 << 20}} {
		f := newFixture(t, c.compression)
		idx := f.backup()
		data, _, err := bucket.GetBytes(context.Background(), f.b, idx.Artifacts[0].Key)
		must(t, err)
		var h zstd.Header
		must(t, h.Decode(data))
		if c.max > 0 && h.WindowSize > c.max || h.WindowSize < c.min {
			t.Errorf("%s: the artifact's zstd window is %d bytes, want %d to %d", c.compression, h.WindowSize, c.min, c.max)
		}
	}
}
