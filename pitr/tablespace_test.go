package pitr_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
)

// A cluster whose marker table lives in a tablespace of its own is
// restored to a time, into the live server and into a data directory a
// new server starts on, with exactly the markers up to that time; a
// verification of its base backup unpacks and checks the tablespace.
func TestRestoreWithTablespace(t *testing.T) {
	srv := startServer(t)
	loc, err := os.MkdirTemp("", "capsule-pitr-ts-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(loc) })
	if err := os.Chmod(loc, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := srv.Own(loc); err != nil {
		t.Fatal(err)
	}
	execPG(t, srv, `CREATE TABLESPACE side LOCATION '`+loc+`'`)
	execPG(t, srv, `CREATE DATABASE app`)
	b := newBucket(t)
	src := source(srv, "pg")
	src.Config["url"], src.Config["allowSuperuser"] = srv.URL("app"), true
	r := runStream(t, b, src, "w1", 6*time.Second)
	conn, err := srv.Connect(context.Background(), "app")
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), `CREATE TABLE marks (id serial PRIMARY KEY, at timestamptz NOT NULL) TABLESPACE side`)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	before := writeMarkers(t, srv, "app", 5, 50*time.Millisecond)
	bi := baseBackup(t, b, src)
	d, err := postgres.ReadBaseDetails(engines.BackupInfo{Format: bi.Format, Details: bi.Details})
	if err != nil {
		t.Fatal(err)
	}
	var tsArchive string
	for _, a := range d.Archives {
		if a != postgres.BaseArtifact {
			tsArchive = a
		}
	}
	if len(d.Archives) != 2 || tsArchive == "" {
		t.Fatalf("base backup archives %v, want base.tar and the tablespace's", d.Archives)
	}
	marks := append(before, writeMarkers(t, srv, "app", 20, 100*time.Millisecond)...)
	k := len(before) + 11
	target := marks[k].at.Add(marks[k+1].at.Sub(marks[k].at) / 2)
	r.waitFor(t, currentLSN(t, srv))

	v := verifyBackup(t, newExecutor(t, b, src, nil), bi.BackupID)
	if !v.OK || v.State != index.VerifyRestored {
		t.Errorf("verification: ok=%v state=%s error=%s", v.OK, v.State, v.Error)
	}
	if c, ok := check(v, "artifact "+tsArchive); !ok || !c.OK {
		t.Errorf("check of the tablespace's archive: %+v (present %v)", c, ok)
	}

	// Into a data directory: the tablespace inside it, linked.
	dir := outDir(t)
	data := filepath.Join(dir, "data")
	res, err := pitr.Restore(context.Background(), pitr.RestoreConfig{
		Bucket: b, Cluster: cluster, Source: "pg", Target: pitr.Target{Time: target},
		DataDir: data, Scratch: dir, Log: enginetest.TestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	oid := strings.TrimSuffix(tsArchive, ".tar")
	want := filepath.Join(data, pitr.TablespaceDir, oid)
	if res.Tablespaces[oid] != want {
		t.Errorf("result names tablespaces %v, want %s at %s", res.Tablespaces, oid, want)
	}
	if l, err := os.Readlink(filepath.Join(data, "pg_tblspc", oid)); err != nil || l != want {
		t.Errorf("pg_tblspc/%s links to %q (%v), want %s", oid, l, err, want)
	}
	nsrv := startOn(t, data, dir)
	ids := markerIDs(t, nsrv, "app")
	nsrv.Kill()
	if len(ids) != k+1 || ids[len(ids)-1] != marks[k].id {
		t.Errorf("new server's markers %v, want the %d up to id %d", ids, k+1, marks[k].id)
	}

	// Into the live server by the side-database swap.
	if _, err := pitr.Restore(context.Background(), pitr.RestoreConfig{
		Bucket: b, Cluster: cluster, Source: "pg", Target: pitr.Target{Time: target},
		Into: &src, ID: requests.NewID(), Log: enginetest.TestLog(t),
	}); err != nil {
		t.Fatal(err)
	}
	if ids := markerIDs(t, srv, "app"); len(ids) != k+1 || ids[len(ids)-1] != marks[k].id {
		t.Fatalf("restored markers %v, want the %d up to id %d", ids, k+1, marks[k].id)
	}
}
