//go:build !linux

package redis

import "syscall"

func scratchProcAttr() *syscall.SysProcAttr { return nil }
