package pipe

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func size(t *testing.T, f *os.File) int {
	n, err := unix.FcntlInt(f.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
