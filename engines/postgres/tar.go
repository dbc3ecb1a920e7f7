package postgres

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/cnvrg/capsule/engines"
	"github.com/sirupsen/logrus"
)

// FormatTar is the BackupInfo.Format of a backup that is one pg_dump
// --format=tar archive of one database: what the old cnvrg-capsule
// service made (package legacy restores and imports those). The engine
// restores it like its own backups, into a side database swapped in by
// renaming, but always streaming with one pg_restore job: pg_restore
// cannot restore a tar archive in parallel. What such a backup does not
// record, the engine learns from the archive itself: the database's name
// and pg_dump's version from the archive's header before the restore,
// and every table's row count as the archive streams past (a
// verification compares the restored tables with those counts).
const FormatTar = "pg_dump-tar.v1"

// TarBackupInfo is the BackupInfo of a backup that is one pg_dump
// --format=tar archive, stored as the artifact named artifact, of size
// bytes (uncompressed). Nothing else about the database need be known:
// the engine reads the rest from the archive. The archive's encoding,
// collation and owner are not recorded: a restore gives the side
// database those of the database it replaces (or the server's defaults).
func TarBackupInfo(artifact string, size int64) engines.BackupInfo {
	return engines.BackupInfo{
		Format: FormatTar,
		Details: map[string]any{
			"mode":      "database",
			"databases": []any{map[string]any{"artifact": artifact, "dumpBytes": size}},
		},
	}
}

// tarDataMember names a member of a tar archive that holds one TOC
// entry's data.
var tarDataMember = regexp.MustCompile(`^[0-9]{1,10}\.dat$`)

// scanTarArchive reads a pg_dump tar archive from r to its end and
// returns its header and TOC (from toc.dat, which pg_dump writes first)
// and the row count of every table whose data member it read.
func scanTarArchive(r io.Reader) (*archiveInfo, error) {
	tr := tar.NewReader(r)
	info, err := tarTOC(tr)
	if err != nil {
		return nil, err
	}
	byFile := map[string]*archiveEntry{}
	for i := range info.Entries {
		if e := &info.Entries[i]; e.File != "" {
			byFile[e.File] = e
		}
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return info, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: tar: %w", errArchive, err)
		}
		e := byFile[h.Name]
		if e == nil || e.Desc != "TABLE DATA" || !tarDataMember.MatchString(h.Name) {
			continue // restore.sql, large objects, ...
		}
		if _, dup := info.Rows[e.ID]; dup {
			return nil, fmt.Errorf("%w: two members named %s", errArchive, h.Name)
		}
		var c rowCounter
		buf := make([]byte, 64<<10)
		for {
			n, err := tr.Read(buf)
			c.write(buf[:n])
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%w: tar member %s: %w", errArchive, h.Name, err)
			}
		}
		info.Rows[e.ID] = c.rows()
	}
}

// tarTOC reads the first member of a tar archive, which must be toc.dat,
// and parses the header and TOC it holds.
func tarTOC(tr *tar.Reader) (*archiveInfo, error) {
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("%w: not a tar archive: %w", errArchive, err)
	}
	if h.Name != "toc.dat" {
		return nil, fmt.Errorf("%w: the first member is not toc.dat", errArchive)
	}
	ar := &archiveReader{br: bufio.NewReaderSize(tr, 64<<10), format: archiveTar}
	info, err := ar.header()
	if err != nil {
		return nil, err
	}
	if err := ar.toc(info); err != nil {
		return nil, err
	}
	return info, nil
}

// tarHeader reads only the header and TOC of the tar archive artifact
// name: what a restore must know before it creates the side database.
func tarHeader(ctx context.Context, arts engines.ArtifactReader, name string) (*archiveInfo, error) {
	rc, err := arts.Open(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open artifact %s: %w", name, err)
	}
	defer rc.Close()
	info, err := tarTOC(tar.NewReader(rc))
	if err != nil {
		return nil, fmt.Errorf("read the header of artifact %s: %w", name, err)
	}
	return info, nil
}

// learnTar completes the details of a tar backup from its archive: the
// database's name when the backup does not record it, and the version
// of the pg_dump that wrote it (returned) when toolVersion is empty.
func learnTar(ctx context.Context, rj *engines.RestoreJob, d *details) (string, error) {
	b := &d.Databases[0]
	toolVersion := rj.Backup.ToolVersion
	if b.Name != "" && toolVersion != "" {
		return toolVersion, nil
	}
	info, err := tarHeader(ctx, rj.Artifacts, b.Artifact)
	if err != nil {
		return "", err
	}
	if b.Name == "" {
		if info.Database == "" {
			return "", fmt.Errorf("artifact %s: the archive names no database", b.Artifact)
		}
		b.Name = info.Database
	}
	if toolVersion == "" {
		// "15.20 (Debian 15.20-0+deb12u1)": the version is the first word.
		v, _, _ := strings.Cut(info.DumpVersion, " ")
		if _, err := versionNum(v); err == nil {
			toolVersion = v
		}
	}
	return toolVersion, nil
}

// tablesFromArchive lists the tables whose data an archive holds, with
// their exact row counts: what a verification compares a restored tar
// backup with when the backup recorded no tables.
func tablesFromArchive(info *archiveInfo) []tableInfo {
	var ts []tableInfo
	for _, e := range info.Entries {
		if e.Desc != "TABLE DATA" {
			continue
		}
		n, ok := info.Rows[e.ID]
		if !ok {
			continue
		}
		ts = append(ts, tableInfo{Schema: e.Namespace, Name: e.Tag, Rows: n, Estimate: -1})
	}
	return ts
}

// describeTables says in a check's detail where the expected tables came
// from.
func describeTables(t *target) string {
	if t.tablesFromArchive {
		return " (counted in the archive: the backup recorded none)"
	}
	return ""
}

// learnTables takes the tables a tar archive held, counted as it
// streamed, as what a verification checks, when the backup recorded
// none; or says why there are none to check.
func learnTables(t *target, info *archiveInfo, scanErr error, log logrus.FieldLogger) {
	if len(t.b.Tables) > 0 {
		return
	}
	if scanErr != nil {
		t.tablesUnknown = "the backup records no tables and the archive could not be read for them: " + scanErr.Error()
		log.WithField("reason", scanErr.Error()).Warn("could not count the tables in the archive")
		return
	}
	t.b.Tables = tablesFromArchive(info)
	t.tablesFromArchive = true
}
