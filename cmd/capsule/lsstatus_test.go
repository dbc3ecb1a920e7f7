package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// TestLsStatusAndVerification: capsule ls shows each backup's STATUS and
// what its verification proved (restored, checksum, FAILED, never: an
// old checksum-only record is checksum, not ok); --status failed lists
// the backups that left only a result, with their error's first line;
// --status all lists both, newest first; a bad --status exits 1 naming
// the flag.
func TestLsStatusAndVerification(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bucket")
	fb, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := bucket.Prefixed(fb, "capsule/")
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-10 * time.Hour).Truncate(time.Second)
	commit := func(id, source string, h int) *index.BackupIndex {
		x := &index.BackupIndex{
			APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: id, RequestID: id,
			Cluster: "default", Source: source, Engine: "redis", Format: "redis-keys/1", CapsuleVersion: "test",
			Status: requests.StatusSucceeded, Attempt: 1, StartedAt: t0.Add(time.Duration(h)*time.Hour - time.Minute), FinishedAt: t0.Add(time.Duration(h) * time.Hour),
			Artifacts: []index.Artifact{{Name: "keys.bin", Key: requests.ArtifactKey("default", source, id, 1, "keys.bin"),
				Size: 1, StoredSize: 1, SHA256: strings.Repeat("ab", 32), Compression: "zstd"}},
		}
		if err := index.Write(ctx, b, x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	verify := func(x *index.BackupIndex, v index.Verification) {
		v.APIVersion, v.Kind, v.BackupID, v.RequestID, v.VerifiedAt = requests.APIVersion, index.KindVerification, x.BackupID, "v-"+x.BackupID, x.FinishedAt.Add(time.Minute)
		if err := index.WriteVerification(ctx, b, x, &v); err != nil {
			t.Fatal(err)
		}
	}
	result := func(id, source string, status requests.Status, msg string, h int) {
		r := requests.Result{APIVersion: requests.APIVersion, Kind: "Result", ID: id, RequestKind: requests.KindBackup, Status: status,
			Cluster: "default", Source: source, Error: msg, Attempts: 3, FinishedAt: t0.Add(time.Duration(h) * time.Hour)}
		data, _ := json.Marshal(r)
		if _, err := bucket.PutBytes(ctx, b, requests.ResultKey(id), data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	verify(commit("bk-restored", "cnvrg/pg", 1), index.Verification{OK: true, State: index.VerifyRestored, Checks: []index.CheckResult{{Name: "restore", OK: true}}})
	verify(commit("bk-oldchecksum", "cnvrg/redis", 2), index.Verification{OK: true, Checks: []index.CheckResult{{Name: "sha256 keys.bin", OK: true, Detail: "checksum only: engine redis has no scratch restore"}}})
	verify(commit("bk-badverify", "cnvrg/redis", 3), index.Verification{OK: false, State: index.VerifyFailed, Error: "sample of values differs", Checks: []index.CheckResult{}})
	commit("bk-never", "cnvrg/redis", 4)
	result("bk-failed", "cnvrg/redis", requests.StatusFailed, "backup cnvrg/redis: dial tcp 127.0.0.1:6379: connection refused\x1b[31m\nsecond line", 5)
	result("bk-canceled", "cnvrg/pg", requests.StatusCanceled, "canceled by request", 6)
	result("bk-esfail", "cnvrg/es", requests.StatusRejected, `source: unknown source "cnvrg/es"`, 7)
	bucketFlag := []string{"--bucket", "file://" + dir}
	ls := func(args ...string) (string, string, error) {
		t.Helper()
		return run(t, append(append([]string{"ls"}, args...), bucketFlag...)...)
	}
	rowOf := func(out, id string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, id+" ") {
				return l
			}
		}
		return ""
	}

	out, errOut, err := ls()
	if err != nil {
		t.Fatalf("ls: %v (%s)", err, errOut)
	}
	if !regexp.MustCompile(`(?m)^BACKUP ID +CLUSTER +SOURCE +ENGINE +STATUS +FINISHED +SIZE +STORED +VERIFIED$`).MatchString(out) {
		t.Errorf("ls header:\n%s", out)
	}
	for id, want := range map[string]string{
		"bk-restored":    `succeeded .* restored \d{4}-`,
		"bk-oldchecksum": `succeeded .* checksum \d{4}-`,
		"bk-badverify":   `succeeded .* FAILED \d{4}-`,
		"bk-never":       `succeeded .* never$`,
	} {
		if row := rowOf(out, id); !regexp.MustCompile(want).MatchString(row) {
			t.Errorf("ls row of %s: %q, want it to match %s", id, row, want)
		}
	}
	if strings.Contains(out, "bk-failed") || strings.Contains(out, "bk-canceled") {
		t.Errorf("plain ls lists failures:\n%s", out)
	}

	out, errOut, err = ls("--status", "failed")
	if err != nil {
		t.Fatalf("ls --status failed: %v (%s)", err, errOut)
	}
	row := rowOf(out, "bk-failed")
	if !regexp.MustCompile(`^bk-failed +default +cnvrg/redis +- +failed +\S+ +- +- +- +backup cnvrg/redis: dial tcp 127.0.0.1:6379: connection refused`).MatchString(row) {
		t.Errorf("ls --status failed, row: %q\n%s", row, out)
	}
	if strings.Contains(out, "second line") || strings.Contains(out, "\x1b") {
		t.Errorf("ls --status failed prints more than the error's first line, or a control character:\n%q", out)
	}
	for _, id := range []string{"bk-restored", "bk-canceled", "bk-esfail"} {
		if strings.Contains(out, id) {
			t.Errorf("ls --status failed lists %s:\n%s", id, out)
		}
	}

	out, errOut, err = ls("--status", "all")
	if err != nil {
		t.Fatalf("ls --status all: %v (%s)", err, errOut)
	}
	var order []string
	for _, l := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			order = append(order, f[0])
		}
	}
	if want := "bk-esfail bk-canceled bk-failed bk-never bk-badverify bk-oldchecksum bk-restored"; strings.Join(order, " ") != want {
		t.Errorf("ls --status all lists %v, want %s", order, want)
	}

	out, errOut, err = ls("--status", "all", "-o", "json")
	if err != nil {
		t.Fatalf("ls --status all -o json: %v (%s)", err, errOut)
	}
	var rows []struct {
		BackupID     string `json:"backupId"`
		Verification *struct {
			State string `json:"state"`
		} `json:"verification"`
		Failure *index.Failure `json:"failure"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("ls --status all -o json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range rows {
		switch {
		case r.Failure != nil:
			got[r.Failure.ID] = string(r.Failure.Status) + ": " + r.Failure.Error
		case r.Verification != nil:
			got[r.BackupID] = r.Verification.State
		default:
			got[r.BackupID] = "none"
		}
	}
	for id, want := range map[string]string{
		"bk-restored": "restored", "bk-oldchecksum": "checksum", "bk-badverify": "failed", "bk-never": "none",
		"bk-failed":   "failed: backup cnvrg/redis: dial tcp 127.0.0.1:6379: connection refused\x1b[31m",
		"bk-canceled": "canceled: canceled by request",
	} {
		if got[id] != want {
			t.Errorf("ls -o json: %s is %q, want %q", id, got[id], want)
		}
	}

	_, _, err = ls("--status", "bogus")
	if err == nil || exitCode(err) != 4 || !strings.Contains(err.Error(), "--status") {
		t.Errorf("ls --status bogus: %v (exit %d), want exit 4 (refused at the prompt) naming --status", err, exitCode(err))
	}
}
