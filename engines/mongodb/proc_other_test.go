//go:build !linux

package mongodb

import "syscall"

func childProcAttr() *syscall.SysProcAttr { return nil }
