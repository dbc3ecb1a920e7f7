// Package files is the engine for a plain directory tree ("engine: files").
//
// A backup is one artifact, tree.tar: a PAX tar of the directory with its
// regular files, directories and symbolic links (stored as links, never
// followed), their permission bits including setuid, setgid and sticky,
// numeric owners, and mtimes to the nanosecond. Sockets, devices and fifos
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
//
// # Restore safety
//
// A restore never changes the target before the whole archive was read to
// its end and its checksum verified. It extracts into a staging directory
// beside the target, <parent>/.<base>.capsule-restore-<job>, on the same
// filesystem, refusing every entry that could land outside it (absolute
// names, ".." components, a path through a symlink, duplicates, hard links
// and special files). Only then does it swap by two renames: target to
// <parent>/.<base>.capsule-prev-<job>, staging to target. The replaced tree
// is removed, or kept and reported in RestoreInfo.Previous when the
// request's extra option keepPrevious is "true". A target that does not
// exist is created (with its parents). On any error or cancellation the
// staging directory, and any parent the restore created, is removed and the
// target is left as it was.
//
// A target that cannot be renamed beside its parent (a mount point such as
// a Kubernetes volume, whose parent is another filesystem, or a target
// whose parent the worker may not write to) is swapped in place: the
// engine stages inside the target, in .capsule-restore-<job>, and swaps by
// renaming the target's top-level entries into .capsule-prev-<job> and the
// staged ones up, moving everything back if a rename fails. The same
// guarantee holds (nothing changes before the archive is verified), but
// the swap is a series of renames rather than one, and a kept previous
// tree stays inside the target.
//
// Ownership is restored only when the engine runs as root. Restoring
// replaces the whole tree, including paths the backup excluded.
//
// The engine implements engines.Verifier: it extracts the backup into a
// scratch directory beside the target (or in the system temp directory),
// compares what landed on disk with the counts the backup recorded, and
// removes the scratch directory.
package files
