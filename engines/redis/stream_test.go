package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// artifactRecords reads a logical artifact's function payload and keys.
type artifactKey struct {
	db       int
	key      string
	expireAt int64
	payload  []byte
}

func artifactRecords(t *testing.T, data []byte) (functions []byte, dbs []int, keys []artifactKey) {
	t.Helper()
	kr, err := newKeyReader(bytes.NewReader(data), false)
	if err != nil {
		t.Fatal(err)
	}
	db := -1
	for {
		rec, err := kr.next()
		if errors.Is(err, io.EOF) {
			return functions, dbs, keys
		}
		if err != nil {
			t.Fatalf("artifact: %v", err)
		}
		switch rec.kind {
		case tagFunctions:
			functions = bytes.Clone(rec.payload)
		case tagDatabase:
			db = rec.db
			dbs = append(dbs, db)
		case tagKey:
			keys = append(keys, artifactKey{db: db, key: string(rec.key), expireAt: rec.expireAt, payload: bytes.Clone(rec.payload)})
		}
	}
}

// TestStreamPayloadsRestore backs up every type (intsets, listpacks,
// hashtables, quicklists, streams with groups, LZF-compressed values,
// keys with TTLs, several databases) in logical mode, which reads the
// replication stream, checks that each record's payload is byte for byte
// what DUMP of that key returns and its expiry PEXPIRETIME's, then
// RESTOREs every payload into a second real server by hand and compares
// every key, type, value and expiry with the source.
func TestStreamPayloadsRestore(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	dst := startServer(t)
	seed(ctx, t, src)
	// More LZF: a large compressible list element and hash value.
	c0 := rawClient(src, 0)
	c0.RPush(ctx, "db0:lzflist", strings.Repeat("lzf-", 5000), "x")
	c0.HSet(ctx, "db0:lzfhash", "f", strings.Repeat("0123456789", 3000))
	c0.Set(ctx, "db0:ttl-big", strings.Repeat("q", 100000), time.Hour)
	c0.Close()
	want := takeSnapshot(ctx, t, src)

	store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, nil))
	if info.Details["read"] != "replication" {
		t.Fatalf("details.read = %v, want replication (details %v)", info.Details["read"], info.Details)
	}
	if info.Format != formatLogical || info.SourceInfo["mode"] != ModeLogical {
		t.Fatalf("format %s, mode %s", info.Format, info.SourceInfo["mode"])
	}
	functions, dbs, keys := artifactRecords(t, store.Bytes(artifactKeys))
	if len(dbs) != 16 {
		t.Errorf("database records %v, want all 16", dbs)
	}
	var n int
	for _, m := range want.Keys {
		n += len(m)
	}
	if len(keys) != n || info.Details["keys"] != int64(n) {
		t.Fatalf("artifact holds %d keys (details %v), the server %d", len(keys), info.Details["keys"], n)
	}
	ttls := 0
	for _, k := range keys {
		c := rawClient(src, k.db)
		dump, err := c.Dump(ctx, k.key).Result()
		if err != nil {
			t.Fatalf("dump %q: %v", k.key, err)
		}
		if !bytes.Equal([]byte(dump), k.payload) {
			t.Errorf("db %d key %q: payload differs from DUMP's\n got %x\nwant %x", k.db, k.key, clipBytes(k.payload), clipBytes([]byte(dump)))
		}
		exp, err := c.Do(ctx, "PEXPIRETIME", k.key).Int64()
		if err != nil {
			t.Fatal(err)
		}
		if exp < 0 {
			exp = 0
		}
		if exp != k.expireAt {
			t.Errorf("db %d key %q: expiry %d, PEXPIRETIME %d", k.db, k.key, k.expireAt, exp)
		}
		if exp > 0 {
			ttls++
		}
		c.Close()
		// RESTORE by hand, as the replay would for any type.
		d := rawClient(dst, k.db)
		if err := d.Do(ctx, "RESTORE", k.key, k.expireAt, k.payload, "ABSTTL").Err(); err != nil {
			t.Fatalf("restore %q: %v", k.key, err)
		}
		d.Close()
	}
	if ttls < 2*len(seedDBs) {
		t.Errorf("only %d keys with an expiry", ttls)
	}
	adm := src.admin()
	fdump, err := adm.FunctionDump(ctx).Result()
	adm.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(functions, []byte(fdump)) {
		t.Errorf("functions payload %x, FUNCTION DUMP %x", clipBytes(functions), clipBytes([]byte(fdump)))
	}
	d := dst.admin()
	if err := d.FunctionRestore(ctx, string(functions)).Err(); err != nil {
		t.Fatalf("function restore: %v", err)
	}
	d.Close()
	if diff := enginetest.DeepCompare(want, takeSnapshot(ctx, t, dst)); diff != "" {
		t.Fatalf("restored data differs: %s", diff)
	}
}

func clipBytes(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// backupWithLog runs a backup with a logger the test reads.
func backupWithLog(ctx context.Context, src engines.Source) (*enginetest.Store, *engines.BackupInfo, *logtest.Hook, error) {
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	store := enginetest.NewStore()
	info, err := New().Backup(ctx, &engines.BackupJob{ID: "bk", Source: src, Artifacts: store, Log: log})
	return store, info, hook, err
}

// TestStreamFallbackWithoutSync backs up as a user whose ACL denies SYNC:
// the backup reads with SCAN and DUMP, says why once, and restores; with
// logicalRead: sync it fails instead, and logicalRead: scan never asks.
func TestStreamFallbackWithoutSync(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	dst := startServer(t)
	pw := src.addUser(t, "nosync", "~*", "&*", "+@all", "-sync", "-psync")
	seed(ctx, t, src)
	want := takeSnapshot(ctx, t, src)
	source := src.source("nosync", pw, nil)
	store, info, hook, err := backupWithLog(ctx, source)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if info.Details["read"] != "scan" || !strings.Contains(fmt.Sprint(info.Details["readFallback"]), "NOPERM") {
		t.Errorf("details read=%v readFallback=%v, want scan after a NOPERM", info.Details["read"], info.Details["readFallback"])
	}
	warned := 0
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "falls back") {
			warned++
			if !strings.Contains(fmt.Sprint(e.Data["reason"]), "NOPERM") {
				t.Errorf("fallback logged without its reason: %v", e.Data)
			}
		}
	}
	if warned != 1 {
		t.Errorf("the fallback was logged %d times, want once", warned)
	}
	if _, err := New().Restore(ctx, store.RestoreJob(t, "fb", dst.source("", dst.password, nil), *info, engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}})); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if diff := enginetest.DeepCompare(want, takeSnapshot(ctx, t, dst)); diff != "" {
		t.Fatalf("restored data differs: %s", diff)
	}

	_, _, _, err = backupWithLog(ctx, src.source("nosync", pw, map[string]any{"logicalRead": "sync"}))
	if err == nil || !strings.Contains(err.Error(), "NOPERM") || !strings.Contains(err.Error(), "logicalRead") {
		t.Errorf("logicalRead sync without +sync: err = %v, want a refusal naming NOPERM and the setting", err)
	}

	_, info, hook, err = backupWithLog(ctx, src.source("", src.password, map[string]any{"logicalRead": "scan"}))
	if err != nil {
		t.Fatal(err)
	}
	if info.Details["read"] != "scan" || info.Details["readFallback"] != nil || len(hook.AllEntries()) == 0 {
		t.Errorf("logicalRead scan: details read=%v readFallback=%v", info.Details["read"], info.Details["readFallback"])
	}
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			t.Errorf("logicalRead scan logged %q at %s", e.Message, e.Level)
		}
	}
}

// TestStreamSkipsExpired: a key whose expiry passed but that the server
// has not evicted yet is in the snapshot; the backup leaves it out, as
// the SCAN path does (PEXPIRETIME evicts it), and counts it.
func TestStreamSkipsExpired(t *testing.T) {
	ctx := context.Background()
	src := startServer(t, "enable-debug-command yes")
	c := rawClient(src, 0)
	defer c.Close()
	if err := c.Do(ctx, "DEBUG", "SET-ACTIVE-EXPIRE", "0").Err(); err != nil {
		t.Fatal(err)
	}
	c.Set(ctx, "gone", "v", 50*time.Millisecond)
	c.Set(ctx, "kept", "v", time.Hour)
	time.Sleep(200 * time.Millisecond)
	store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, map[string]any{"databases": []int{0}}))
	_, _, keys := artifactRecords(t, store.Bytes(artifactKeys))
	if len(keys) != 1 || keys[0].key != "kept" {
		t.Fatalf("keys %v, want only kept", keys)
	}
	if info.Details["expiredDuringBackup"] != int64(1) || info.Details["read"] != "replication" {
		t.Errorf("details %v: want expiredDuringBackup 1 read replication", info.Details)
	}
}

// cutProxy forwards connections to a redis server; on the connection that
// sends SYNC, it damages the server's reply after skip bytes: it closes
// the connection there (cut) or flips that byte.
type cutProxy struct {
	l      net.Listener
	target string
	skip   int64
	flip   bool
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string, skip int64, flip bool) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, skip: skip, flip: flip}
	go p.serve()
	t.Cleanup(func() { l.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		var synced atomic.Bool
		p.wg.Add(2)
		go func() { // client → server
			defer p.wg.Done()
			defer s.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if bytes.Contains(buf[:n], []byte("SYNC\r\n")) {
						synced.Store(true)
					}
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() { // server → client
			defer p.wg.Done()
			defer c.Close()
			buf := make([]byte, 64<<10)
			var after int64 // bytes sent since SYNC
			for {
				n, err := s.Read(buf)
				b := buf[:n]
				if n > 0 && synced.Load() {
					if !p.flip && after+int64(n) > p.skip {
						c.Write(b[:p.skip-after])
						return
					}
					if p.flip && after <= p.skip && p.skip < after+int64(n) {
						b[p.skip-after] ^= 0x5A
					}
					after += int64(n)
				}
				if n > 0 {
					if _, werr := c.Write(b); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// TestStreamDamagedFails: a snapshot stream cut short or with a byte
// changed fails the backup, and the artifact is never closed (nothing
// partial is reported as a backup).
func TestStreamDamagedFails(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	seed(ctx, t, src)
	for _, tc := range []struct {
		name string
		skip int64
		flip bool
	}{
		{"cut in a value", 20000, false},
		{"cut after the header", 200, false},
		{"flipped byte", 30000, true},
		{"flipped byte early", 300, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", src.port), tc.skip, tc.flip)
			source := src.source("", src.password, nil)
			source.Config["url"] = "redis://" + p.l.Addr().String()
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			store, info, _, err := backupWithLog(ctx, source)
			if err == nil {
				t.Fatalf("backup of a damaged stream succeeded: %v", info.Details)
			}
			t.Logf("error: %v", err)
			if ctx.Err() != nil {
				t.Fatalf("the backup hung until the deadline")
			}
			if data := store.Bytes(artifactKeys); data != nil {
				t.Errorf("the artifact was closed (%d bytes) after a failed read", len(data))
			}
		})
	}
}

// TestStreamFallbackSyncDisabled: a server with SYNC renamed away (as
// managed services do) is backed up with SCAN and DUMP.
func TestStreamFallbackSyncDisabled(t *testing.T) {
	ctx := context.Background()
	src := startServer(t, `rename-command SYNC ""`, `rename-command PSYNC ""`)
	c := rawClient(src, 0)
	defer c.Close()
	c.Set(ctx, "k", "v", time.Hour)
	store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, map[string]any{"databases": []int{0}}))
	if info.Details["read"] != "scan" || !strings.Contains(fmt.Sprint(info.Details["readFallback"]), "unknown command") {
		t.Errorf("details read=%v readFallback=%v, want scan after an unknown command", info.Details["read"], info.Details["readFallback"])
	}
	_, _, keys := artifactRecords(t, store.Bytes(artifactKeys))
	if len(keys) != 1 || keys[0].key != "k" || keys[0].expireAt == 0 {
		t.Errorf("keys %v, want k with its expiry", keys)
	}
}
