package redis

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// checkOf returns the report's check called name.
func checkOf(t *testing.T, rep *engines.VerifyReport, name string) engines.Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, rep.Checks)
	return engines.Check{}
}

// leftovers lists the scratch directories under the private parent and
// the processes whose argv names one.
func leftovers(t *testing.T, tmp string) []string {
	t.Helper()
	var out []string
	dirs, _ := filepath.Glob(filepath.Join(tmp, "capsule-*", "run-*"))
	out = append(out, dirs...)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), tmp) {
			out = append(out, p+" "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// TestVerifyRestoresIntoScratch backs up the seeded server in both modes
// and verifies: the backup is restored into a scratch redis-server that
// the verification starts (the source is left alone), and the keys per
// database, their types, a sample of values and the functions are
// checked against what the backup recorded when it was made. The scratch
// server and its directory are gone afterwards.
func TestVerifyRestoresIntoScratch(t *testing.T) {
	for _, mode := range []string{ModeLogical, ModeRDB} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			srv := startServer(t)
			seed(ctx, t, srv)
			src := srv.source("", srv.password, map[string]any{"mode": mode})
			store, info := enginetest.Backup(ctx, t, New(), src)
			for _, k := range []string{"typesPerDatabase", "sample"} {
				if info.Details[k] == nil {
					t.Fatalf("the backup did not record %s: %v", k, info.Details)
				}
			}
			if s := info.Details["sample"].(map[string]any); s["keys"] != sampleSize {
				t.Errorf("sample recorded %v keys, want %d (39 persistent keys were seeded)", s["keys"], sampleSize)
			}
			before := takeSnapshot(ctx, t, srv)
			rep, err := New().Verify(ctx, store.RestoreJob(t, "v"+mode, src, info, engines.RestoreOptions{}))
			if err != nil || !rep.OK {
				t.Fatalf("Verify: %v, report %+v", err, rep)
			}
			for name, want := range map[string]string{
				"restore into a scratch server": "84 keys restored into a scratch redis-server 7",
				"keys per database":             "db 0: 28, db 3: 28, db 7: 28, as the backup recorded",
				"types per database":            "as the backup recorded",
				"sample of values":              "32 of 32 sampled keys hold the values recorded when the backup was made",
				"functions":                     "1 function libraries loaded",
			} {
				if c := checkOf(t, rep, name); !c.OK || !strings.Contains(c.Detail, want) {
					t.Errorf("check %q: ok %v, %q; want ok, saying %q", name, c.OK, c.Detail, want)
				}
			}
			if diff := enginetest.DeepCompare(before, takeSnapshot(ctx, t, srv)); diff != "" {
				t.Errorf("the verification changed the source: %s", diff)
			}
			if l := leftovers(t, tmp); len(l) > 0 {
				t.Errorf("the scratch server left %v", l)
			}
		})
	}
}

// TestVerifyCatchesWhatChecksumsCannot: the bytes of each backup below
// match the sha256 its index recorded, so the checksum-only path (the
// executor's for engines without a Verifier, which is what Redis had)
// passes them. A scratch restore does not.
func TestVerifyCatchesWhatChecksumsCannot(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	src := srv.source("", srv.password, nil)

	t.Run("payload redis refuses", func(t *testing.T) {
		// A DUMP payload with a good CRC-64 and RDB version whose body is
		// a string that ends early: the checking pass accepts it, the
		// server's RESTORE does not.
		store := enginetest.NewStore()
		w, _ := store.Create(artifactKeys)
		kw, _ := newKeyWriter(w)
		kw.database(0)
		kw.key([]byte("fine"), 0, dumpPayload([]byte{0, 2, 'o', 'k'}, 10))
		kw.key([]byte("broken"), 0, dumpPayload([]byte{0, 40, 'x'}, 10))
		kw.finish()
		w.Close()
		info := engines.BackupInfo{Format: formatLogical, ServerVersion: "7.0.15",
			SourceInfo: map[string]string{"mode": "logical", "databases": "0", "backedUp": "0"},
			Details:    map[string]any{"keysPerDatabase": map[string]int64{"0": 2}}}
		if err := store.Verify(ctx, artifactKeys); err != nil {
			t.Fatalf("the checksum-only path refuses the artifact: %v", err)
		}
		rep, err := New().Verify(ctx, store.RestoreJob(t, "refused", src, info, engines.RestoreOptions{}))
		if err == nil || rep == nil || rep.OK {
			t.Fatalf("Verify of a backup redis cannot restore: err %v, report %+v; want an error and a failed report", err, rep)
		}
		if c := checkOf(t, rep, "restore into a scratch server"); c.OK || !strings.Contains(c.Detail, `restore key "broken"`) {
			t.Errorf("restore check: %+v, want it failed naming the key redis refused", c)
		}
	})

	t.Run("backup differs from its record", func(t *testing.T) {
		// The details of one backup, the artifact of a later one in which
		// every string changed and a key was added: every byte matches the
		// artifact's sha256, the counts, types and values do not match
		// what the backup recorded.
		seed(ctx, t, srv)
		src := srv.source("", srv.password, map[string]any{"databases": []int{0, 3, 7}})
		_, info := enginetest.Backup(ctx, t, New(), src)
		for _, db := range seedDBs {
			c := rawClient(srv, db)
			p := fmt.Sprintf("db%d:", db)
			for _, k := range []string{"string", "int", "big", "\x00bin\xff\xfekey"} {
				c.Set(ctx, p+k, "changed after the backup", 0)
			}
			c.Close()
		}
		c := rawClient(srv, 3)
		c.Set(ctx, "extra", "x", 0)
		c.Close()
		later, _ := enginetest.Backup(ctx, t, New(), src)
		if err := later.Verify(ctx, artifactKeys); err != nil {
			t.Fatalf("the checksum-only path refuses the artifact: %v", err)
		}
		rep, err := New().Verify(ctx, later.RestoreJob(t, "differs", src, info, engines.RestoreOptions{}))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if rep.OK {
			t.Fatalf("Verify passed a backup that is not what it recorded: %+v", rep.Checks)
		}
		for name, want := range map[string]string{
			"keys per database":  "database 3: the backup recorded 28 keys, its artifact holds 29",
			"types per database": "database 3: the backup recorded types",
			"sample of values":   "are not the 32 sampled when the backup was made",
		} {
			if c := checkOf(t, rep, name); c.OK || !strings.Contains(c.Detail, want) {
				t.Errorf("check %q: ok %v, %q; want failed, saying %q", name, c.OK, c.Detail, want)
			}
		}
		if c := checkOf(t, rep, "restore into a scratch server"); !c.OK {
			t.Errorf("the restore itself failed: %+v", c)
		}
	})

	t.Run("no redis-server", func(t *testing.T) {
		store, info := enginetest.Backup(ctx, t, New(), src)
		bad := srv.source("", srv.password, map[string]any{"redisServer": "/nonexistent/redis-server"})
		rep, err := New().Verify(ctx, store.RestoreJob(t, "nobin", bad, info, engines.RestoreOptions{}))
		if err == nil || !strings.Contains(err.Error(), "redisServer setting") || rep == nil || rep.OK {
			t.Fatalf("Verify without redis-server: err %v, report %+v; want a failure naming the redisServer setting", err, rep)
		}
	})
}
