//go:build !linux

package sqstest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
