package pitr

// SetRecoveredHook runs f while a restore's temporary server is up,
// recovered and promoted; the returned function removes it.
func SetRecoveredHook(f func(socketDir string, port int)) func() {
	recoveredHook = f
	return func() { recoveredHook = nil }
}

// UnpackBase unpacks a base backup's archives (unpackBase).
var UnpackBase = unpackBase
