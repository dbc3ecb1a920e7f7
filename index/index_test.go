package index_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/schemas"
)

func newBucket(t *testing.T) bucket.Bucket {
	b, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bucket.Prefixed(b, "capsule/")
}

func idx(cluster, source, id string, finished time.Time) *index.BackupIndex {
	return &index.BackupIndex{
		APIVersion: requests.APIVersion, Kind: index.KindIndex, BackupID: id, RequestID: id,
		Cluster: cluster, Source: source, Engine: "files", Format: "tar/v1", CapsuleVersion: "test",
		Status: requests.StatusSucceeded, Attempt: 1, StartedAt: finished.Add(-time.Second), FinishedAt: finished,
		Artifacts: []index.Artifact{{Name: "tree.tar", Key: requests.ArtifactKey(cluster, source, id, 1, "tree.tar"),
			Size: 10, StoredSize: 5, SHA256: fmt.Sprintf("%064x", 1), Compression: "zstd"}},
	}
}

func TestListFilterOrderAndFind(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	all := []*index.BackupIndex{
		idx("cnvrg/app", "cnvrg/pg", "b1", t0),
		idx("cnvrg/app", "cnvrg/pg", "b3", t0.Add(2*time.Hour)),
		idx("cnvrg/app", "cnvrg/redis", "b2", t0.Add(time.Hour)),
		idx("other", "cnvrg/pg", "b4", t0.Add(3*time.Hour)),
	}
	var v schemas.Validator
	for _, x := range all {
		if err := index.Write(ctx, b, x); err != nil {
			t.Fatal(err)
		}
		if err := v.ValidateValue("backupIndex", x); err != nil {
			t.Fatal(err)
		}
	}
	// An uncommitted backup (artifacts, no index) is not listed.
	if _, err := bucket.PutBytes(ctx, b, requests.ArtifactKey("cnvrg/app", "cnvrg/pg", "b9", 1, "tree.tar"), []byte("x"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f    index.Filter
		want []string
	}{
		{index.Filter{}, []string{"b4", "b3", "b2", "b1"}},
		{index.Filter{Cluster: "cnvrg/app"}, []string{"b3", "b2", "b1"}},
		{index.Filter{Cluster: "cnvrg/app", Source: "cnvrg/pg"}, []string{"b3", "b1"}},
		{index.Filter{Cluster: "cnvrg"}, nil}, // a prefix of a cluster name is not a cluster
	} {
		got, err := index.List(ctx, b, c.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range got {
			ids = append(ids, e.BackupID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(c.want) {
			t.Errorf("List(%+v) = %v, want %v", c.f, ids, c.want)
		}
	}
	e, err := index.Find(ctx, b, "b2")
	if err != nil || e.Source != "cnvrg/redis" || e.Cluster != "cnvrg/app" {
		t.Errorf("Find(b2) = %+v, %v", e.BackupIndex, err)
	}
	if _, err := index.Find(ctx, b, "b9"); !errors.Is(err, index.ErrBackupNotFound) {
		t.Errorf("Find(uncommitted) = %v", err)
	}
	// An index is written once.
	if err := index.Write(ctx, b, all[0]); !errors.Is(err, bucket.ErrPreconditionFailed) {
		t.Errorf("second Write = %v, want ErrPreconditionFailed", err)
	}
}

func TestNewestVerificationIsMerged(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	x := idx("c", "s", "b1", time.Now().UTC())
	if err := index.Write(ctx, b, x); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	for i, ok := range []bool{true, false, true} {
		rec := &index.Verification{APIVersion: requests.APIVersion, Kind: index.KindVerification, BackupID: "b1",
			RequestID: fmt.Sprintf("v%d", i), OK: ok, VerifiedAt: t0.Add(time.Duration(i) * time.Hour), Checks: []index.CheckResult{{Name: "n", OK: ok}}}
		if err := index.WriteVerification(ctx, b, x, rec); err != nil {
			t.Fatal(err)
		}
		e, err := index.Find(ctx, b, "b1")
		if err != nil {
			t.Fatal(err)
		}
		if e.Verification == nil || e.Verification.RequestID != rec.RequestID || e.Verification.OK != ok {
			t.Fatalf("after verification %d: shows %+v", i, e.Verification)
		}
	}
}
