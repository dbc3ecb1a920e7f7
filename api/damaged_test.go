package api_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/cnvrg/capsule/api"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
)

// damagedBody is the part of a listing that names damaged indexes.
type damagedBody struct {
	Damaged []struct{ Key, Cluster, Source, BackupID, Reason string }
}

func (d damagedBody) keys(t *testing.T) []string {
	t.Helper()
	var keys []string
	for _, x := range d.Damaged {
		if x.Reason == "" {
			t.Errorf("damaged %s without a reason", x.Key)
		}
		keys = append(keys, x.Key)
	}
	return keys
}

// TestDamagedIndexesAreListed plants, beside real backups, an index whose
// content names another cluster, one dated 2099 and one that is not JSON.
// Every listing still answers 200 with the real backups only, and names
// the damaged ones with their key and reason; asking for one by id says
// why it is not a backup; each is logged once however often it is listed.
func TestDamagedIndexesAreListed(t *testing.T) {
	t.Run("fs", func(t *testing.T) { testDamagedIndexesAreListed(t, fsBucket(t)) })
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Shared(t)
		raw, err := s3.New(t.Context(), s3.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
		if err != nil {
			t.Fatal(err)
		}
		testDamagedIndexesAreListed(t, bucket.Prefixed(raw, "capsule/"))
	})
}

func testDamagedIndexesAreListed(t *testing.T, b bucket.Bucket) {
	log, hook := logtest.NewNullLogger()
	h := newHarness(t, b, func(c *api.Config) { c.Log = log })
	real := writeBackup(t, b, "default", "pg", "b1", base, 100)
	writeBackup(t, b, "default", "pg", "b2", base.Add(time.Minute), 100)
	plant := func(key string, data []byte) {
		if _, err := bucket.PutBytes(t.Context(), b, key, data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	forge := func(mod func(x *index.BackupIndex)) []byte {
		x := *real
		mod(&x)
		data, err := json.Marshal(&x)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	tenantKey := requests.IndexKey("default", "pg", "forged-tenant")
	futureKey := requests.IndexKey("default", "pg", "forged-future")
	junkKey := requests.IndexKey("junkland", "redis", "junk")
	plant(tenantKey, forge(func(x *index.BackupIndex) { x.Cluster, x.BackupID = "other", "o1" }))
	plant(futureKey, forge(func(x *index.BackupIndex) {
		x.BackupID = "forged-future"
		x.FinishedAt = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
		x.Artifacts = []index.Artifact{x.Artifacts[0]}
		x.Artifacts[0].Key = requests.ArtifactKey("default", "pg", "forged-future", 1, "tree.tar")
	}))
	plant(junkKey, []byte("{not json"))
	// Each is listed many times below (no cache) and logged once.
	all := []string{futureKey, tenantKey, junkKey}
	slices.Sort(all)

	r := h.get("/v1/clusters/default/backups")
	wantStatus(t, "backups with damaged indexes", r, 200, "")
	var page api.BackupPage
	var dam damagedBody
	r.decode(t, &page)
	r.decode(t, &dam)
	if got := ids(page.Backups); !slices.Equal(got, []string{"b2", "b1"}) {
		t.Errorf("backups %v, want b2 b1", got)
	}
	if got := dam.keys(t); !slices.Equal(got, []string{futureKey, tenantKey}) {
		t.Errorf("damaged %q, want %q", got, []string{futureKey, tenantKey})
	}
	for _, d := range dam.Damaged {
		if d.Key == futureKey && (!strings.Contains(d.Reason, "finished in the future") || d.BackupID != "forged-future" || d.Source != "pg") {
			t.Errorf("future index reported as %+v", d)
		}
		if d.Key == tenantKey && (!strings.Contains(d.Reason, `cluster "other"`) || d.Cluster != "default" || d.BackupID != "forged-tenant") {
			t.Errorf("forged tenant index reported as %+v (want the key's cluster and id, and the reason)", d)
		}
	}

	// Filtered by source; the next page does not repeat them.
	r = h.get("/v1/clusters/default/backups?source=pg&limit=1")
	wantStatus(t, "first page", r, 200, "")
	dam = damagedBody{}
	r.decode(t, &dam)
	r.decode(t, &page)
	if got := dam.keys(t); !slices.Equal(got, []string{futureKey, tenantKey}) {
		t.Errorf("damaged of source pg %q", got)
	}
	if page.NextCursor == "" {
		t.Errorf("no next page: %s", r.body)
	} else {
		r = h.get("/v1/clusters/default/backups?source=pg&limit=1&cursor=" + page.NextCursor)
		dam = damagedBody{}
		r.decode(t, &dam)
		if len(dam.Damaged) != 0 {
			t.Errorf("second page repeats the damaged indexes: %s", r.body)
		}
	}

	// An index that is not JSON leaves its cluster's listing answering.
	r = h.get("/v1/clusters/junkland/backups")
	wantStatus(t, "a cluster with an unparsable index", r, 200, "")
	dam = damagedBody{}
	r.decode(t, &dam)
	if got := dam.keys(t); !slices.Equal(got, []string{junkKey}) || !strings.Contains(dam.Damaged[0].Reason, "not a backup index") {
		t.Errorf("junkland: %s", r.body)
	}

	// The forged index invents no cluster, and the overview still answers.
	r = h.get("/v1/clusters")
	wantStatus(t, "clusters", r, 200, "")
	var list api.ClusterList
	r.decode(t, &list)
	dam = damagedBody{}
	r.decode(t, &dam)
	if len(list.Clusters) != 1 || list.Clusters[0].Name != "default" || list.Clusters[0].Backups != 2 {
		t.Errorf("clusters: %s", r.body)
	}
	if n := h.get("/v1/clusters/other/backups"); n.status != 200 || !strings.Contains(string(n.body), `"backups":[]`) {
		t.Errorf("cluster other: %s", n.body)
	}
	if got := dam.keys(t); !slices.Equal(got, all) {
		t.Errorf("damaged in the overview %q, want %q", got, all)
	}

	// Asked for by id, it is not a backup, and the answer says why.
	r = h.get("/v1/clusters/default/backups/forged-future")
	wantStatus(t, "a damaged backup by id", r, 404, api.CodeNotFound)
	if e := r.apiError(t); !strings.Contains(e.Message, futureKey) || !strings.Contains(e.Message, "finished in the future") {
		t.Errorf("message %q, want the key and the reason", e.Message)
	}
	wantStatus(t, "the real backup by id", h.get("/v1/clusters/default/backups/b1"), 200, "")

	logged := map[string]int{}
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "damaged") {
			k, _ := e.Data["key"].(string)
			logged[k]++
		}
	}
	for _, k := range all {
		if logged[k] != 1 {
			t.Errorf("%s logged %d times, want once: %v", k, logged[k], logged)
		}
	}
}
