package retention

// BaseBackupFormat is baseBackupFormat, for the test that keeps it the engine's.
const BaseBackupFormat = baseBackupFormat
