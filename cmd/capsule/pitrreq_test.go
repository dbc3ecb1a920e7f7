package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/requests"
)

// capsule restore --source writes a point-in-time Restore request (not a
// restore in this process), and the worker that capsule worker wires up
// runs it: here it rejects it, naming why, because the source is not a
// postgres one (a real recovery: pitr/TestRestoreRequestToTime).
func TestPointInTimeRestoreIsARequest(t *testing.T) {
	e := newCLIEnv(t)
	out, errOut, code := e.run("restore", "--source", "data", "--time", "2026-12-07T05:03:50Z", "--to", "copy", "--drop-previous", "--no-check", "-o", "json")
	if code != 0 {
		t.Fatalf("restore --source: exit %d\n%s%s", code, out, errOut)
	}
	var req requests.Request
	if err := json.Unmarshal([]byte(out), &req); err != nil {
		t.Fatalf("restore --source -o json printed %q: %v", out, err)
	}
	if req.Kind != requests.KindRestore || req.PointInTime == nil || req.PointInTime.Source != "data" || req.BackupID != "" ||
		!req.PointInTime.Time.Equal(time.Date(2026, 12, 7, 5, 3, 50, 0, time.UTC)) || req.Target != "copy" || !req.DropPrevious {
		t.Fatalf("request %s, want a point-in-time Restore of data at 2026-12-07T05:03:50Z into copy", out)
	}
	if keys := e.requestsWritten(); len(keys) != 1 || !strings.HasSuffix(keys[0], req.ID+".json") {
		t.Fatalf("requests in the bucket: %v", keys)
	}
	e.work("w-pitr")
	out, errOut, code = e.run("status", req.ID, "--wait")
	if code != exitEndedBadly || !strings.Contains(out, "rejected") || !strings.Contains(out, "data is a files source; point-in-time restores are of postgres sources") {
		t.Errorf("status --wait: exit %d\n%s%s", code, out, errOut)
	}
	// Checked at the prompt without --no-check; --lsn and --latest too.
	_, errOut, code = e.run("restore", "--source", "data", "--lsn", "0/3000060")
	if code != exitRefused || !strings.Contains(errOut, "point-in-time restores go into postgres") {
		t.Errorf("restore --source data --lsn: exit %d: %s", code, errOut)
	}
	out = e.must("restore", "--source", "cnvrg/pg", "--lsn", "0/3000060", "--id", "pitr-lsn", "-o", "json")
	if err := json.Unmarshal([]byte(out), &req); err != nil || req.PointInTime == nil || req.PointInTime.LSN != "0/3000060" || req.ID != "pitr-lsn" {
		t.Errorf("restore --lsn printed %s (%v)", out, err)
	}
}

// capsule status of a point-in-time restore says where recovery ended.
func TestStatusSaysWhereRecoveryEnded(t *testing.T) {
	r := &requests.Result{RequestKind: requests.KindRestore, Status: requests.StatusSucceeded, BackupID: "base1", Details: map[string]any{
		"target": "cnvrg/pg", "previous": "app_capsule_prev_x",
		"pointInTime": map[string]any{"baseBackup": "base1", "recoveredLSN": "0/3002D20", "recoveredReason": "before 2026-12-07 15:47:48.96546+00", "target": "2026-12-07T15:47:48.9150015Z"},
	}}
	var got string
	for _, f := range restoreFields(r) {
		if f[0] == "Recovered" {
			got = f[1]
		}
	}
	if want := "before 2026-12-07 15:47:48.96546+00 (LSN 0/3002D20, asked: 2026-12-07T15:47:48.9150015Z)"; got != want {
		t.Errorf("Recovered: %q, want %q", got, want)
	}
}
