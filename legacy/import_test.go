package legacy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/schemas"
	"github.com/klauspost/compress/zstd"
)

type noSources struct{}

func (noSources) Lookup(name string) (engines.Source, error) {
	return engines.Source{}, fmt.Errorf("%w %q", executor.ErrUnknownSource, name)
}

func (f *fixture) executor(t *testing.T, worker string) *executor.Executor {
	t.Helper()
	x, err := executor.New(executor.Config{
		Bucket: bucket.Prefixed(f.root, "capsule/"), Engines: engines.NewRegistry(postgres.New()), Sources: noSources{},
		Worker: worker, Version: "test", Legacy: f.s, Log: enginetest.TestLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// objects lists every key in the bucket under prefix.
func (f *fixture) objects(prefix string) []string {
	f.t.Helper()
	var keys []string
	if err := bucket.Walk(context.Background(), f.root, prefix, func(o bucket.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		f.t.Fatal(err)
	}
	return keys
}

// TestImportConcurrentReplicas runs three imports at once, as three
// replicas would, over old backups in both state-file shapes: each
// finished backup becomes exactly one capsule backup (its dump
// compressed, with a sha256, under a derived id, labelled with the old
// id), the replicas that lost remove what they wrote, a second run
// changes nothing, and --delete-statefiles removes the state files of
// the imported and failed backups only, keeping the dumps. No result or
// object capsule wrote holds a secret of the state files.
func TestImportConcurrentReplicas(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	day := time.Date(2026, 12, 6, 23, 36, 48, 920491903, time.UTC)
	dumpA := bytes.Repeat([]byte("the dump of backup A\n"), 50000)
	dumpB := bytes.Repeat([]byte("the dump of backup B\n"), 30000)
	f.plant("1.0.3", "postgresql-3WxuRkPVz3pKPmCH9ZDy5e", legacy.StatusFinished, day, dumpA)
	f.plant("1.0.2", "postgresql-Ab12Cd34", legacy.StatusFinished, day.Add(-24*time.Hour), dumpB)
	f.plant("1.0.3", "postgresql-Failed1", legacy.StatusFailed, day.Add(-48*time.Hour), nil)
	f.plant("1.0.3", "postgresql-Running1", "uploadingdb", day.Add(time.Hour), nil)
	capsule := bucket.Prefixed(f.root, "capsule/")

	reports := make([]*legacy.ImportReport, 3)
	var wg sync.WaitGroup
	for i := range reports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := legacy.Import(ctx, f.s, legacy.ImportConfig{Bucket: capsule, Cluster: "prod", Storer: f.executor(t, fmt.Sprintf("replica-%d", i)), Log: enginetest.TestLog(t)})
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
			reports[i] = rep
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	imported := map[string]int{}
	for i, rep := range reports {
		if rep.Failed() > 0 {
			t.Errorf("replica %d: %+v", i, rep.Results)
		}
		for _, r := range rep.Results {
			t.Logf("replica %d: %s %s %s", i, r.LegacyID, r.Outcome, r.Detail)
			if r.Outcome == legacy.OutcomeImported {
				imported[r.LegacyID]++
			}
		}
		data, _ := json.Marshal(rep)
		noSecrets(t, "an import report", string(data))
	}
	if imported["postgresql-3WxuRkPVz3pKPmCH9ZDy5e"] != 1 || imported["postgresql-Ab12Cd34"] != 1 || len(imported) != 2 {
		t.Errorf("imports by backup: %v, want each finished one imported by exactly one replica", imported)
	}

	all, err := index.ListAll(ctx, capsule, index.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Entries) != 2 || len(all.Damaged) != 0 {
		t.Fatalf("capsule's backups: %d, damaged %+v; want 2", len(all.Entries), all.Damaged)
	}
	var v schemas.Validator
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	for _, e := range all.Entries {
		old := e.Labels[legacy.LabelID]
		want := map[string][]byte{"postgresql-3WxuRkPVz3pKPmCH9ZDy5e": dumpA, "postgresql-Ab12Cd34": dumpB}[old]
		if e.BackupID != legacy.ImportedID(old) || e.Cluster != "prod" || e.Source != "cnvrg/pg-storage" || e.Format != postgres.FormatTar ||
			len(e.Artifacts) != 1 || e.Artifacts[0].Compression != "zstd" || e.Artifacts[0].Size != int64(len(want)) {
			t.Errorf("import of %s: %+v", old, e.BackupIndex)
			continue
		}
		if !strings.HasPrefix(e.BackupID, "legacy-postgresql-") || requests.ValidateID(e.BackupID) != nil {
			t.Errorf("imported id %q", e.BackupID)
		}
		raw, err := json.Marshal(e.BackupIndex)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate("backupIndex", raw); err != nil {
			t.Errorf("the import's index does not match its schema: %v", err)
		}
		noSecrets(t, "an imported index", string(raw))
		stored, _, err := bucket.GetBytes(ctx, capsule, e.Artifacts[0].Key)
		if err != nil {
			t.Fatal(err)
		}
		if plain, err := dec.DecodeAll(stored, nil); err != nil || !bytes.Equal(plain, want) {
			t.Errorf("the stored artifact of %s does not decompress to the dump (%v)", old, err)
		}
		// The loser replicas removed their attempts: one folder is left.
		folder := strings.TrimSuffix(e.ListedKey, requests.IndexName)
		if keys := f.objects("capsule/" + folder); len(keys) != 2 {
			t.Errorf("%s holds %v, want its index and one artifact", folder, keys)
		}
	}

	// Again, with the state files deleted: nothing is imported twice.
	rep, err := legacy.Import(ctx, f.s, legacy.ImportConfig{Bucket: capsule, Cluster: "prod", Storer: f.executor(t, "again"), DeleteStateFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]string{}
	for _, r := range rep.Results {
		outcomes[r.LegacyID] = r.Outcome
	}
	want := map[string]string{
		"postgresql-3WxuRkPVz3pKPmCH9ZDy5e": legacy.OutcomeAlready, "postgresql-Ab12Cd34": legacy.OutcomeAlready,
		"postgresql-Failed1": legacy.OutcomeSkipped, "postgresql-Running1": legacy.OutcomeSkipped,
	}
	if diff := enginetest.DeepCompare(want, outcomes); diff != "" {
		t.Errorf("second run: %s", diff)
	}
	if got := strings.Join(rep.StateFilesLeft, ","); got != "cnvrg-smart-backups/postgresql-Running1/statefile.json" {
		t.Errorf("state files left %q: want the running backup's only", got)
	}
	left := strings.Join(f.objects("cnvrg-smart-backups/"), "\n")
	for _, gone := range []string{"postgresql-3WxuRkPVz3pKPmCH9ZDy5e/statefile.json", "postgresql-Ab12Cd34/indexfile.json", "postgresql-Failed1/statefile.json"} {
		if strings.Contains(left, gone) {
			t.Errorf("%s was not deleted", gone)
		}
	}
	for _, kept := range []string{"postgresql-3WxuRkPVz3pKPmCH9ZDy5e/Jq8hRZPWd6BzK3kFfVnH2c-pgdump.tar", "postgresql-Running1/statefile.json"} {
		if !strings.Contains(left, kept) {
			t.Errorf("%s was deleted", kept)
		}
	}
	if all, _ := index.ListAll(ctx, capsule, index.Filter{}); len(all.Entries) != 2 {
		t.Errorf("%d backups after the second run, want 2", len(all.Entries))
	}
	// Everything capsule wrote is free of the state files' secrets.
	for _, k := range f.objects("capsule/") {
		data, _, err := bucket.GetBytes(ctx, f.root, k)
		if err != nil {
			t.Fatal(err)
		}
		noSecrets(t, k, string(data))
		if plain, err := dec.DecodeAll(data, nil); err == nil {
			noSecrets(t, k+" decompressed", string(plain))
		}
	}
}
