//go:build !linux

package pipe

import (
	"os"
	"testing"
)

func size(*testing.T, *os.File) int { return 0 }
