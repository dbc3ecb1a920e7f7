package pipe

import (
	"io"
	"syscall"

	"golang.org/x/sys/unix"
)

// Grow grows r to size bytes when it is a smaller pipe. Anything else,
// or a size above /proc/sys/fs/pipe-max-size (1 MiB by default) for an
// unprivileged process, leaves it as it was: reading works either way,
// only with more wake-ups.
func Grow(r io.Reader, size int) {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if cur, err := unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0); err == nil && cur < size {
			_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, size)
		}
	})
}
