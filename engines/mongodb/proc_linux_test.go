package mongodb

import "syscall"

// childProcAttr makes the kernel kill the FerretDB child when the test
// process dies, so a crashed or interrupted test leaves no server behind.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
