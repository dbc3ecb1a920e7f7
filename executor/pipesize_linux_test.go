package executor_test

import (
	"os"

	"golang.org/x/sys/unix"
)

// wantPipeSize is what the executor grows a tool's stdout pipe to (the
// default /proc/sys/fs/pipe-max-size allows it).
const wantPipeSize = 1 << 20

func pipeSize(f *os.File) int {
	n, err := unix.FcntlInt(f.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return 0
	}
	return n
}
