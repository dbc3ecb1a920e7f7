package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/pitr"
)

// describe of a base backup says to which moments its source can be
// restored: the window in the table, under "pitr" in JSON beside the
// index's own fields; no window, or one that could not be read, is
// said as such. (pitr's tests check RecoverableWindow against a real
// server's WAL.)
func TestDescribeBaseBackupShowsWindow(t *testing.T) {
	e := index.Entry{BackupIndex: &index.BackupIndex{BackupID: "01base", Cluster: "c", Source: "pg", Engine: "postgres", Format: postgres.FormatBase}}
	win := &pitr.Window{Cluster: "c", Source: "pg",
		Earliest: time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC), Latest: time.Date(2026, 12, 7, 6, 30, 1, 500_000_000, time.UTC),
		EarliestLSN: "0/2000100", LatestLSN: "0/4000060", Timeline: 1, BaseBackups: 2, WALObjects: 9}
	for _, c := range []struct {
		win  *pitr.Window
		err  error
		want string
	}{
		{win, nil, "Recoverable:  any moment from 2026-12-07T06:00:00Z to 2026-12-07T06:30:01.5Z (LSN 0/2000100 to 0/4000060, 2 base backups, 9 WAL objects)"},
		{nil, nil, "nowhere yet: no WAL in the bucket follows a base backup of pg"},
		{nil, errors.New("bucket down"), "unknown (the window could not be read)"},
	} {
		var out bytes.Buffer
		a := newApp(&out, &out, func(string) string { return "" })
		if err := a.describeBackup(formatTable, e, c.win, c.err); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("describe shows\n%s\nwant a line with %q", out.String(), c.want)
		}
	}

	var out bytes.Buffer
	if err := writeData(&out, formatJSON, describedBase{Entry: e, PITR: win}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		BackupID string       `json:"backupId"`
		PITR     *pitr.Window `json:"pitr"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.PITR == nil || got.PITR.LatestLSN != "0/4000060" || !got.PITR.Latest.Equal(win.Latest) {
		t.Errorf("JSON: %s", out.String())
	}

	// A logical backup has no window.
	e.Format = "pg_dump-custom.v1"
	out.Reset()
	a := newApp(&out, &out, func(string) string { return "" })
	if err := a.describeBackup(formatTable, e, nil, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "Recoverable") {
		t.Errorf("a logical backup shows a recoverable window:\n%s", out.String())
	}
}
