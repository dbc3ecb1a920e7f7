package legacy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/legacy"
)

// The secrets the old service kept in its state files. Tests look for
// them in everything capsule produces.
const (
	password  = "Legacy-Pw-7f3a9c1e5b"
	accessKey = "AKIALEGACYTESTKEY0042"
	secretKey = "legacy/Secret+Key/9d8c7b6a5f4e3d2c1b0a"
)

var secrets = []string{password, accessKey, secretKey}

// stateFile103 is a state file as 1.0.3 wrote it (statefile.json), with
// the secrets where the old service kept them.
func stateFile103(id, dump, status string, date time.Time) map[string]any {
	return map[string]any{
		"backupId": id, "requestType": "periodicbackuprequest", "rotation": 5,
		"date": date.Format(time.RFC3339Nano), "period": 86400.0, "bucketType": "minio",
		"bucket": map[string]any{
			"id": "minio-minio.cnvrg:9000-cnvrg-storage", "endpoint": "minio.cnvrg:9000", "region": "eastus",
			"accessKey": accessKey, "secretKey": secretKey, "useSSL": false, "bucket": "cnvrg-storage",
			"dstDir": "cnvrg-smart-backups",
		},
		"serviceType": "postgresql",
		"service": map[string]any{
			"name":  "cnvrg/pg-storage",
			"creds": map[string]any{"host": "postgres.cnvrg", "db": "cnvrg_production", "user": "cnvrg", "pass": password},
			"backupCmd": []string{"2>&1", "pg_dump", "--dbname=postgresql://cnvrg:" + password + "@postgres.cnvrg:5432/cnvrg_production",
				"--file=/tmp/capsule-data/" + dump, "--format=t", "--verbose"},
			"restoreCmd": []string{"psql --dbname=postgresql://cnvrg:" + password + "@postgres.cnvrg:5432/postgres -c \"ALTER DATABASE cnvrg_production WITH ALLOW_CONNECTIONS false\"",
				"&&", "pg_restore", "--dbname=postgresql://cnvrg:" + password + "@postgres.cnvrg:5432/postgres", "--clean", "--create"},
			"dumpfile": dump,
		},
		"restores": []any{}, "status": status, "description": "", "statefileVersion": "v1alpha1",
	}
}

// stateFile102 is an indexfile.json as 1.0.0 to 1.0.2 wrote it.
func stateFile102(id, dump, status string, date time.Time) map[string]any {
	m := stateFile103(id, dump, status, date)
	for _, k := range []string{"requestType", "restores", "description", "statefileVersion"} {
		delete(m, k)
	}
	return m
}

type fixture struct {
	t    *testing.T
	root bucket.Bucket
	s    *legacy.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root, err := fs.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := legacy.Open(root, "")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, root: root, s: s}
}

func (f *fixture) put(key string, data []byte) {
	f.t.Helper()
	if _, err := bucket.PutBytes(context.Background(), f.root, key, data, bucket.PutOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) putJSON(key string, v any) {
	f.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		f.t.Fatal(err)
	}
	f.put(key, data)
}

// plant writes an old backup: its state file in the given shape and,
// when dump is not nil, its dump.
func (f *fixture) plant(shape, id, status string, date time.Time, dump []byte) {
	f.t.Helper()
	name := "Jq8hRZPWd6BzK3kFfVnH2c-pgdump.tar"
	dir := "cnvrg-smart-backups/" + id + "/"
	if shape == "1.0.3" {
		f.putJSON(dir+legacy.StateFile, stateFile103(id, name, status, date))
	} else {
		f.putJSON(dir+legacy.IndexFile, stateFile102(id, name, status, date))
	}
	if dump != nil {
		f.put(dir+name, dump)
	}
}

// noSecrets fails the test when s holds one of the state files' secrets.
func noSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			t.Errorf("%s holds a secret of the state files: %q", what, s)
		}
	}
}

// TestListBothShapes lists the old service's backups in both state-file
// shapes, newest first, with what capsule needs and nothing secret.
func TestListBothShapes(t *testing.T) {
	f := newFixture(t)
	day := time.Date(2026, 12, 6, 23, 36, 48, 920491903, time.UTC)
	f.put("cnvrg-smart-backups/ping", []byte("8kd93jf"))
	f.plant("1.0.3", "postgresql-3WxuRkPVz3pKPmCH9ZDy5e", legacy.StatusFinished, day, []byte("dump one"))
	f.plant("1.0.2", "postgresql-Ab12Cd34", legacy.StatusFinished, day.Add(-24*time.Hour), []byte("dump two, longer"))
	f.plant("1.0.3", "postgresql-Failed1", legacy.StatusFailed, day.Add(-48*time.Hour), nil)
	f.plant("1.0.3", "postgresql-Running1", "dumpingdb", day.Add(time.Hour), nil)
	f.put("cnvrg-smart-backups/postgresql-Orphan1/x-pgdump.tar", []byte("a dump whose state file was deleted"))
	f.put("capsule/requests/x.json", []byte("{}"))

	l, err := f.s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Damaged) != 0 {
		t.Errorf("damaged: %+v", l.Damaged)
	}
	var ids []string
	for _, b := range l.Backups {
		ids = append(ids, b.BackupID)
	}
	if want := "postgresql-Running1 postgresql-3WxuRkPVz3pKPmCH9ZDy5e postgresql-Ab12Cd34 postgresql-Failed1"; strings.Join(ids, " ") != want {
		t.Fatalf("listed %v, want %s", ids, want)
	}
	b := l.Backups[1]
	if !b.Legacy || b.Source != "cnvrg/pg-storage" || b.Engine != "postgres" || !b.Date.Equal(day) || b.Status != "finished" ||
		b.Bytes != 8 || b.Shape != "1.0.3" || b.RequestType != "periodicbackuprequest" || b.Rotation != 5 ||
		b.Checksum != "none" || b.Verification != "none" || !b.Restorable() ||
		b.Dump != "cnvrg-smart-backups/postgresql-3WxuRkPVz3pKPmCH9ZDy5e/Jq8hRZPWd6BzK3kFfVnH2c-pgdump.tar" ||
		strings.Join(b.StateFiles, ",") != "cnvrg-smart-backups/postgresql-3WxuRkPVz3pKPmCH9ZDy5e/statefile.json" {
		t.Errorf("1.0.3 backup: %+v", b)
	}
	if b := l.Backups[2]; b.Shape != "1.0.2" || b.Bytes != 16 || !b.Restorable() || b.StateFileVersion != "" ||
		strings.Join(b.StateFiles, ",") != "cnvrg-smart-backups/postgresql-Ab12Cd34/indexfile.json" {
		t.Errorf("1.0.2 backup: %+v", b)
	}
	if b := l.Backups[3]; b.Restorable() || b.Problem != "" || b.Status != "failed" {
		t.Errorf("failed backup: %+v", b)
	}
	data, _ := json.Marshal(l)
	noSecrets(t, "the listing", string(data))

	found, err := f.s.Find(context.Background(), "postgresql-Ab12Cd34")
	if err != nil || found.Shape != "1.0.2" {
		t.Errorf("Find = %+v, %v", found, err)
	}
	if _, err := f.s.Find(context.Background(), "postgresql-ab12cd34"); !errors.Is(err, legacy.ErrNotFound) {
		t.Errorf("Find of the id in lower case = %v, want ErrNotFound: ids are as stored", err)
	}
	rc, err := f.s.OpenDump(context.Background(), found)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != "dump two, longer" {
		t.Errorf("OpenDump read %q, %v", got, err)
	}
}

// TestDamagedStateFilesQuoteNothing plants state files that are wrong in
// every way a person or an attacker could make them, each with the
// secrets placed where a decoder's or a validator's message would quote
// them. None is believed, and no reason, problem or error quotes a
// secret.
func TestDamagedStateFilesQuoteNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	day := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	good := func(id string) map[string]any { return stateFile103(id, "d-pgdump.tar", legacy.StatusFinished, day) }
	cases := map[string]func(id string) []byte{
		"syntax error after the password": func(id string) []byte {
			b, _ := json.Marshal(good(id))
			return append(bytes.Replace(b, []byte(`"status"`), []byte(`"`+password+`" x`), 1), ` `+password...)
		},
		"syntax error at a secret": func(id string) []byte {
			return []byte(`{"backupId":"` + id + `","bucket":{"secretKey":` + secretKey + `}}`)
		},
		"wrong type holding the password": func(id string) []byte {
			m := good(id)
			m["rotation"] = password
			b, _ := json.Marshal(m)
			return b
		},
		"number where a string goes": func(id string) []byte { m := good(id); m["date"] = 12345; b, _ := json.Marshal(m); return b },
		"date is the password":       func(id string) []byte { m := good(id); m["date"] = password; b, _ := json.Marshal(m); return b },
		"backupId is the access key": func(id string) []byte { m := good(id); m["backupId"] = accessKey; b, _ := json.Marshal(m); return b },
		"backupId of another folder": func(id string) []byte {
			m := good(id)
			m["backupId"] = "postgresql-Other"
			b, _ := json.Marshal(m)
			return b
		},
		"serviceType is the password": func(id string) []byte { m := good(id); m["serviceType"] = password; b, _ := json.Marshal(m); return b },
		"status is the secret key":    func(id string) []byte { m := good(id); m["status"] = secretKey; b, _ := json.Marshal(m); return b },
		"statefileVersion is a secret": func(id string) []byte {
			m := good(id)
			m["statefileVersion"] = secretKey
			b, _ := json.Marshal(m)
			return b
		},
		"service.name is the password": func(id string) []byte {
			m := good(id)
			m["service"].(map[string]any)["name"] = "cnvrg/" + password + "/../x"
			b, _ := json.Marshal(m)
			return b
		},
		"an array": func(id string) []byte { return []byte(`["` + password + `"]`) },
		"over 1 MiB": func(id string) []byte {
			return append([]byte(`{"pass":"`+password+`","x":"`), bytes.Repeat([]byte("a"), legacy.MaxStateFile)...)
		},
	}
	i := 0
	ids := map[string]string{}
	for name, make := range cases {
		i++
		id := fmt.Sprintf("postgresql-Bad%d", i)
		ids[id] = name
		f.put("cnvrg-smart-backups/"+id+"/statefile.json", make(id))
		f.put("cnvrg-smart-backups/"+id+"/d-pgdump.tar", []byte("dump"))
	}
	// A folder whose name is no old id (and is the password).
	f.putJSON("cnvrg-smart-backups/"+password+"/statefile.json", good(password))

	l, err := f.s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range l.Backups {
		t.Errorf("believed %s (%s): %+v", b.BackupID, ids[b.BackupID], b)
	}
	if len(l.Damaged) != len(cases)+1 {
		t.Errorf("%d damaged, want %d: %+v", len(l.Damaged), len(cases)+1, l.Damaged)
	}
	for _, d := range l.Damaged {
		if d.Reason == "" {
			t.Errorf("%s: no reason", d.Key)
		}
		noSecrets(t, "the reason for "+d.Key, d.Reason)
		t.Logf("%s: %s", d.Key, d.Reason)
	}
	for id, name := range ids {
		_, err := f.s.Find(ctx, id)
		if !errors.Is(err, legacy.ErrDamaged) {
			t.Errorf("Find(%s) (%s) = %v, want ErrDamaged", id, name, err)
		} else {
			noSecrets(t, "Find's error", err.Error())
		}
	}
}

// TestDumpOutsideItsFolder: a dumpfile that would reach out of the
// backup's folder is never opened; one that is missing says so.
func TestDumpOutsideItsFolder(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	day := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	f.put("cnvrg-smart-backups/postgresql-Victim/v-pgdump.tar", []byte("another backup's dump"))
	f.put("capsule/backups/x", []byte("capsule's own object"))
	for id, dump := range map[string]string{
		"postgresql-Up":      "../postgresql-Victim/v-pgdump.tar",
		"postgresql-UpUp":    "../../capsule/backups/x",
		"postgresql-Dots":    "..",
		"postgresql-Abs":     "/etc/passwd",
		"postgresql-Missing": "gone-pgdump.tar",
	} {
		f.putJSON("cnvrg-smart-backups/"+id+"/statefile.json", stateFile103(id, dump, legacy.StatusFinished, day))
	}
	l, err := f.s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Backups) != 5 {
		t.Fatalf("listed %d backups, want 5: %+v %+v", len(l.Backups), l.Backups, l.Damaged)
	}
	for i := range l.Backups {
		b := &l.Backups[i]
		if b.Restorable() || b.Problem == "" || b.Dump != "" {
			t.Errorf("%s: restorable %v, problem %q, dump %q", b.BackupID, b.Restorable(), b.Problem, b.Dump)
		}
		if _, err := f.s.OpenDump(ctx, b); err == nil {
			t.Errorf("%s: OpenDump opened something", b.BackupID)
		}
	}
}

// TestDumpChangedSinceListed: a dump replaced after it was listed is not
// read as the listed one.
func TestDumpChangedSinceListed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.plant("1.0.3", "postgresql-Swap", legacy.StatusFinished, time.Now().Add(-time.Hour), []byte("the dump as listed"))
	b, err := f.s.Find(ctx, "postgresql-Swap")
	if err != nil {
		t.Fatal(err)
	}
	f.put("cnvrg-smart-backups/postgresql-Swap/Jq8hRZPWd6BzK3kFfVnH2c-pgdump.tar", []byte("short"))
	rc, err := f.s.OpenDump(ctx, b)
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	var se *legacy.DumpSizeError
	if !errors.Is(err, bucket.ErrChanged) && !errors.As(err, &se) {
		t.Errorf("reading a dump replaced since the listing: %v, want ErrChanged or a DumpSizeError", err)
	}
}

// TestOpenRefusesBadFolders: the folder setting cannot climb out of the
// bucket or name nothing.
func TestOpenRefusesBadFolders(t *testing.T) {
	root, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"/", "a/../b", "a//b", "./x", "a\nb"} {
		if _, err := legacy.Open(root, dir); err == nil {
			t.Errorf("Open(%q) accepted", dir)
		}
	}
	s, err := legacy.Open(root, "/old/dst/")
	if err != nil || s.Dir() != "old/dst" {
		t.Errorf("Open(/old/dst/) = %v, %v", s, err)
	}
}

// TestSecretsWarning names every state file in a command that removes it.
func TestSecretsWarning(t *testing.T) {
	w := legacy.SecretsWarning([]string{"cnvrg-smart-backups/postgresql-A/statefile.json"}, "aws s3 rm s3://cnvrg-storage/")
	for _, want := range []string{"password", "keys", "capsule legacy import --delete-statefiles", "aws s3 rm s3://cnvrg-storage/cnvrg-smart-backups/postgresql-A/statefile.json", "rotate"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning lacks %q:\n%s", want, w)
		}
	}
}
