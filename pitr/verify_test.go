package pitr_test

import (
	"context"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
)

// verifyBackup runs a Verify request of backup id through x.
func verifyBackup(t *testing.T, x *executor.Executor, id string) *index.Verification {
	t.Helper()
	req := requests.Request{APIVersion: requests.APIVersion, Kind: requests.KindVerify, ID: requests.NewID(), Cluster: cluster, BackupID: id}
	out := x.Run(context.Background(), &req, 1, nil)
	if out.Verification == nil {
		t.Fatalf("verify %s: no verification: %s: %s", id, out.Result.Status, out.Result.Error)
	}
	for _, c := range out.Verification.Checks {
		t.Logf("check %s ok=%v: %s", c.Name, c.OK, c.Detail)
	}
	return out.Verification
}

func check(v *index.Verification, name string) (index.CheckResult, bool) {
	for _, c := range v.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return index.CheckResult{}, false
}

// A base backup is verified by replaying it to consistency in a
// temporary server: a good one passes every check (the databases and
// tables it recorded are there and read to their end); with a WAL object
// it needs gone, the "wal" check fails; with its archive damaged, the
// "artifact base.tar" check does.
func TestVerifyBaseBackup(t *testing.T) {
	f := newPITRFixture(t)
	execPG(t, f.srv, `CREATE TABLE extra (v int)`)
	conn, err := f.srv.Connect(context.Background(), "app")
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), `CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g`)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bi := baseBackup(t, f.b, f.src)
	writeMarkers(t, f.srv, "app", 3, 0)
	f.r.waitFor(t, currentLSN(t, f.srv))
	d, err := postgres.ReadBaseDetails(engines.BackupInfo{Format: bi.Format, Details: bi.Details})
	if err != nil {
		t.Fatal(err)
	}
	var app *postgres.BaseDatabase
	for i := range d.Databases {
		if d.Databases[i].Name == "app" {
			app = &d.Databases[i]
		}
	}
	if app == nil || len(app.Tables) != 2 {
		t.Fatalf("the base backup recorded %+v, want database app with tables marks and big", d.Databases)
	}
	x := newExecutor(t, f.b, f.src, nil)
	ctx := context.Background()

	v := verifyBackup(t, x, bi.BackupID)
	if !v.OK || v.State != index.VerifyRestored {
		t.Fatalf("verification of a good base backup: ok=%v state=%s error=%s", v.OK, v.State, v.Error)
	}
	for _, name := range []string{"artifact base.tar", "wal", "consistency", "databases", "tables app", "rows app", "tables postgres"} {
		if c, ok := check(v, name); !ok || !c.OK {
			t.Errorf("check %q: %+v (present %v)", name, c, ok)
		}
	}
	if c, _ := check(v, "rows app"); !strings.Contains(c.Detail, "(20000 rows)") {
		t.Errorf("rows app: %q, want the 20000 rows of big (marks was empty then)", c.Detail)
	}

	// A WAL object the backup needs is gone.
	segs, err := pitr.ListSegments(ctx, f.b, cluster, "pg")
	if err != nil {
		t.Fatal(err)
	}
	stop := parseLSN(t, d.StopLSN)
	var gone pitr.Segment
	for _, s := range segs {
		if uint64(s.Start) < stop && uint64(s.End) >= stop {
			gone = s
		}
	}
	saved, _, err := bucket.GetBytesLimit(ctx, f.b, gone.Key, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.b.Delete(ctx, gone.Key); err != nil {
		t.Fatal(err)
	}
	v = verifyBackup(t, x, bi.BackupID)
	if c, ok := check(v, "wal"); v.OK || !ok || c.OK || !strings.Contains(c.Detail, "lacks WAL") {
		t.Fatalf("verification without WAL %s: ok=%v, wal check %+v", gone.Key, v.OK, c)
	}
	if _, err := bucket.PutBytes(ctx, f.b, gone.Key, saved, bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}

	// The archive is damaged.
	art := bi.Artifacts[0]
	data, _, err := bucket.GetBytesLimit(ctx, f.b, art.Key, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if _, err := bucket.PutBytes(ctx, f.b, art.Key, data, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	v = verifyBackup(t, x, bi.BackupID)
	if c, ok := check(v, "artifact base.tar"); v.OK || !ok || c.OK || !strings.Contains(c.Detail, "corrupt") {
		t.Fatalf("verification of a damaged archive: ok=%v, artifact check %+v", v.OK, c)
	}
	if _, ok := check(v, "consistency"); ok {
		t.Error("a damaged archive was replayed")
	}
}
