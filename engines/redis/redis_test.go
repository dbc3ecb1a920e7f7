package redis

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
)

// seedDBs are the databases the data set fills.
var seedDBs = []int{0, 3, 7}

const functionLib = "#!lua name=capsulelib\nredis.register_function('capsule_hello', function(keys, args) return 'hello ' .. (args[1] or '') end)"

// service is the enginetest.Service for one redis-server.
type service struct {
	srv      *testServer
	user     string
	password string
	settings map[string]any
}

func (s *service) Source(t *testing.T) engines.Source {
	return s.srv.source(s.user, s.password, s.settings)
}

// Seed writes every type redis has, binary keys and values, keys with and
// without a TTL, into several databases, and a function library.
func (s *service) Seed(ctx context.Context, t *testing.T) {
	t.Helper()
	seed(ctx, t, s.srv)
}

func seed(ctx context.Context, t testing.TB, srv *testServer) {
	t.Helper()
	adm := srv.admin()
	defer adm.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	must(adm.FlushAll(ctx).Err())
	must(adm.FunctionFlush(ctx).Err())
	must(adm.FunctionLoad(ctx, functionLib).Err())
	for _, db := range seedDBs {
		c := rawClient(srv, db)
		p := fmt.Sprintf("db%d:", db)
		must(c.Set(ctx, p+"string", "plain value", 0).Err())
		must(c.Set(ctx, p+"int", 12345, 0).Err())
		must(c.Set(ctx, p+"big", strings.Repeat("abcdefgh", 20000), 0).Err())
		must(c.Set(ctx, p+"ttl", "expires", 90*time.Second).Err())
		must(c.Set(ctx, p+"\x00bin\xff\xfekey", []byte{0, 1, 2, 0xff, 0xfe, '\r', '\n', 0}, 0).Err())
		must(c.RPush(ctx, p+"list", "a", "b", "c", "b", "\x00").Err())
		for i := range 300 {
			must(c.RPush(ctx, p+"biglist", fmt.Sprintf("item-%d", i)).Err())
		}
		must(c.SAdd(ctx, p+"set", "x", "y", "z").Err())
		must(c.SAdd(ctx, p+"intset", 1, 2, 3, 100000).Err())
		must(c.ZAdd(ctx, p+"zset", goredis.Z{Score: 1.5, Member: "one"}, goredis.Z{Score: -2, Member: "two"}, goredis.Z{Score: 1e100, Member: "big"}).Err())
		must(c.HSet(ctx, p+"hash", "f1", "v1", "f2", "v2", "bin\x00", "\xff").Err())
		must(c.Expire(ctx, p+"hash", 3600*time.Second).Err())
		for i := range 5 {
			must(c.XAdd(ctx, &goredis.XAddArgs{Stream: p + "stream", Values: []any{"n", i, "k", "v"}}).Err())
		}
		must(c.XGroupCreate(ctx, p+"stream", "g1", "0").Err())
		must(c.XGroupCreate(ctx, p+"stream", "g2", "$").Err())
		must(c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g1", Consumer: "c1", Streams: []string{p + "stream", ">"}, Count: 2}).Err())
		must(c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g1", Consumer: "c2", Streams: []string{p + "stream", ">"}, Count: 1}).Err())
		must(c.PFAdd(ctx, p+"hll", "a", "b", "c", "d", "e").Err())
		must(c.GeoAdd(ctx, p+"geo", &goredis.GeoLocation{Name: "tlv", Longitude: 34.78, Latitude: 32.08}, &goredis.GeoLocation{Name: "sf", Longitude: -122.42, Latitude: 37.77}).Err())
		must(c.SetBit(ctx, p+"bitmap", 7, 1).Err())
		must(c.SetBit(ctx, p+"bitmap", 1000, 1).Err())
		// The encodings of large collections, integer and compressed
		// strings and key names, the empty string: the RDB walker and
		// the MSET replay each read these differently.
		for i := range 300 {
			must(c.SAdd(ctx, p+"bigset", fmt.Sprintf("member-%d", i)).Err())
			must(c.ZAdd(ctx, p+"bigzset", goredis.Z{Score: float64(i) / 3, Member: fmt.Sprintf("m-%d", i)}).Err())
			must(c.HSet(ctx, p+"bighash", fmt.Sprintf("field-%d", i), i).Err())
		}
		for i, v := range []string{"-5", "-300", "-70000", "4000000000", "", "007", strings.Repeat("xy", 500)} {
			must(c.Set(ctx, fmt.Sprintf("%snum%d", p, i), v, 0).Err())
		}
		must(c.Set(ctx, fmt.Sprint(1000+db), "integer key name", 0).Err())
		must(c.Set(ctx, p+strings.Repeat("long-key-", 30), "compressed key name", 0).Err())
		must(c.Set(ctx, p+"ttl-int", 42, time.Hour).Err())
		c.Close()
	}
}

// snapshot is a canonical picture of every database and the functions.
type snapshot struct {
	Keys      map[string]map[string]any // db → key (hex) → value
	Functions string
}

func (s *service) Snapshot(ctx context.Context, t *testing.T) any {
	t.Helper()
	return takeSnapshot(ctx, t, s.srv)
}

func takeSnapshot(ctx context.Context, t testing.TB, srv *testServer) snapshot {
	t.Helper()
	snap := snapshot{Keys: map[string]map[string]any{}}
	adm := srv.admin()
	defer adm.Close()
	libs, err := adm.Do(ctx, "FUNCTION", "LIST", "WITHCODE").Result()
	if err != nil {
		t.Fatalf("function list: %v", err)
	}
	b, _ := json.Marshal(libs)
	snap.Functions = string(b)
	for db := range 16 {
		c := rawClient(srv, db)
		keys, err := c.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatalf("keys: %v", err)
		}
		if len(keys) == 0 {
			c.Close()
			continue
		}
		m := map[string]any{}
		for _, k := range keys {
			m[fmt.Sprintf("%q", k)] = keyValue4Test(ctx, t, c, k)
		}
		snap.Keys[fmt.Sprint(db)] = m
		c.Close()
	}
	return snap
}

func keyValue4Test(ctx context.Context, t testing.TB, c *goredis.Client, k string) any {
	t.Helper()
	typ, err := c.Type(ctx, k).Result()
	if err != nil {
		t.Fatal(err)
	}
	exp, _ := c.Do(ctx, "PEXPIRETIME", k).Int64()
	v := map[string]any{"type": typ, "expireAt": exp}
	var val any
	switch typ {
	case "string":
		val, err = c.Get(ctx, k).Result()
	case "list":
		val, err = c.LRange(ctx, k, 0, -1).Result()
	case "set":
		var m []string
		m, err = c.SMembers(ctx, k).Result()
		sort.Strings(m)
		val = m
	case "zset":
		val, err = c.ZRangeWithScores(ctx, k, 0, -1).Result()
	case "hash":
		val, err = c.HGetAll(ctx, k).Result()
	case "stream":
		entries, err1 := c.XRange(ctx, k, "-", "+").Result()
		groups, err2 := c.XInfoGroups(ctx, k).Result()
		var pending []any
		for _, g := range groups {
			p, err := c.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: k, Group: g.Name, Start: "-", End: "+", Count: 100}).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p {
				pending = append(pending, []any{g.Name, e.ID, e.Consumer, e.RetryCount})
			}
			cons, err := c.XInfoConsumers(ctx, k, g.Name).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, cn := range cons {
				pending = append(pending, []any{g.Name, cn.Name, cn.Pending})
			}
		}
		val = []any{entries, groups, pending}
		err = errors.Join(err1, err2)
	default:
		t.Fatalf("key %q has unexpected type %s", k, typ)
	}
	if err != nil {
		t.Fatalf("read %q: %v", k, err)
	}
	v["value"] = val
	return v
}

// Damage flushes everything, drops the functions and adds a stray key.
func (s *service) Damage(ctx context.Context, t *testing.T) {
	t.Helper()
	adm := s.srv.admin()
	defer adm.Close()
	if err := adm.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := adm.FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	c := rawClient(s.srv, 3)
	defer c.Close()
	c.Set(ctx, "stray", "after the disaster", 0)
}

func TestLogicalRoundTrip(t *testing.T) {
	srv := startServer(t)
	pw := srv.addUser(t, "capsule", "~*", "&*", "+@all")
	enginetest.Run(t, New(), &service{srv: srv, user: "capsule", password: pw, settings: map[string]any{"databases": "all", "batchSize": 7}}, enginetest.Options{
		Restore: engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}},
	})
}

// TestLogicalScanRoundTrip runs the suite on the SCAN read, which
// TestLogicalRoundTrip no longer takes (its user may SYNC).
func TestLogicalScanRoundTrip(t *testing.T) {
	srv := startServer(t)
	pw := srv.addUser(t, "capsule", "~*", "&*", "+@all")
	enginetest.Run(t, New(), &service{srv: srv, user: "capsule", password: pw, settings: map[string]any{"databases": "all", "batchSize": 7, "logicalRead": "scan"}}, enginetest.Options{
		Restore: engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}},
	})
}

func TestRDBRoundTrip(t *testing.T) {
	srv := startServer(t)
	enginetest.Run(t, New(), &service{srv: srv, password: srv.password, settings: map[string]any{"mode": "rdb"}}, enginetest.Options{
		Restore: engines.RestoreOptions{Extra: map[string]string{OptFunctions: "flush"}},
	})
}

// TestRDBDiskBased takes the snapshot in its length-prefixed form (the
// server writes it to disk first) and restores it into a second server.
func TestRDBDiskBased(t *testing.T) {
	ctx := context.Background()
	src := startServer(t, "repl-diskless-sync no")
	dst := startServer(t)
	seed(ctx, t, src)
	want := takeSnapshot(ctx, t, src)
	store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, map[string]any{"mode": "rdb"}))
	if info.SourceInfo["mode"] != "rdb" || info.SourceInfo["rdbVersion"] != "10" {
		t.Errorf("source info %v: want mode rdb, rdbVersion 10", info.SourceInfo)
	}
	if _, err := New().Restore(ctx, store.RestoreJob(t, "disk", dst.source("", dst.password, nil), info, engines.RestoreOptions{})); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if diff := enginetest.DeepCompare(want, takeSnapshot(ctx, t, dst)); diff != "" {
		t.Fatalf("restored data differs: %s", diff)
	}
}

// TestReadOnlyUser backs up as a user with only +@read +scan +dump (no
// SELECT, no FUNCTION DUMP) and restores into another server.
func TestReadOnlyUser(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	dst := startServer(t)
	pw := src.addUser(t, "reader", "~*", "+@read", "+scan", "+dump")
	seed(ctx, t, src)
	want := takeSnapshot(ctx, t, src)
	store, info := enginetest.Backup(ctx, t, New(), src.source("reader", pw, map[string]any{"databases": []int{0}}))
	if got := info.Details["functions"]; !strings.HasPrefix(fmt.Sprint(got), "skipped") {
		t.Errorf("functions = %v, want skipped", got)
	}
	if _, err := New().Restore(ctx, store.RestoreJob(t, "ro", dst.source("", dst.password, nil), info, engines.RestoreOptions{})); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got := takeSnapshot(ctx, t, dst)
	if diff := enginetest.DeepCompare(want.Keys["0"], got.Keys["0"]); diff != "" {
		t.Fatalf("database 0 differs: %s", diff)
	}
	if len(got.Keys) != 1 {
		t.Errorf("restored databases %d, want only 0", len(got.Keys))
	}
}

// TestExpiry checks that a key's TTL survives to within a second and that
// a key that expired after the backup is not resurrected.
func TestExpiry(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	c := rawClient(srv, 0)
	defer c.Close()
	c.Set(ctx, "long", "v", 100*time.Second)
	c.Set(ctx, "short", "v", 1200*time.Millisecond)
	c.Set(ctx, "forever", "v", 0)
	src := srv.source("", srv.password, map[string]any{"databases": []int{0}})
	store, info := enginetest.Backup(ctx, t, New(), src)
	ttlBefore := c.PTTL(ctx, "long").Val()
	time.Sleep(1500 * time.Millisecond)
	c.FlushAll(ctx)
	rinfo, err := New().Restore(ctx, store.RestoreJob(t, "ttl", src, info, engines.RestoreOptions{}))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if n := c.Exists(ctx, "short").Val(); n != 0 {
		t.Errorf("a key that expired after the backup was resurrected")
	}
	if rinfo.Details["expiredSkipped"] != int64(1) {
		t.Errorf("expiredSkipped = %v, want 1", rinfo.Details["expiredSkipped"])
	}
	ttl := c.PTTL(ctx, "long").Val()
	// The absolute expiry is kept: the TTL went down by the time that
	// passed (1.5 s), within a second.
	if d := ttlBefore - ttl - 1500*time.Millisecond; d < -time.Second || d > time.Second {
		t.Errorf("TTL after restore %v, before %v: off by %v", ttl, ttlBefore, d)
	}
	if c.PTTL(ctx, "forever").Val() != -1 {
		t.Errorf("key without TTL got one: %v", c.PTTL(ctx, "forever").Val())
	}
}

// TestRefusesNewerPayload hands the engine a backup whose payloads are in
// an RDB version newer than the target reads: it refuses before flushing.
func TestRefusesNewerPayload(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	c := rawClient(srv, 0)
	defer c.Close()
	c.Set(ctx, "keep", "me", 0)
	store := enginetest.NewStore()
	w, _ := store.Create(artifactKeys)
	kw, _ := newKeyWriter(w)
	kw.database(0)
	kw.key([]byte("k"), 0, dumpPayload([]byte{0, 1, 'v'}, 99))
	kw.finish()
	w.Close()
	info := engines.BackupInfo{Format: formatLogical, ServerVersion: "99.0.0", SourceInfo: map[string]string{"mode": "logical", "databases": "0"}}
	_, err := New().Restore(ctx, store.RestoreJob(t, "newer", srv.source("", srv.password, nil), info, engines.RestoreOptions{}))
	if err == nil || !strings.Contains(err.Error(), "RDB format version 99") {
		t.Fatalf("restore of a newer payload: err = %v, want a refusal naming RDB format version 99", err)
	}
	if c.Get(ctx, "keep").Val() != "me" {
		t.Fatalf("the target was changed")
	}
}

// TestNoSecretLeaks runs a backup and a restore with real passwords and
// looks for them in every process's argv (while the engine runs), in the
// logs and in the BackupInfo as it is written to the bucket.
func TestNoSecretLeaks(t *testing.T) {
	for _, mode := range []string{ModeLogical, ModeRDB} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			srv := startServer(t)
			pw := srv.addUser(t, "capsule", "~*", "&*", "+@all")
			seed(ctx, t, srv)
			src := srv.source("capsule", pw, map[string]any{"mode": mode})
			var logs bytes.Buffer
			log := logrus.New()
			log.SetOutput(&logs)
			log.SetLevel(logrus.DebugLevel)
			scanned := 0
			check := func(string, int64, int64) {
				scanned++
				if leak := procWithSecret(pw, srv.password); leak != "" {
					t.Errorf("a password is in the argv of %s", leak)
				}
			}
			store := enginetest.NewStore()
			info, err := New().Backup(ctx, &engines.BackupJob{ID: "leak", Source: src, Artifacts: store, Log: log, Progress: check})
			if err != nil {
				t.Fatalf("backup: %v", err)
			}
			check("", 0, 0)
			job := store.RestoreJob(t, "leak", src, *info, engines.RestoreOptions{})
			job.Log, job.Progress = log, check
			rinfo, err := New().Restore(ctx, job)
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			// A failed login's error must not echo the password either.
			bad := srv.source("capsule", pw+"x", map[string]any{"mode": mode})
			_, berr := New().Backup(ctx, &engines.BackupJob{ID: "bad", Source: bad, Artifacts: enginetest.NewStore(), Log: log})
			if berr == nil {
				t.Errorf("backup with a wrong password succeeded")
			}
			infoJSON, _ := json.Marshal(info)
			rinfoJSON, _ := json.Marshal(rinfo)
			for _, secret := range []string{pw, srv.password} {
				for what, text := range map[string]string{"logs": logs.String(), "BackupInfo": string(infoJSON), "RestoreInfo": string(rinfoJSON), "error": fmt.Sprint(berr)} {
					if strings.Contains(text, secret) {
						t.Errorf("a password is in the %s", what)
					}
				}
			}
			if scanned < 2 {
				t.Errorf("argv scanned %d times, want at least 2", scanned)
			}
		})
	}
}

// procWithSecret returns the pid and name of a process whose argv holds
// one of the secrets, or "".
func procWithSecret(secrets ...string) string {
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				return fmt.Sprintf("%s (%q)", f, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
			}
		}
	}
	return ""
}

func TestValidate(t *testing.T) {
	e := New()
	for _, tc := range []struct {
		cfg  map[string]any
		want string // "" for valid
	}{
		{map[string]any{"url": "redis://h:6379"}, ""},
		{map[string]any{"url": "rediss://u@h:6380", "databases": []int{0, 3}, "mode": "rdb", "passwordEnv": "X"}, ""},
		{map[string]any{"url": "redis://h", "databases": "all", "passwordFile": "/f"}, ""},
		{map[string]any{}, "url"},
		{map[string]any{"url": "redis://u:secretpw@h:6379"}, "password"},
		{map[string]any{"url": "http://h"}, "scheme"},
		{map[string]any{"url": "redis://h/3"}, "databases"},
		{map[string]any{"url": "redis://h", "databases": "some"}, "databases"},
		{map[string]any{"url": "redis://h", "databases": []int{}}, "databases"},
		{map[string]any{"url": "redis://h", "databases": []int{-1}}, "databases"},
		{map[string]any{"url": "redis://h", "mode": "aof"}, "mode"},
		{map[string]any{"url": "redis://h", "logicalRead": "scan"}, ""},
		{map[string]any{"url": "redis://h", "mode": "logical", "logicalRead": "sync"}, ""},
		{map[string]any{"url": "redis://h", "logicalRead": "fork"}, "logicalRead"},
		{map[string]any{"url": "redis://h", "mode": "rdb", "logicalRead": "scan"}, "logicalRead"},
		{map[string]any{"url": "redis://h", "caFile": "/ca.pem"}, "caFile"},
		{map[string]any{"url": "redis://h", "noSuch": 1}, "noSuch"},
	} {
		err := e.Validate(engines.Source{Name: "s", Engine: "redis", Config: tc.cfg})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Validate(%v) = %v, want nil", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Validate(%v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("Validate error shows the password: %v", err)
		}
	}
}

// TestDataSetCoverage guards the suite itself: the seeded data set and
// the snapshot cover what the issue asks for.
func TestDataSetCoverage(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	seed(ctx, t, srv)
	snap := takeSnapshot(ctx, t, srv)
	if len(snap.Keys) != len(seedDBs) {
		t.Errorf("snapshot has %d databases, want %d", len(snap.Keys), len(seedDBs))
	}
	if !strings.Contains(snap.Functions, "capsule_hello") {
		t.Errorf("snapshot lacks the function library: %s", snap.Functions)
	}
	types := map[string]int{}
	ttls := 0
	for _, keys := range snap.Keys {
		for _, v := range keys {
			m := v.(map[string]any)
			types[m["type"].(string)]++
			if m["expireAt"].(int64) > 0 {
				ttls++
			}
		}
	}
	for _, typ := range []string{"string", "list", "set", "zset", "hash", "stream"} {
		if types[typ] == 0 {
			t.Errorf("no key of type %s", typ)
		}
	}
	if ttls == 0 {
		t.Errorf("no key with a TTL")
	}
	b, _ := json.Marshal(snap.Keys["3"][`"db3:stream"`])
	if !strings.Contains(string(b), "c2") || !strings.Contains(string(b), "g2") {
		t.Errorf("stream snapshot lacks consumers and groups: %s", b)
	}
}

// TestRDBSelectedDatabases backs up databases 0 and 3 in rdb mode: the
// restore flushes and fills exactly those, and leaves database 7 alone.
func TestRDBSelectedDatabases(t *testing.T) {
	ctx := context.Background()
	src := startServer(t)
	dst := startServer(t)
	seed(ctx, t, src)
	want := takeSnapshot(ctx, t, src)
	for _, db := range []int{0, 7} {
		c := rawClient(dst, db)
		c.Set(ctx, "stray", "x", 0)
		c.Close()
	}
	store, info := enginetest.Backup(ctx, t, New(), src.source("", src.password, map[string]any{"mode": "rdb", "databases": []int{0, 3}}))
	if _, err := New().Restore(ctx, store.RestoreJob(t, "sel", dst.source("", dst.password, nil), info, engines.RestoreOptions{})); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got := takeSnapshot(ctx, t, dst)
	for _, db := range []string{"0", "3"} {
		if diff := enginetest.DeepCompare(want.Keys[db], got.Keys[db]); diff != "" {
			t.Errorf("database %s differs: %s", db, diff)
		}
	}
	if len(got.Keys["7"]) != 1 || got.Keys["7"][`"stray"`] == nil {
		t.Errorf("database 7 of the target was changed: %v", got.Keys["7"])
	}
}

// TestTLS backs up over rediss:// in both modes and restores.
func TestTLS(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ca, cert, key := writeTestCerts(t, dir)
	tlsConf := []string{"tls-port 0", "tls-cert-file " + cert, "tls-key-file " + key, "tls-ca-cert-file " + ca, "tls-auth-clients no", "tls-replication yes"}
	srv := startServer(t, tlsConf...)
	for _, mode := range []string{ModeLogical, ModeRDB} {
		t.Run(mode, func(t *testing.T) {
			seed(ctx, t, srv)
			want := takeSnapshot(ctx, t, srv)
			src := srv.source("", srv.password, map[string]any{"mode": mode})
			store, info := enginetest.Backup(ctx, t, New(), src)
			if info.SourceInfo["tls"] != "true" {
				t.Errorf("source info says tls=%s", info.SourceInfo["tls"])
			}
			adm := srv.admin()
			adm.FlushAll(ctx)
			adm.Close()
			if _, err := New().Restore(ctx, store.RestoreJob(t, "tls", src, info, engines.RestoreOptions{})); err != nil {
				t.Fatalf("restore: %v", err)
			}
			if diff := enginetest.DeepCompare(want, takeSnapshot(ctx, t, srv)); diff != "" {
				t.Fatalf("restored data differs: %s", diff)
			}
		})
	}
}

// BenchmarkLogical backs up and restores 20,000 small keys; it reports
// keys per second of each.
func BenchmarkLogical(b *testing.B) {
	ctx := context.Background()
	srv := startServer(b)
	c := rawClient(srv, 0)
	defer c.Close()
	const n = 20000
	for i := 0; i < n; i += 1000 {
		p := c.Pipeline()
		for j := i; j < i+1000; j++ {
			p.Set(ctx, fmt.Sprintf("key:%d", j), strings.Repeat("v", 100), 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	src := srv.source("", srv.password, map[string]any{"databases": []int{0}})
	var backup, restore time.Duration
	for b.Loop() {
		t0 := time.Now()
		store, info := enginetest.Backup(ctx, b, New(), src)
		t1 := time.Now()
		if _, err := New().Restore(ctx, store.RestoreJob(b, "bench", src, info, engines.RestoreOptions{})); err != nil {
			b.Fatal(err)
		}
		backup += t1.Sub(t0)
		restore += time.Since(t1)
	}
	b.ReportMetric(float64(n*b.N)/backup.Seconds(), "backup-keys/s")
	b.ReportMetric(float64(n*b.N)/restore.Seconds(), "restore-keys/s")
}

// TestReplayKeepsOrder restores an artifact that lists keys twice (SCAN
// may): the last record of a key wins, whichever command carries it
// (MSET, SET ... PXAT or RESTORE).
func TestReplayKeepsOrder(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	c := rawClient(srv, 0)
	defer c.Close()
	c.RPush(ctx, "list", "a", "b")
	listPayload := []byte(c.Dump(ctx, "list").Val())
	c.FlushAll(ctx)
	str := func(v string) []byte { return dumpPayload(append([]byte{0, byte(len(v))}, v...), 10) }
	later := time.Now().Add(time.Hour).UnixMilli()
	store := enginetest.NewStore()
	w, _ := store.Create(artifactKeys)
	kw, _ := newKeyWriter(w)
	kw.database(0)
	kw.key([]byte("a"), 0, str("first"))       // MSET
	kw.key([]byte("a"), 0, listPayload)        // RESTORE after it
	kw.key([]byte("b"), later, str("expires")) // SET PXAT
	kw.key([]byte("b"), 0, str("forever"))     // MSET after it
	kw.key([]byte("c"), 0, str("one"))
	kw.key([]byte("c"), 0, str("two")) // the same MSET
	kw.key([]byte("d"), 0, listPayload)
	kw.key([]byte("d"), later, str("last")) // SET PXAT after RESTORE
	kw.finish()
	w.Close()
	info := engines.BackupInfo{Format: formatLogical, ServerVersion: "7.0.15", SourceInfo: map[string]string{"mode": "logical", "databases": "0"}}
	if _, err := New().Restore(ctx, store.RestoreJob(t, "order", srv.source("", srv.password, nil), info, engines.RestoreOptions{})); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := c.LRange(ctx, "a", 0, -1).Val(); len(got) != 2 {
		t.Errorf("a = %v (type %s), want the list", got, c.Type(ctx, "a").Val())
	}
	if got, ttl := c.Get(ctx, "b").Val(), c.PTTL(ctx, "b").Val(); got != "forever" || ttl != -1 {
		t.Errorf("b = %q with TTL %v, want \"forever\" without one", got, ttl)
	}
	if got := c.Get(ctx, "c").Val(); got != "two" {
		t.Errorf("c = %q, want \"two\"", got)
	}
	if got, ttl := c.Get(ctx, "d").Val(), c.PTTL(ctx, "d").Val(); got != "last" || ttl <= 0 {
		t.Errorf("d = %q with TTL %v, want \"last\" expiring", got, ttl)
	}
}

// TestReplayFailureNamesKey replays an artifact with a payload that checks
// (CRC-64, RDB version) but that the server refuses, among thousands of
// good keys: the restore fails, naming the key and saying the databases
// are partly restored, instead of hanging or succeeding.
func TestReplayFailureNamesKey(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	store := enginetest.NewStore()
	w, _ := store.Create(artifactKeys)
	kw, _ := newKeyWriter(w)
	kw.database(0)
	for i := range 5000 {
		kw.key(fmt.Appendf(nil, "good:%d", i), 0, dumpPayload([]byte{0, 2, 'o', 'k'}, 10))
		if i == 3000 {
			kw.key([]byte("bad-key"), 0, dumpPayload([]byte{99, 1, 2, 3}, 10))
		}
	}
	kw.finish()
	w.Close()
	info := engines.BackupInfo{Format: formatLogical, ServerVersion: "7.0.15", SourceInfo: map[string]string{"mode": "logical", "databases": "0"}}
	_, err := New().Restore(ctx, store.RestoreJob(t, "bad", srv.source("", srv.password, nil), info, engines.RestoreOptions{}))
	if err == nil || !strings.Contains(err.Error(), "bad-key") || !strings.Contains(err.Error(), "partly restored") {
		t.Fatalf("restore of a payload the server refuses: err = %v, want the key named and the databases said partly restored", err)
	}
	t.Logf("the error: %v", err)
}
