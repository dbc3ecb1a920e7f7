// Package files is the engine for a plain directory tree ("engine: files").
//
// A backup is one artifact, tree.tar: a PAX tar of the directory with its
// regular files, directories and symbolic links (stored as links, never
// followed), their permission bits including setuid, setgid and sticky
// (recorded, never restored), numeric owners, and mtimes to the
// nanosecond. Sockets, devices and fifos
// are skipped with a warning. Files are streamed, never held in memory or
// copied to local disk; a file that changes size while it is read is
// stored with the size it had when opened (cut or zero-padded), with a
// warning naming it, so the archive stays well-formed. Hard links are
// stored as separate files.
//
// Source settings:
//
//	path:    /abs/dir          # required, absolute; the tree to back up or restore into
//	exclude: ["*.log", "tmp"]  # optional globs (path.Match) against the slash-separated
//	                           # path relative to path; a pattern without "/" also
//	                           # matches the base name at any depth; an excluded
//	                           # directory is skipped whole
//	restoreOwnership: false    # optional; true sets each restored entry's numeric
//	                           # owner and group from the archive (the worker needs
//	                           # the privilege to chown: root or CAP_CHOWN)
//
// # Restore safety
//
// A restore treats the archive as hostile: whoever can write the bucket's
// backups/ can forge one whose checksum matches. It never changes the
// target before the whole archive was read to its end and its checksum
// verified. It extracts into a staging directory beside the target,
// <parent>/.<base>.capsule-restore-<job>.a<attempt>, on the same filesystem, refusing
// every entry that could land outside it or reach beyond it (absolute
// names, ".." components, a path through a symlink, duplicates, hard
// links, devices, fifos and other special files, and GNU sparse entries,
// which a few bytes of archive can inflate to terabytes). It never sets
// the setuid, setgid or sticky bit, and every entry belongs to the worker
// unless the source sets restoreOwnership. Only then does it swap by two
// renames: target to <parent>/.<base>.capsule-prev-<job>.a<attempt>, staging to
// target. The replaced tree is kept there and reported in
// RestoreInfo.Previous, or removed when the request sets dropPrevious. (The
// request option keepPrevious "true", from when removing was the default,
// is accepted and changes nothing.)
//
// Names carry the attempt, so a worker that was paused past its lease and
// wakes after another worker took the request over never shares a
// directory with its successor; the swap happens only after
// RestoreJob.CheckFence confirms the lease, and a failed fence removes the
// attempt's staging. A restore removes the staging directories of its
// request's earlier attempts, and those of other requests that
// RestoreJob.StaleStaging reports over (their names hold the request id
// and attempt in full). It never touches a previous tree an earlier
// attempt kept (one that swapped and died before its result left the
// target's former content there): it reports it in
// RestoreInfo.Details["previousOfEarlierAttempts"].
// A target that does not exist is created (with its parents). On any error
// or cancellation the staging directory, and any parent the restore
// created, is removed and the target is left as it was.
//
// A target that cannot be renamed beside its parent (a mount point such as
// a Kubernetes volume, whose parent is another filesystem, or a target
// whose parent the worker may not write to) is swapped in place: the
// engine stages inside the target, in .capsule-restore-<job>.a<attempt>, and swaps by
// renaming the target's top-level entries (except this request's own
// staging and previous directories) into .capsule-prev-<job>.a<attempt> and the
// staged ones up, moving everything back if a rename fails. The same
// guarantee holds (nothing changes before the archive is verified), but
// the swap is a series of renames rather than one, and a kept previous
// tree stays inside the target, in .capsule-prev-<job>.a<attempt>: a later backup of
// the target includes it unless exclude names ".capsule-prev-*".
//
// Restoring replaces the whole tree, including paths the backup excluded.
//
// The engine implements engines.Verifier: it extracts the backup into a
// scratch directory beside the target (or in the system temp directory),
// compares what landed on disk with the counts the backup recorded, and
// removes the scratch directory.
package files
