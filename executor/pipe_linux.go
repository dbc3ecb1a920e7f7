package executor

import (
	"io"
	"syscall"

	"golang.org/x/sys/unix"
)

// growPipe grows r to pipeSize bytes when it is a smaller pipe. Anything
// else, or a size above /proc/sys/fs/pipe-max-size (1 MiB by default) for
// an unprivileged process, leaves it as it was: the copy works either
// way, only with more wake-ups.
func growPipe(r io.Reader) {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if size, err := unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0); err == nil && size < pipeSize {
			_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize)
		}
	})
}
