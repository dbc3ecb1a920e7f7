package pipe

import (
	"bytes"
	"os"
	"runtime"
	"testing"
)

func TestGrow(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	Grow(r, 1<<20)
	Grow(bytes.NewReader(nil), 1<<20) // not a pipe: nothing happens
	if runtime.GOOS != "linux" {
		t.Skip("pipes keep their size here")
	}
	if got := size(t, r); got < 1<<20 {
		t.Fatalf("pipe is %d bytes after Grow(1 MiB)", got)
	}
	Grow(r, 4096) // never shrinks
	if got := size(t, r); got < 1<<20 {
		t.Fatalf("pipe shrank to %d bytes", got)
	}
}
