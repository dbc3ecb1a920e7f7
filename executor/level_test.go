package executor

import (
	"bytes"
	"io"
	"testing"

	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/klauspost/compress/zstd"
)

// TestDefaultCompressionIsFastest: a worker that sets no compression
// stores artifacts at zstd's fastest level, encoded in the writer's own
// goroutine; "zstd" keeps the library's default level, with the
// streaming encoder's second goroutine.
func TestDefaultCompressionIsFastest(t *testing.T) {
	for _, c := range []struct {
		compression string
		level       zstd.EncoderLevel
		concurrent  bool
	}{{"", zstd.SpeedFastest, false}, {DefaultCompression, zstd.SpeedFastest, false}, {"zstd", zstd.SpeedDefault, true}} {
		b, err := fs.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		x, err := New(Config{Bucket: b, Engines: engines.NewRegistry(files.New()), Sources: noSources{}, Worker: "test", Version: "test", Compression: c.compression})
		if err != nil {
			t.Fatal(err)
		}
		if x.level != c.level {
			t.Errorf("compression %q: level %v, want %v", c.compression, x.level, c.level)
		}
		if got := encoderConcurrency(x.level) > 1; got != c.concurrent {
			t.Errorf("compression %q: concurrent encoder %v, want %v", c.compression, got, c.concurrent)
		}
		// The options make what the level says: the stream decodes, and
		// the fastest level's output is what that level makes.
		data := bytes.Repeat([]byte("capsule keeps backups of every table, row by row\n"), 50000)
		var out bytes.Buffer
		enc, err := zstd.NewWriter(&out, x.encoderOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(enc, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		ref, _ := zstd.NewWriter(&want, zstd.WithEncoderLevel(c.level), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(encoderWindow))
		_, _ = io.Copy(ref, bytes.NewReader(data))
		_ = ref.Close()
		if !bytes.Equal(out.Bytes(), want.Bytes()) {
			t.Errorf("compression %q: %d bytes, want the %v level's %d", c.compression, out.Len(), c.level, want.Len())
		}
	}
}

type noSources struct{}

func (noSources) Lookup(name string) (engines.Source, error) {
	return engines.Source{}, ErrUnknownSource
}
