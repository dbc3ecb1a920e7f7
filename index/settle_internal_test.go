package index

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/internal/reqcount"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
)

// Two commits that listed the catalog at once, each finding more than
// CompactAfter events fresh, compact once between them: the second finds
// the first's marker and reads nothing.
func TestSimultaneousSettlesCompactOnce(t *testing.T) {
	srv := s3test.Shared(t)
	sb, err := s3.New(t.Context(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	raw := bucket.Prefixed(sb, "capsule/")
	ctx := context.Background()
	if _, err := (Catalog{Bucket: raw, Writer: raw}).List(ctx, Filter{}); err != nil { // migrated: the bucket is empty
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).UTC()
	for i := range CompactAfter + 4 {
		id := fmt.Sprintf("b%03d", i)
		x := &BackupIndex{
			APIVersion: requests.APIVersion, Kind: KindIndex, BackupID: id, RequestID: id, Cluster: "c1", Source: "s",
			Engine: "files", Format: "tar/v1", CapsuleVersion: "test", Status: requests.StatusSucceeded, Attempt: 1,
			StartedAt: t0, FinishedAt: t0.Add(time.Duration(i) * time.Second), Artifacts: []Artifact{},
		}
		data, _ := json.Marshal(x)
		// The index and its event, with no settle.
		if _, err := bucket.PutBytes(ctx, raw, x.Key(), data, bucket.PutOptions{IfNoneMatch: true}); err != nil {
			t.Fatal(err)
		}
		if err := putOnce(ctx, raw, requests.CatalogEventDir("c1", id)+eventIndex, data, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := scanCatalog(ctx, raw, requests.CatalogClusterDir("c1"))
	if err != nil {
		t.Fatal(err)
	}
	var compactions int
	for range 2 {
		b := &reqcount.Bucket{B: raw}
		fresh, compacted := settleListed(ctx, b, "c1", nil, objs["c1"])
		if fresh <= CompactAfter {
			t.Fatalf("%d fresh events listed, want more than %d", fresh, CompactAfter)
		}
		if compacted {
			compactions++
		} else if n := b.Counts(); n.Get != 0 {
			t.Errorf("the commit that did not compact made %+v", n)
		}
	}
	if compactions != 1 {
		t.Errorf("%d compactions of one listing, want 1", compactions)
	}
}
