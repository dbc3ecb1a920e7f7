// Package engines defines the Engine interface that every data service's
// plugin implements, the Source an engine works on, and an explicit
// Registry. Engines see only plain streams: the executor compresses,
// checksums and uploads what an engine writes, and verifies what it hands
// back on restore.
//
// One subpackage per engine (files, postgres, redis, mysql, elasticsearch,
// mongodb). engines/enginetest is the round-trip suite (backup, damage,
// restore, compare; a corrupt artifact never touches the target) that every
// engine passes against a real service, or a named stand-in where none can
// run.
package engines
