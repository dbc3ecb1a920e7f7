package watcher_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
)

// TestFinishedRunSurvivesAFlakyCommit: the bucket refuses every write of
// the backup's index for longer than a lease (500s, not applied), then
// recovers. The finished run keeps its lease and commits once the bucket
// is back: one attempt, one attempt folder, the engine run once. Before,
// the commit gave up after one lease length and handed the request to a
// next attempt, which ran the whole backup again.
func TestFinishedRunSurvivesAFlakyCommit(t *testing.T) {
	srv := s3test.Shared(t)
	p := faultproxy.Start(t, srv.Endpoint, 1)
	sb, err := s3.New(context.Background(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: p.URL(), Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, sb)
	w := e.watcher("w1", nil) // a 3s lease
	isIndex := func(key string) bool { return strings.HasSuffix(key, "/"+requests.IndexName) }
	p.SetRules(faultproxy.Rule{
		Filter: faultproxy.Filter{Ops: []faultproxy.Op{faultproxy.ConditionalPut}, Keys: isIndex},
		Rate:   1, Kinds: []faultproxy.Kind{faultproxy.InternalError},
	})
	id := e.submit(backupReq("data"))
	ctx := context.Background()
	// At least eight refused index writes (more than one commit's worth
	// of the bucket's retries) and 4s of them: longer than the lease,
	// however fast the retries come.
	var outage time.Time
	r := e.waitResult(id, 90*time.Second, func() {
		_, _ = w.RunOnce(ctx)
		n := p.Stats().Of(faultproxy.InternalError)
		if n > 0 && outage.IsZero() {
			outage = time.Now()
		}
		if n >= 8 && time.Since(outage) > 4*time.Second {
			p.Off()
		}
	})
	w.Wait()
	if d := time.Since(outage); d < 3*time.Second {
		t.Errorf("the outage lasted %s, less than the lease: the test proves nothing", d)
	}
	if r.Status != requests.StatusSucceeded || r.Attempts != 1 {
		t.Fatalf("result %s after %d attempt(s) (%s), want succeeded in 1", r.Status, r.Attempts, r.Error)
	}
	entry, err := index.Find(ctx, e.b, id)
	if err != nil {
		t.Fatal(err)
	}
	if entry.Attempt != 1 {
		t.Errorf("the index was committed by attempt %d, want 1", entry.Attempt)
	}
	var folders []string
	err = bucket.Walk(ctx, e.b, requests.BackupDir(entry.Cluster, entry.Source, id), func(o bucket.ObjectInfo) error {
		if k, err := requests.ParseBackupKey(o.Key); err == nil && strings.Contains(k.Rest, "/") {
			folders = append(folders, k.Rest[:strings.Index(k.Rest, "/")])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range folders {
		if f != "1" {
			t.Errorf("attempt folder %s exists: the backup ran again", f)
		}
	}
}
