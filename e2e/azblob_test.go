package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/azuritetest"
)

// newAzureCluster is a cluster on a fresh Azurite container, reached with
// an azblob:// URL and the account key in AZURE_STORAGE_KEY.
func newAzureCluster(t *testing.T, dataSize int) *cluster {
	t.Helper()
	srv := azuritetest.Shared(t)
	name := srv.NewContainer(t)
	// Only the key: a connection string or SAS left in the environment
	// would be taken first.
	for _, k := range []string{"AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ACCOUNT"} {
		t.Setenv(k, "")
	}
	env := append(srv.Env(), "AZURE_STORAGE_CONNECTION_STRING=", "AZURE_STORAGE_SAS_TOKEN=", "AZURE_STORAGE_ACCOUNT=")
	return newClusterAt(t, dataSize, srv.URL(name, "capsule-"+randHex(4)+"/"), env)
}

// TestAzblobKilledWorkerIsTakenOver: three worker processes share an
// azblob:// bucket on Azurite; one is SIGKILLed while it holds a lease.
// Every request succeeds exactly once, some in a second attempt, with an
// index and artifacts that match.
func TestAzblobKilledWorkerIsTakenOver(t *testing.T) {
	c := newAzureCluster(t, 8<<20)
	if !strings.HasPrefix(c.url, "azblob://") {
		t.Fatalf("cluster bucket %s", c.url)
	}
	killedWorkerIsTakenOver(t, c, 40)
}

// TestAzblobPostgresBackupAndRestore: a real worker on an azblob://
// bucket backs a PostgreSQL database up and restores it into another
// one, through the CLI; the copy holds the same rows. The role is a
// CREATEDB owner, not a superuser.
func TestAzblobPostgresBackupAndRestore(t *testing.T) {
	pg := needPostgres(t)
	c := newAzureCluster(t, 1<<10)
	src, dst := pg.prefix+"_orig", pg.prefix+"_copy"
	pg.createSource(src, 5000)
	staging := filepath.Join(t.TempDir(), "pgstaging")
	mustDo(t, os.MkdirAll(staging, 0o700))
	cfg, err := os.ReadFile(c.config)
	mustDo(t, err)
	cfg = fmt.Appendf(cfg, "  pg:\n    engine: postgres\n    url: %s\n  pgcopy:\n    engine: postgres\n    url: %s\n    stagingDir: %s\n", pg.url(src), pg.url(dst), staging)
	mustDo(t, os.WriteFile(c.config, cfg, 0o600))
	c.startWorker("w1")

	if out := c.capsule(0, "backup", "pg", "--wait"); !strings.Contains(out, "succeeded") {
		t.Fatalf("backup --wait printed %q", out)
	}
	var entries []index.Entry
	mustDo(t, json.Unmarshal([]byte(c.capsule(0, "ls", "--source", "pg", "-o", "json")), &entries))
	if len(entries) != 1 || len(entries[0].Artifacts) == 0 {
		t.Fatalf("ls: %+v", entries)
	}
	id := entries[0].BackupID
	for _, a := range entries[0].Artifacts {
		if _, err := c.b.Head(t.Context(), a.Key); err != nil {
			t.Fatalf("artifact %s in the container: %v", a.Key, err)
		}
	}
	c.capsule(0, "restore", id, "--to", "pgcopy", "--wait")
	if a, b := pg.digest(src), pg.digest(dst); a != b || !strings.Contains(a, "accounts") {
		t.Fatalf("restored database differs from the original:\n%s\nvs\n%s", b, a)
	}
}
