package mongodb

// The stand-in: no MongoDB server can run on this machine, so these tests
// run against FerretDB v1.24.0 (its SQLite handler, on a free loopback
// port), a MongoDB wire-protocol server that stores in SQLite. It runs as
// a child process, the pinned ferretdb binary that scripts/install-tools.sh
// installs, not as a library: linked in, FerretDB put its SQL drivers (SAP
// HANA's among them) into capsule's go.mod. FerretDB v1 lacks views, validators, collations and
// renameCollection's dropTarget, and crashes on Decimal128: those are
// covered by the same suite against a real MongoDB when
// CAPSULE_TEST_MONGO_URL is set.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/enginetest"
	"github.com/cnvrg/capsule/internal/testtool"
	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// ferretDBVersion is the FerretDB that internal/tools/ferretdb/go.mod pins.
const ferretDBVersion = "v1.24.0"

// ferretDB is the stand-in shared by every test of this process, started
// on first use and stopped by TestMain.
var ferretDB struct {
	once sync.Once
	url  string // mongodb://127.0.0.1:PORT/
	stop func()
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if ferretDB.stop != nil {
		ferretDB.stop()
	}
	os.Exit(code)
}

// ferretURL starts the stand-in on first use and returns its address. A
// missing binary fails the test with the command that installs it
// (CAPSULE_SKIP_FERRETDB=1 skips instead).
func ferretURL(t testing.TB) string {
	t.Helper()
	bin := ferretBinary(t)
	ferretDB.once.Do(func() { ferretDB.url, ferretDB.stop, ferretDB.err = startFerretDB(bin) })
	if ferretDB.err != nil {
		t.Fatalf("FerretDB stand-in: %v", ferretDB.err)
	}
	return ferretDB.url
}

// ferretBinary finds the pinned stand-in.
func ferretBinary(t testing.TB) string {
	t.Helper()
	return testtool.Tool{
		Name: "ferretdb", Version: ferretDBVersion, EnvVar: "CAPSULE_FERRETDB", SkipVar: "CAPSULE_SKIP_FERRETDB",
		Install: "bash scripts/install-tools.sh  (it builds internal/tools/ferretdb into .tools/bin)",
	}.Find(t)
}

// startFerretDB runs bin (internal/tools/ferretdb) on a free loopback port
// (or with the listener flags args gives) with its data in a fresh
// directory and returns the URI it prints once it accepts connections.
// stop ends it and removes the directory.
func startFerretDB(bin string, args ...string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "capsule-ferretdb-")
	if err != nil {
		return "", nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	logPath := filepath.Join(dir, "ferretdb.log")
	logf, err := os.Create(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	defer logf.Close() // the child has its own descriptor
	if len(args) == 0 {
		args = []string{"-listen-addr", "127.0.0.1:0"}
	}
	cmd := exec.Command(bin, append(args, "-sqlite-dir", data)...)
	cmd.Stderr = logf
	cmd.SysProcAttr = childProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("start %s: %w", bin, err)
	}
	// The first line is the URI; EOF (an empty line) means it exited
	// before listening. Wait only after the reads: it closes the pipe.
	uri := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		r := bufio.NewReader(out)
		line, _ := r.ReadString('\n')
		uri <- strings.TrimSpace(line)
		_, _ = io.Copy(io.Discard, r)
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		os.RemoveAll(dir)
	}
	failed := func(err error) (string, func(), error) {
		log, _ := os.ReadFile(logPath)
		stop()
		return "", nil, fmt.Errorf("%s: %w; its output:\n%s", bin, err, log)
	}
	select {
	case u := <-uri:
		if !strings.HasPrefix(u, "mongodb://") {
			<-exited
			return failed(fmt.Errorf("exited before listening (%v)", cmd.ProcessState))
		}
		return u, stop, nil
	case <-time.After(time.Minute):
		return failed(errors.New("not listening after a minute"))
	}
}

// mongoService is the enginetest.Service for FerretDB or a real MongoDB.
// Each subtest gets its own two databases with a random prefix.
type mongoService struct {
	url    string // with the user, without the password
	pass   string
	ferret bool
	big    bool
	mu     sync.Mutex
	tags   map[string]string
}

func ferretService(t testing.TB) *mongoService {
	u, err := url.Parse(ferretURL(t))
	if err != nil {
		t.Fatal(err)
	}
	// FerretDB's SQLite handler takes any PLAIN credentials: the password
	// travels as it would to a real server.
	u.User = url.User("capsule")
	u.RawQuery = "authMechanism=PLAIN&authSource=admin"
	return &mongoService{url: u.String(), pass: "pw-" + randHex(8), ferret: true, tags: map[string]string{}}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *mongoService) tag(t testing.TB) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tag, ok := s.tags[t.Name()]
	if !ok {
		tag = "ct_" + randHex(4)
		s.tags[t.Name()] = tag
	}
	return tag
}

func (s *mongoService) dbs(t testing.TB) (string, string) {
	tag := s.tag(t)
	return tag + "_a", tag + "_b"
}

func (s *mongoService) Source(t *testing.T) engines.Source {
	a, b := s.dbs(t)
	pass := s.pass
	return engines.Source{
		Name: "test/mongo", Engine: Name,
		Config:   map[string]any{"url": s.url, "databases": []any{a, b}, "batchSize": 500},
		Password: func(context.Context) (string, error) { return pass, nil },
	}
}

func (s *mongoService) client(ctx context.Context, t testing.TB) *mongo.Client {
	t.Helper()
	stripped, cred, err := splitAuth(s.url)
	must(t, err)
	opts := options.Client().ApplyURI(stripped)
	if cred != nil {
		cred.Password, cred.PasswordSet = s.pass, true
		opts.SetAuth(*cred)
	}
	cl, err := mongo.Connect(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type sizes struct{ users, events, files, orders, unicode int }

func (s *mongoService) sizes(t testing.TB) sizes {
	if s.big && strings.Contains(t.Name(), "RoundTrip") {
		// Most documents are small: FerretDB's cost is per field, and the
		// machine is shared.
		return sizes{users: 20000, events: 70000, files: 2000, orders: 10000, unicode: 100} // 102,100 documents
	}
	return sizes{users: 300, events: 100, files: 50, orders: 200, unicode: 10}
}

const unicodeColl = "ünïcødé ✓ coll"

func insertAll(ctx context.Context, t testing.TB, c *mongo.Collection, n int, doc func(int) any) {
	t.Helper()
	var batch []any
	for i := 0; i < n; i++ {
		batch = append(batch, doc(i))
		if len(batch) == 1000 || i == n-1 {
			_, err := c.InsertMany(ctx, batch)
			must(t, err)
			batch = batch[:0]
		}
	}
}

func (s *mongoService) Seed(ctx context.Context, t *testing.T) {
	n := s.sizes(t)
	an, bn := s.dbs(t)
	cl := s.client(ctx, t)
	defer func() { _ = cl.Disconnect(ctx) }()
	t.Cleanup(func() {
		cl := s.client(context.Background(), t)
		defer func() { _ = cl.Disconnect(context.Background()) }()
		_ = cl.Database(an).Drop(context.Background())
		_ = cl.Database(bn).Drop(context.Background())
	})
	a, b := cl.Database(an), cl.Database(bn)
	base := time.Date(2021, 3, 4, 5, 6, 7, 8e6, time.UTC)
	users := a.Collection("users")
	insertAll(ctx, t, users, n.users, func(i int) any {
		sum := sha256.Sum256([]byte(fmt.Sprint(i)))
		d := bson.D{
			{Key: "_id", Value: fmt.Sprintf("u%06d", i)},
			{Key: "name", Value: fmt.Sprintf("Zoë Ñandú 東京 %d 🚀", i)},
			{Key: "email", Value: fmt.Sprintf("user%d@example.com", i)},
			{Key: "age", Value: int32(i % 90)},
			{Key: "score", Value: float64(i) / 7},
			{Key: "big", Value: int64(1)<<53 + int64(i)},
			{Key: "created", Value: primitive.NewDateTimeFromTime(base.Add(time.Duration(i) * time.Second))},
			{Key: "tags", Value: bson.A{"a", "b" + fmt.Sprint(i%5), int32(i % 3)}},
			{Key: "profile", Value: bson.D{
				{Key: "address", Value: bson.D{{Key: "city", Value: []string{"Köln", "München", "Tel Aviv"}[i%3]}, {Key: "zip", Value: fmt.Sprintf("%05d", i)}}},
				{Key: "prefs", Value: bson.A{bson.D{{Key: "k", Value: "theme"}, {Key: "v", Value: "dark"}}, bson.D{{Key: "k", Value: "n"}, {Key: "v", Value: int64(i)}}}},
			}},
			{Key: "avatar", Value: primitive.Binary{Subtype: 0, Data: sum[:]}},
			{Key: "uuid", Value: primitive.Binary{Subtype: 4, Data: sum[:16]}},
			{Key: "active", Value: i%2 == 0},
			{Key: "nothing", Value: nil},
		}
		if !s.ferret {
			amt, _ := primitive.ParseDecimal128(fmt.Sprintf("%d.%02d", i, i%100))
			d = append(d, bson.E{Key: "balance", Value: amt})
		}
		return d
	})
	_, err := users.Indexes().CreateMany(ctx, []mongo.IndexModel{
		{Keys: bson.D{{Key: "email", Value: 1}}, Options: options.Index().SetUnique(true)},
		{Keys: bson.D{{Key: "profile.address.city", Value: 1}, {Key: "age", Value: -1}}, Options: options.Index().SetName("city_age")},
	})
	must(t, err)
	must(t, a.CreateCollection(ctx, "events", options.CreateCollection().SetCapped(true).SetSizeInBytes(64<<20)))
	events := a.Collection("events")
	insertAll(ctx, t, events, n.events, func(i int) any {
		return bson.D{{Key: "_id", Value: int32(i)}, {Key: "at", Value: primitive.NewDateTimeFromTime(base.Add(time.Duration(i) * time.Millisecond))}, {Key: "kind", Value: []string{"start", "stop", "fail"}[i%3]}}
	})
	_, err = events.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "kind", Value: 1}}})
	must(t, err)
	insertAll(ctx, t, a.Collection("files"), n.files, func(i int) any {
		data := bytes.Repeat([]byte{byte(i), 0, 0xff, byte(i >> 8)}, 16+i%128)
		sum := sha256.Sum256(data)
		var oid primitive.ObjectID
		copy(oid[:], sum[:12])
		return bson.D{{Key: "_id", Value: oid}, {Key: "data", Value: primitive.Binary{Data: data}}, {Key: "sha", Value: hex.EncodeToString(sum[:])}}
	})
	insertAll(ctx, t, b.Collection("orders"), n.orders, func(i int) any {
		return bson.D{{Key: "_id", Value: int64(i)}, {Key: "items", Value: bson.A{
			bson.D{{Key: "sku", Value: "s-" + fmt.Sprint(i%17)}, {Key: "qty", Value: int32(1 + i%4)}, {Key: "price", Value: 9.99}},
			bson.D{{Key: "sku", Value: "gift"}, {Key: "qty", Value: int32(1)}, {Key: "price", Value: 0.0}},
		}}, {Key: "total", Value: float64(i%300) + 0.5}, {Key: "note", Value: "«quoted» \"x\" \\ \x01"}}
	})
	insertAll(ctx, t, b.Collection(unicodeColl), n.unicode, func(i int) any {
		return bson.D{{Key: "_id", Value: fmt.Sprintf("键-%d", i)}, {Key: "ключ", Value: "значение"}, {Key: "emoji", Value: "🙂🙃"}}
	})
	if !s.ferret {
		must(t, b.CreateCollection(ctx, "validated", options.CreateCollection().
			SetValidator(bson.D{{Key: "$jsonSchema", Value: bson.D{{Key: "required", Value: bson.A{"name"}}}}}).
			SetCollation(&options.Collation{Locale: "fr", Strength: 2})))
		insertAll(ctx, t, b.Collection("validated"), 20, func(i int) any {
			return bson.D{{Key: "_id", Value: i}, {Key: "name", Value: fmt.Sprintf("élan %d", i)}}
		})
		must(t, b.CreateCollection(ctx, "metrics", options.CreateCollection().SetTimeSeriesOptions(options.TimeSeries().SetTimeField("ts").SetMetaField("host"))))
		insertAll(ctx, t, b.Collection("metrics"), 50, func(i int) any {
			return bson.D{{Key: "ts", Value: primitive.NewDateTimeFromTime(base.Add(time.Duration(i) * time.Minute))}, {Key: "host", Value: fmt.Sprintf("h%d", i%3)}, {Key: "cpu", Value: float64(i) / 10}}
		})
		must(t, b.CreateView(ctx, "bigOrders", "orders", bson.A{bson.D{{Key: "$match", Value: bson.D{{Key: "total", Value: bson.D{{Key: "$gt", Value: 100}}}}}}}))
	}
}

type collSnap struct {
	Type    string
	Options string
	Indexes []string
	Docs    []string
}

type mongoSnapshot map[string]map[string]collSnap // database → collection → contents

func extJSON(t testing.TB, v any) string {
	raw, err := bson.MarshalExtJSON(v, true, false)
	must(t, err)
	return string(raw)
}

func (s *mongoService) Snapshot(ctx context.Context, t *testing.T) any {
	cl := s.client(ctx, t)
	defer func() { _ = cl.Disconnect(ctx) }()
	an, bn := s.dbs(t)
	snap := mongoSnapshot{}
	for _, dn := range []string{an, bn} {
		db := cl.Database(dn)
		colls, err := collections(ctx, db)
		must(t, err)
		snap[dn] = map[string]collSnap{}
		for _, c := range colls {
			cs := collSnap{Type: c.Type, Options: extJSON(t, c.Options)}
			if c.Type != "view" {
				idx, err := indexes(ctx, db.Collection(c.Name))
				must(t, err)
				for _, ix := range idx {
					clean, err := without(ix, "v")
					must(t, err)
					cs.Indexes = append(cs.Indexes, extJSON(t, clean))
				}
				sort.Strings(cs.Indexes)
			}
			cur, err := db.Collection(c.Name).Find(ctx, bson.D{})
			must(t, err)
			for cur.Next(ctx) {
				cs.Docs = append(cs.Docs, extJSON(t, cur.Current))
			}
			must(t, cur.Err())
			sort.Strings(cs.Docs)
			snap[dn][c.Name] = cs
		}
	}
	return snap
}

func (s *mongoService) Damage(ctx context.Context, t *testing.T) {
	cl := s.client(ctx, t)
	defer func() { _ = cl.Disconnect(ctx) }()
	an, bn := s.dbs(t)
	a, b := cl.Database(an), cl.Database(bn)
	must(t, a.Collection("users").Drop(ctx))
	_, err := b.Collection("orders").UpdateMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: 10}}}}, bson.D{{Key: "$set", Value: bson.D{{Key: "total", Value: -1.0}}}})
	must(t, err)
	_, err = a.Collection("files").InsertOne(ctx, bson.D{{Key: "_id", Value: "intruder"}})
	must(t, err)
	_, err = a.Collection("events").Indexes().DropOne(ctx, "kind_1")
	must(t, err)
	must(t, b.Collection(unicodeColl).Drop(ctx))
	if !s.ferret {
		must(t, b.Collection("bigOrders").Drop(ctx))
		_, err = b.Collection("metrics").InsertOne(ctx, bson.D{{Key: "ts", Value: primitive.NewDateTimeFromTime(time.Now())}, {Key: "host", Value: "intruder"}})
		must(t, err)
	}
}

// compareSnapshots describes the first difference briefly (DeepCompare
// would print 100k documents).
func compareSnapshots(want, got any) string {
	if reflect.DeepEqual(want, got) {
		return ""
	}
	w, g := want.(mongoSnapshot), got.(mongoSnapshot)
	for _, db := range unionKeys(w, g) {
		for _, c := range unionKeys(w[db], g[db]) {
			wc, inW := w[db][c]
			gc, inG := g[db][c]
			switch {
			case !inW:
				return fmt.Sprintf("%s.%s should not exist", db, c)
			case !inG:
				return fmt.Sprintf("%s.%s is missing", db, c)
			case wc.Type != gc.Type || wc.Options != gc.Options:
				return fmt.Sprintf("%s.%s: type/options want %s %s, got %s %s", db, c, wc.Type, wc.Options, gc.Type, gc.Options)
			case !reflect.DeepEqual(wc.Indexes, gc.Indexes):
				return fmt.Sprintf("%s.%s: indexes want %v, got %v", db, c, wc.Indexes, gc.Indexes)
			case len(wc.Docs) != len(gc.Docs):
				return fmt.Sprintf("%s.%s: %d documents, want %d", db, c, len(gc.Docs), len(wc.Docs))
			}
			for i := range wc.Docs {
				if wc.Docs[i] != gc.Docs[i] {
					return fmt.Sprintf("%s.%s: document want %s, got %s", db, c, wc.Docs[i], gc.Docs[i])
				}
			}
		}
	}
	return "snapshots differ"
}

func unionKeys[V any](a, b map[string]V) []string {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestFerretDBSuite runs the shared round-trip suite against the FerretDB
// stand-in; RoundTrip moves 102,100 documents in five collections of two
// databases.
func TestFerretDBSuite(t *testing.T) {
	svc := ferretService(t)
	svc.big = true
	enginetest.Run(t, New(), svc, enginetest.Options{Compare: compareSnapshots, Restore: engines.RestoreOptions{DropPrevious: true}, Timeout: 10 * time.Minute, StagingOpen: 2})
}

// TestRealMongoSuite runs the same suite against a real MongoDB, with what
// FerretDB v1 lacks: Decimal128, views, validators, collations and
// time-series collections.
func TestRealMongoSuite(t *testing.T) {
	raw := os.Getenv("CAPSULE_TEST_MONGO_URL")
	if raw == "" {
		t.Skip("CAPSULE_TEST_MONGO_URL is not set: the suite ran against the FerretDB stand-in only (set it to mongodb://USER@HOST:27017/?authSource=admin, with CAPSULE_TEST_MONGO_PASSWORD, to run it against a real MongoDB)")
	}
	svc := &mongoService{url: raw, pass: os.Getenv("CAPSULE_TEST_MONGO_PASSWORD"), big: true, tags: map[string]string{}}
	t.Run("DropPrevious", func(t *testing.T) {
		enginetest.Run(t, New(), svc, enginetest.Options{Compare: compareSnapshots, Restore: engines.RestoreOptions{DropPrevious: true}})
	})
	t.Run("KeepPrevious", func(t *testing.T) { keepPrevious(t, svc) })
}

// TestKeepsPreviousCollections: without DropPrevious each replaced
// collection is kept beside the restored one and reported as Previous.
func TestKeepsPreviousCollections(t *testing.T) { keepPrevious(t, ferretService(t)) }

func keepPrevious(t *testing.T, svc *mongoService) {
	ctx := context.Background()
	svc.Seed(ctx, t)
	want := svc.Snapshot(ctx, t).(mongoSnapshot)
	store, info := enginetest.Backup(ctx, t, New(), svc.Source(t))
	svc.Damage(ctx, t)
	damaged := svc.Snapshot(ctx, t).(mongoSnapshot)
	rinfo, err := New().Restore(ctx, store.RestoreJob(t, "keep", svc.Source(t), info, engines.RestoreOptions{}))
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	got := svc.Snapshot(ctx, t).(mongoSnapshot)
	an, bn := svc.dbs(t)
	prevs := strings.Split(rinfo.Previous, ",")
	// users and the unicode collection were dropped by the damage: nothing
	// to keep. events, files and orders were live.
	wantPrev := map[string]string{}
	for _, p := range prevs {
		db, coll, _ := strings.Cut(p, ".")
		base, _, ok := strings.Cut(coll, "_capsule_prev_")
		if !ok {
			t.Fatalf("Previous %q is not a kept collection", p)
		}
		wantPrev[db+"."+base] = coll
	}
	for _, k := range []string{an + ".events", an + ".files", bn + ".orders"} {
		if wantPrev[k] == "" {
			t.Errorf("Previous %q does not name %s", rinfo.Previous, k)
		}
	}
	for key, prev := range wantPrev {
		db, coll, _ := strings.Cut(key, ".")
		kept, ok := got[db][prev]
		if !ok {
			t.Fatalf("kept collection %s.%s is missing", db, prev)
		}
		if !reflect.DeepEqual(kept.Docs, damaged[db][coll].Docs) {
			t.Errorf("kept collection %s.%s does not hold the replaced data", db, prev)
		}
		delete(got[db], prev)
	}
	if diff := compareSnapshots(want, got); diff != "" {
		t.Fatalf("restored data differs: %s", diff)
	}
}

// verifyWatcher wraps the artifacts of a corrupt backup and, when the
// corruption is found, lists the target databases: nothing may have been
// created there yet.
type verifyWatcher struct {
	*enginetest.Store
	check func()
}

func (v *verifyWatcher) Verify(ctx context.Context, name string) error {
	err := v.Store.Verify(ctx, name)
	var ce *engines.ChecksumError
	if errors.As(err, &ce) {
		v.check()
	}
	return err
}

// TestCorruptArtifactCreatesNothing: a corrupt artifact is refused before
// any collection is created on the target.
func TestCorruptArtifactCreatesNothing(t *testing.T) {
	svc := ferretService(t)
	ctx := context.Background()
	svc.Seed(ctx, t)
	store, info := enginetest.Backup(ctx, t, New(), svc.Source(t))
	svc.Damage(ctx, t)
	before := svc.Snapshot(ctx, t)
	names := store.Names()
	corrupt := store.Clone()
	corrupt.Flip(t, names[len(names)-1])
	checked := false
	job := corrupt.RestoreJob(t, "bad", svc.Source(t), info, engines.RestoreOptions{})
	job.Artifacts = &verifyWatcher{Store: corrupt, check: func() {
		checked = true
		if diff := compareSnapshots(before, svc.Snapshot(ctx, t)); diff != "" {
			t.Errorf("when the corruption was found the target had changed already: %s", diff)
		}
	}}
	_, err := New().Restore(ctx, job)
	var ce *engines.ChecksumError
	if !errors.As(err, &ce) || !checked {
		t.Fatalf("Restore of a corrupt backup: err = %v (verified: %v)", err, checked)
	}
}

// TestSecretsNeverLeak: the password goes to the server, and never to a
// process's argv, a log line, the BackupInfo, an artifact or an error.
func TestSecretsNeverLeak(t *testing.T) {
	svc := ferretService(t)
	ctx := context.Background()
	svc.Seed(ctx, t)
	pw := svc.pass
	var logs lockedBuffer
	logger := logrus.New()
	logger.SetOutput(&logs)
	logger.SetFormatter(&logrus.JSONFormatter{})
	logger.SetLevel(logrus.DebugLevel)
	stop := enginetest.WatchArgv(t, pw, 10*time.Millisecond)
	store := enginetest.NewStore()
	info, err := New().Backup(ctx, &engines.BackupJob{ID: "bk", Source: svc.Source(t), Artifacts: store, Log: logger})
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	raw, _ := bson.MarshalExtJSON(info, false, false)
	if bytes.Contains(raw, []byte(pw)) {
		t.Errorf("BackupInfo holds the password")
	}
	for _, n := range store.Names() {
		if bytes.Contains(store.Bytes(n), []byte(pw)) {
			t.Errorf("artifact %s holds the password", n)
		}
	}
	svc.Damage(ctx, t)
	job := store.RestoreJob(t, "sec", svc.Source(t), *info, engines.RestoreOptions{DropPrevious: true})
	job.Log = logger
	if _, err := New().Restore(ctx, job); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	stop()
	if logs.Len() == 0 {
		t.Fatalf("no log captured")
	}
	if bytes.Contains(logs.Bytes(), []byte(pw)) {
		t.Errorf("a log line holds the password")
	}
	// A failing connection does not echo the password either.
	bad := svc.Source(t)
	bad.Config = map[string]any{"url": "mongodb://capsule@127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300", "databases": []any{"x"}}
	_, err = New().Backup(ctx, &engines.BackupJob{ID: "bk2", Source: bad, Artifacts: enginetest.NewStore(), Log: logger})
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Errorf("Backup against a closed port: err = %v", err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

func TestValidateNamesTheSetting(t *testing.T) {
	cases := []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"databases": "all"}, "url"},
		{map[string]any{"url": "postgres://h", "databases": "all"}, "url"},
		{map[string]any{"url": "mongodb://u:hunter2@h:27017/", "databases": "all"}, "url"},
		{map[string]any{"url": "mongodb://h:27017/"}, "databases"},
		{map[string]any{"url": "mongodb://h:27017/", "databases": "some"}, "databases"},
		{map[string]any{"url": "mongodb://h:27017/", "databases": []any{}}, "databases"},
		{map[string]any{"url": "mongodb://h:27017/", "databases": []any{"a/b"}}, "databases"},
		{map[string]any{"url": "mongodb://h:27017/", "databases": []any{"admin"}}, "databases"},
		{map[string]any{"url": "mongodb://h:27017/", "databases": 3}, "databases"},
		{map[string]any{"url": "mongodb://h:27017/", "databases": "all", "batchSize": -1}, "batchSize"},
		{map[string]any{"url": "mongodb://h:27017/", "databases": "all", "bogus": 1}, "bogus"},
	}
	for _, tc := range cases {
		err := New().Validate(engines.Source{Name: "s", Engine: Name, Config: tc.cfg})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Validate error echoes the password: %v", err)
		}
	}
	for _, dbs := range []any{"all", []any{"cnvrg", "Jobs-2"}} {
		ok := map[string]any{"url": "mongodb://backup@mongo:27017/?authSource=admin", "passwordFile": "/run/secret", "databases": dbs}
		if err := New().Validate(engines.Source{Name: "s", Engine: Name, Config: ok}); err != nil {
			t.Errorf("Validate(%v) = %v", ok, err)
		}
	}
}

// Staging lists the side collections in the test's databases
// (enginetest.StagingLister).
func (s *mongoService) Staging(ctx context.Context, t *testing.T) []string {
	cl := s.client(ctx, t)
	defer func() { _ = cl.Disconnect(ctx) }()
	an, bn := s.dbs(t)
	var left []string
	for _, dn := range []string{an, bn} {
		colls, err := collections(ctx, cl.Database(dn))
		must(t, err)
		for _, c := range colls {
			if strings.HasPrefix(c.Name, "capsule_tmp_") {
				left = append(left, dn+"."+c.Name)
			}
		}
	}
	return left
}
