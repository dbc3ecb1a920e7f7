package index_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
)

// TestDamagedIndexesAreReported: ListAll names every forged index with
// its key, the cluster, source and id its key says, and the reason; Find
// wraps ErrDamaged; a Reporter logs and counts each key once however often
// it is listed.
func TestDamagedIndexesAreReported(t *testing.T) {
	b := newBucket(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-48 * time.Hour)
	commit(t, b, idx("tenant-a", "pg", "a1", t0))
	commit(t, b, idx("tenant-b", "pg", "b1", t0))
	forged := forgeries(t0)
	for _, f := range forged {
		plant(t, b, f.key, f.content)
	}
	l, err := index.ListAll(ctx, b, index.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries) != 2 {
		t.Errorf("entries %d, want 2 (a1, b1)", len(l.Entries))
	}
	byKey := map[string]index.Damaged{}
	for _, d := range l.Damaged {
		byKey[d.Key] = d
	}
	if len(l.Damaged) != len(forged) {
		t.Errorf("damaged %d, want %d: %+v", len(l.Damaged), len(forged), l.Damaged)
	}
	for _, f := range forged {
		d, ok := byKey[f.key]
		k, _ := requests.ParseBackupKey(f.key)
		switch {
		case !ok:
			t.Errorf("%s: %s not reported", f.name, f.key)
		case !strings.Contains(d.Reason, f.reason):
			t.Errorf("%s: reason %q, want it to say %q", f.name, d.Reason, f.reason)
		case d.Cluster != k.Cluster || d.Source != k.Source || d.BackupID != k.BackupID:
			t.Errorf("%s: reported as %s/%s/%s, want the key's %s/%s/%s", f.name, d.Cluster, d.Source, d.BackupID, k.Cluster, k.Source, k.BackupID)
		}
	}
	if _, err := index.Find(ctx, b, "f-victim"); !errors.Is(err, index.ErrDamaged) {
		t.Errorf("Find(f-victim) = %v, want ErrDamaged", err)
	}
	if _, err := index.Read(ctx, b, requests.IndexKey("tenant-a", "pg", "f-future")); !errors.Is(err, index.ErrDamaged) {
		t.Errorf("Read(f-future) = %v, want ErrDamaged", err)
	}

	log, hook := logtest.NewNullLogger()
	var counted []string
	r := index.NewReporter(log, func(d index.Damaged) { counted = append(counted, d.Key) })
	for range 3 {
		l, err := index.ListAll(ctx, b, index.Filter{Cluster: "tenant-a"})
		if err != nil {
			t.Fatal(err)
		}
		r.Report(l.Damaged)
	}
	l, err = index.ListAll(ctx, b, index.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	r.Report(l.Damaged)
	if len(counted) != len(forged) || len(hook.AllEntries()) != len(forged) {
		t.Errorf("reported %d times and logged %d lines for %d damaged indexes, want once each: %v", len(counted), len(hook.AllEntries()), len(forged), counted)
	}
	for _, e := range hook.AllEntries() {
		if e.Level != logrus.WarnLevel || e.Data["key"] == nil || e.Data["reason"] == nil {
			t.Errorf("log line %v %q %v: want a warning with key and reason", e.Level, e.Message, e.Data)
		}
	}
	var nilReporter *index.Reporter
	nilReporter.Report(l.Damaged) // reports nothing, does not panic
}
