package postgres

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
)

// BinGlobs are where PostgreSQL's packages install each major version's
// client programs side by side: Debian and Ubuntu (the PGDG apt
// repository: /usr/lib/postgresql/17/bin), then Red Hat and its kin (the
// PGDG yum repository: /usr/pgsql-17/bin). capsule's image carries the
// client tools of every supported major there.
var BinGlobs = []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"}

var binMajorRE = regexp.MustCompile(`(?:postgresql/|pgsql-)(\d+)/bin$`)

// pickBinDir returns the directory, among those globs match, whose client
// programs suit a server of major version want (15, 16, ...): want's own
// major when it is installed, else the oldest newer one (pg_dump reads
// servers older than itself, never newer ones). A directory counts only
// when it holds tool. "" means none qualifies: then tool is looked up in
// PATH (Debian's /usr/bin/pg_* wrapper picks the newest installed major),
// and the version check names what to install.
func pickBinDir(globs []string, tool string, want int) string {
	type dir struct {
		path  string
		major int
	}
	var dirs []dir
	for _, g := range globs {
		matches, _ := filepath.Glob(g)
		for _, m := range matches {
			sm := binMajorRE.FindStringSubmatch(filepath.ToSlash(m))
			if sm == nil {
				continue
			}
			major, err := strconv.Atoi(sm[1])
			if err != nil || major < want {
				continue
			}
			if fi, err := os.Stat(filepath.Join(m, tool)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				continue
			}
			dirs = append(dirs, dir{m, major})
		}
	}
	if len(dirs) == 0 {
		return ""
	}
	sort.SliceStable(dirs, func(i, j int) bool { return dirs[i].major < dirs[j].major })
	return dirs[0].path
}

// serverMajor turns a server_version_num (150004, 90624) into the major
// version the packages' directories are named by (15; 9 for 9.x, whose
// tools no supported package ships).
func serverMajor(num int) int {
	return num / 10000
}

// pickForArchive chooses the client programs for an archive pg_dump
// dumpVersion wrote (none when it is unknown) and returns its version
// number (0 when unknown).
func pickForArchive(t *tools, dumpVersion string) int {
	if dumpVersion == "" {
		return 0
	}
	num, err := versionNum(dumpVersion)
	if err != nil {
		return 0
	}
	t.pick(num)
	return num
}
