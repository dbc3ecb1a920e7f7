package redis

import "syscall"

// scratchProcAttr makes the kernel kill a scratch server whose worker
// died, so that none outlives the verification that started it.
func scratchProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
