package requests_test

import (
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/schemas"
)

var validator schemas.Validator

func TestParseValid(t *testing.T) {
	for _, doc := range []string{
		`{"apiVersion":"capsule/v1","kind":"Backup","id":"01jd3k","cluster":"default","source":"cnvrg/pg","labels":{"app":"x"}}`,
		`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"files"}`,
		`{"apiVersion":"capsule/v1","kind":"Restore","id":"r1","backupId":"01jd3k","target":"cnvrg/pg-copy","dropPrevious":true}`,
		`{"apiVersion":"capsule/v1","kind":"Restore","id":"r1","backupId":"01jd3k","options":{"renameSuffix":"-new"}}`,
		`{"apiVersion":"capsule/v1","kind":"Verify","id":"v1","backupId":"01jd3k"}`,
		`{"apiVersion":"capsule/v1","kind":"Restore","id":"p1","pointInTime":{"source":"cnvrg/pg","time":"2026-12-07T05:03:50.25Z"}}`,
		`{"apiVersion":"capsule/v1","kind":"Restore","id":"p2","pointInTime":{"source":"cnvrg/pg","lsn":"0/3000060"},"target":"cnvrg/pg-copy","dropPrevious":true,"options":{"database":"app"}}`,
		`{"apiVersion":"capsule/v1","kind":"Restore","id":"p3","pointInTime":{"source":"cnvrg/pg","latest":true}}`,
	} {
		r, err := requests.Parse([]byte(doc))
		if err != nil {
			t.Errorf("Parse(%s) = %v, want ok", doc, err)
			continue
		}
		if err := validator.Validate("request", []byte(doc)); err != nil {
			t.Errorf("schema refuses a request Parse accepts: %s: %v", doc, err)
		}
		if r.ID == "" {
			t.Errorf("Parse(%s): empty id", doc)
		}
	}
}

func TestParseInvalidNamesTheField(t *testing.T) {
	for _, tc := range []struct{ doc, field string }{
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"Bad ID","source":"s"}`, "id"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"../x","source":"s"}`, "id"},
		{`{"apiVersion":"capsule/v2","kind":"Backup","id":"a","source":"s"}`, "apiVersion"},
		{`{"apiVersion":"capsule/v1","kind":"Frobnicate","id":"a","source":"s"}`, "kind"},
		{`{"apiVersion":"capsule/v1","id":"a","source":"s"}`, "kind"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"a"}`, "source"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"../etc"}`, "source"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"a//b"}`, "source"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"s","cluster":"/x"}`, "cluster"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"s","password":"hunter2"}`, "password"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"s","url":"postgres://u:p@h/db"}`, "url"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"s","backupId":"b"}`, "backupId"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a"}`, "backupId"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","backupId":"b","source":"s"}`, "source"},
		{`{"apiVersion":"capsule/v1","kind":"Verify","id":"a","backupId":"b","dropPrevious":true}`, "dropPrevious"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":7,"source":"s"}`, "id"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"s","labels":{"bad key":"v"}}`, "labels"},
		// Point in time: exactly one of backupId and pointInTime, exactly
		// one of time, lsn and latest, and nested fields as strict as the
		// request's own.
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","backupId":"b","pointInTime":{"source":"s","latest":true}}`, "pointInTime"},
		{`{"apiVersion":"capsule/v1","kind":"Verify","id":"a","pointInTime":{"source":"s","latest":true}}`, "pointInTime"},
		{`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"s","pointInTime":{"source":"s","latest":true}}`, "pointInTime"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"source":"s"}}`, "pointInTime"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"source":"s","latest":true,"lsn":"0/1"}}`, "pointInTime"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"source":"s","time":"2026-01-01T00:00:00Z","latest":true}}`, "pointInTime"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"latest":true}}`, "pointInTime.source"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"source":"../x","latest":true}}`, "pointInTime.source"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"source":"s","lsn":"3000060"}}`, "pointInTime.lsn"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"source":"s","lsn":"0/0"}}`, "pointInTime.lsn"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"source":"s","time":"yesterday"}}`, "pointInTime.time"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"source":"s","latest":true,"url":"postgres://u:p@h/db"}}`, "pointInTime.url"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":{"Source":"s","latest":true}}`, "pointInTime.Source"},
		{`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","pointInTime":"yesterday"}`, "pointInTime"},
	} {
		_, err := requests.Parse([]byte(tc.doc))
		var fe *requests.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("Parse(%s) = %v, want a FieldError naming %q", tc.doc, err, tc.field)
			continue
		}
		if fe.Field != tc.field {
			t.Errorf("Parse(%s) names field %q (%v), want %q", tc.doc, fe.Field, err, tc.field)
		}
		if validator.Validate("request", []byte(tc.doc)) == nil {
			t.Errorf("schema accepts a request Parse refuses: %s", tc.doc)
		}
	}
}

func TestParseBadJSON(t *testing.T) {
	for _, doc := range []string{``, `{`, `[]`, `{"apiVersion":"capsule/v1"} {}`, `null x`} {
		if _, err := requests.Parse([]byte(doc)); err == nil {
			t.Errorf("Parse(%q) accepted bad JSON", doc)
		} else if !strings.Contains(err.Error(), "JSON") && !strings.Contains(err.Error(), ":") {
			t.Errorf("Parse(%q) error %q does not say what is wrong", doc, err)
		}
	}
}

func TestObjectsMatchSchemas(t *testing.T) {
	now := time.Date(2026, 11, 24, 8, 0, 0, 123, time.UTC)
	for name, v := range map[string]any{
		"lease": requests.Lease{APIVersion: requests.APIVersion, Kind: "Lease", ID: "a1", Holder: "h/1", Token: "0123456789abcdef0123", Attempt: 1, DurationMillis: 60000, AcquiredAt: now, RenewedAt: now,
			Progress: &requests.Progress{Phase: "upload", Bytes: 10, StoredBytes: 3, UpdatedAt: now}},
		"result":  requests.Result{APIVersion: requests.APIVersion, Kind: "Result", ID: "a1", RequestKind: requests.KindBackup, Status: requests.StatusFailed, Error: "boom", Attempts: 2, FinishedAt: now},
		"cancel":  requests.Cancel{APIVersion: requests.APIVersion, Kind: "Cancel", ID: "a1", RequestedAt: now},
		"request": requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindBackup, ID: requests.NewID(), Source: "cnvrg/pg", CreatedAt: now},
	} {
		if err := validator.ValidateValue(name, v); err != nil {
			t.Errorf("%s does not match its schema: %v", name, err)
		}
	}
	// A rejected result without an error message is refused by the schema.
	bad := requests.Result{APIVersion: requests.APIVersion, Kind: "Result", ID: "a1", Status: requests.StatusRejected, FinishedAt: now}
	if validator.ValidateValue("result", bad) == nil {
		t.Errorf("schema accepts a rejected result with no error")
	}
}

func TestKeys(t *testing.T) {
	if got := requests.IndexKey("cnvrg/app", "pg", "b1"); got != "backups/cnvrg%2Fapp/pg/b1/backupIndex.json" {
		t.Errorf("IndexKey = %q", got)
	}
	k, err := requests.ParseBackupKey(requests.ArtifactKey("cnvrg/app", "cnvrg/pg", "b1", 2, "tree.tar"))
	if err != nil || k.Cluster != "cnvrg/app" || k.Source != "cnvrg/pg" || k.BackupID != "b1" || k.Rest != "2/tree.tar" {
		t.Errorf("ParseBackupKey = %+v, %v", k, err)
	}
	if id, ok := requests.IDFromKey(requests.RequestsPrefix, requests.RequestKey("abc")); !ok || id != "abc" {
		t.Errorf("IDFromKey = %q, %v", id, ok)
	}
	for _, key := range []string{"requests/abc", "requests/Bad.json", "leases/abc.json"} {
		if _, ok := requests.IDFromKey(requests.RequestsPrefix, key); ok {
			t.Errorf("IDFromKey(%q) accepted", key)
		}
	}
}

func TestNewIDIsTimeOrderedAndValid(t *testing.T) {
	prev := ""
	for range 100 {
		id := requests.NewID()
		if err := requests.ValidateID(id); err != nil {
			t.Fatalf("NewID() = %q: %v", id, err)
		}
		if id[:10] < prev[:min(10, len(prev))] {
			t.Fatalf("NewID() time part went backwards: %q after %q", id, prev)
		}
		prev = id
	}
}

func TestSlotIDIsStableAndValid(t *testing.T) {
	slot := time.Date(2026, 11, 24, 6, 0, 0, 0, time.UTC)
	a, b := requests.SlotID("cnvrg/cnvrg-app/pg", slot), requests.SlotID("cnvrg/cnvrg-app/pg", slot.In(time.FixedZone("x", 3600)))
	if a != b {
		t.Errorf("SlotID differs by time zone: %q vs %q", a, b)
	}
	if err := requests.ValidateID(a); err != nil {
		t.Errorf("SlotID = %q: %v", a, err)
	}
	if a == requests.SlotID("cnvrg/cnvrg-app/pg", slot.Add(time.Second)) {
		t.Errorf("SlotID is the same for different slots")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"s"}`))
	f.Add([]byte(`{"apiVersion":"capsule/v1","kind":"Restore","id":"a","backupId":"b"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := requests.Parse(data)
		if err != nil {
			return
		}
		// Whatever Parse accepts is valid and survives a round trip.
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := requests.Parse(out); err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !strings.HasPrefix(requests.RequestKey(r.ID), requests.RequestsPrefix) || strings.Contains(r.ID, "/") {
			t.Fatalf("accepted id %q escapes requests/", r.ID)
		}
	})
}

// TestLegacyBackupRefs: a Restore or Verify names a backup of the old
// cnvrg-capsule service as legacy:<id>, mixed case allowed there only;
// Parse and the schema agree on every case.
func TestLegacyBackupRefs(t *testing.T) {
	for _, doc := range []string{
		`{"apiVersion":"capsule/v1","kind":"Restore","id":"r1","backupId":"legacy:postgresql-3WxuRkPVz3pKPmCH9ZDy5e","target":"cnvrg/pg"}`,
		`{"apiVersion":"capsule/v1","kind":"Verify","id":"v1","backupId":"legacy:postgresql-abc"}`,
	} {
		r, err := requests.Parse([]byte(doc))
		if err != nil {
			t.Errorf("Parse(%s) = %v, want ok", doc, err)
			continue
		}
		if id, ok := requests.LegacyBackupID(r.BackupID); !ok || requests.ValidateLegacyID(id) != nil {
			t.Errorf("LegacyBackupID(%q) = %q, %v", r.BackupID, id, ok)
		}
		if err := validator.Validate("request", []byte(doc)); err != nil {
			t.Errorf("schema refuses a request Parse accepts: %s: %v", doc, err)
		}
	}
	for _, ref := range []string{
		"postgresql-3WxuRkPVz3pKPmCH9ZDy5e",            // mixed case without the prefix
		"legacy:postgresql-",                           // no id
		"legacy:postgresql-3Wx/../x",                   // a path
		"legacy:redis-3WxuRkPVz3pKPmCH9ZDy5e",          // a service type the old service never wrote
		"legacy:postgresql-" + strings.Repeat("a", 65), // too long
		"legacy:01jd3k",                                // a capsule id is never legacy
		"LEGACY:postgresql-abc",
	} {
		for _, kind := range []string{"Restore", "Verify"} {
			doc := `{"apiVersion":"capsule/v1","kind":"` + kind + `","id":"r1","backupId":` + strconvQuote(ref) + `}`
			_, err := requests.Parse([]byte(doc))
			var fe *requests.FieldError
			if !errors.As(err, &fe) || fe.Field != "backupId" {
				t.Errorf("Parse(%s) = %v, want a FieldError naming backupId", doc, err)
			}
			if validator.Validate("request", []byte(doc)) == nil {
				t.Errorf("schema accepts a request Parse refuses: %s", doc)
			}
		}
	}
	// A legacy reference names a backup to restore: never one to make.
	doc := `{"apiVersion":"capsule/v1","kind":"Backup","id":"a","source":"s","backupId":"legacy:postgresql-abc"}`
	if _, err := requests.Parse([]byte(doc)); err == nil {
		t.Errorf("Parse(%s) accepted a Backup with a backupId", doc)
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// The rough edges of hand-written requests (issue 17).
func TestParseHandWritten(t *testing.T) {
	t.Run("a leading byte order mark is accepted", func(t *testing.T) {
		doc := "\xef\xbb\xbf" + `{"apiVersion":"capsule/v1","kind":"Backup","id":"a1","source":"files"}`
		if r, err := requests.Parse([]byte(doc)); err != nil || r.Source != "files" {
			t.Fatalf("Parse with a BOM = %+v, %v", r, err)
		}
	})
	for _, tc := range []struct{ name, doc, field, says string }{
		{"a field in the wrong case beside the real one", `{"apiVersion":"capsule/v1","kind":"Backup","id":"a1","source":"files","Source":"other"}`, "Source", `did you mean "source"`},
		{"a field in the wrong case alone", `{"apiversion":"capsule/v1","kind":"Backup","id":"a1","source":"files"}`, "apiversion", `did you mean "apiVersion"`},
		{"a field given twice", `{"apiVersion":"capsule/v1","kind":"Backup","id":"a1","source":"files","source":"x"}`, "source", "twice"},
		{"a bad createdAt", `{"apiVersion":"capsule/v1","kind":"Backup","id":"a1","source":"files","createdAt":"yesterday"}`, "createdAt", "RFC 3339"},
		{"a createdAt that is a number", `{"apiVersion":"capsule/v1","kind":"Backup","id":"a1","source":"files","createdAt":1700000000}`, "createdAt", "RFC 3339"},
		{"a label value that is not a string", `{"apiVersion":"capsule/v1","kind":"Backup","id":"a1","source":"files","labels":{"a":1}}`, "labels", "must be"},
		{"dropPrevious that is a string", `{"apiVersion":"capsule/v1","kind":"Restore","id":"a1","backupId":"b","dropPrevious":"yes"}`, "dropPrevious", "boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := requests.Parse([]byte(tc.doc))
			var fe *requests.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Parse(%s) = %v, want a FieldError naming %q that says %q", tc.doc, err, tc.field, tc.says)
			}
		})
	}
}

func TestMisnamedID(t *testing.T) {
	seen := map[string]string{}
	for _, key := range []string{"requests/My Backup.json", "requests/my backup.json", "requests/x.txt", "requests/sub/dir.json", "requests/" + strings.Repeat("É", 200) + ".json", "requests/.json"} {
		id := requests.MisnamedID(key)
		if err := requests.ValidateID(id); err != nil {
			t.Errorf("MisnamedID(%q) = %q: %v", key, id, err)
		}
		if prev, ok := seen[id]; ok {
			t.Errorf("MisnamedID gives %q to both %q and %q", id, prev, key)
		}
		seen[id] = key
		if requests.MisnamedID(key) != id {
			t.Errorf("MisnamedID(%q) is not stable", key)
		}
	}
}

// The README's point-in-time Restore example parses and matches the
// schema as written.
func TestReadmePointInTimeExample(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- readme-request: pitr -->\n```json\n(.*?)```").FindSubmatch(data)
	if m == nil {
		t.Fatal("the README has no <!-- readme-request: pitr --> example")
	}
	r, err := requests.Parse(m[1])
	if err != nil {
		t.Fatalf("the README's pitr example: %v", err)
	}
	if r.PointInTime == nil || r.Kind != requests.KindRestore {
		t.Errorf("the README's pitr example is not a point-in-time Restore: %s", m[1])
	}
	if err := validator.Validate("request", m[1]); err != nil {
		t.Errorf("the README's pitr example does not match the schema: %v", err)
	}
}
