package scanner_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/engines/redis"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/fleet"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/scanner"
	"github.com/cnvrg/capsule/watcher"
	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"
)

// kubeEnv is the envtest API server (a real kube-apiserver and etcd, with
// the shipped CnvrgApp CRD installed) that this package's tests share;
// each test works in a namespace of its own.
type kubeEnv struct {
	rc   *rest.Config // the administrator's (system:masters)
	dyn  dynamic.Interface
	cs   kubernetes.Interface
	dir  string // removed when the tests end
	conf string // a kubeconfig file for the capsule binary

	build    sync.Once
	bin      string
	buildErr error
}

// kube is nil when KUBEBUILDER_ASSETS is unset.
var kube *kubeEnv

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return m.Run()
	}
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		CRDInstallOptions:     envtest.CRDInstallOptions{Paths: []string{filepath.Join("testdata", "cnvrgapp-crd.yaml")}},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest: start the API server:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "envtest: stop:", err)
		}
	}()
	user, err := env.AddUser(envtest.User{Name: "capsule-test", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest: add a user:", err)
		return 1
	}
	kc, err := user.KubeConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest: kubeconfig:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "capsule-scanner-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	k := &kubeEnv{rc: cfg, dir: dir, conf: filepath.Join(dir, "kubeconfig")}
	if err := os.WriteFile(k.conf, kc, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if k.dyn, err = dynamic.NewForConfig(cfg); err == nil {
		k.cs, err = kubernetes.NewForConfig(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	kube = k
	return m.Run()
}

func needKube(t *testing.T) *kubeEnv {
	t.Helper()
	if kube == nil {
		t.Skip("KUBEBUILDER_ASSETS is not set: run scripts/envtest-assets.sh and export KUBEBUILDER_ASSETS=<repo>/.tools/envtest to run the tests against a real API server")
	}
	return kube
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testLog sends a logger's lines to t.Log.
func testLog(t *testing.T, name string) logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(tWriter{t})
	l.SetLevel(logrus.InfoLevel)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, TimestampFormat: "15:04:05.000", FullTimestamp: true})
	return l.WithField("replica", name)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fixture is one test's world: a namespace with the sample CnvrgApp's
// Secrets, a fresh bucket on the shared S3 server, a fresh PostgreSQL
// database and role, and a redis-server of its own.
type fixture struct {
	t          *testing.T
	k          *kubeEnv
	ns         string
	srv        *s3test.Server
	bucketName string
	bucket     bucket.Bucket // the bucket, scoped to capsule/
	pgUser     string
	pgDB       string
	redisPort  int
}

func newFixture(t *testing.T) *fixture { return newFixtureIn(t, "capsule-"+randHex(4)) }

// newFixtureIn is newFixture in the namespace ns.
func newFixtureIn(t *testing.T, ns string) *fixture {
	k := needKube(t)
	ctx := context.Background()
	f := &fixture{t: t, k: k, ns: ns, srv: s3test.Shared(t)}
	f.bucketName = f.srv.NewBucket(t)
	f.bucket = f.openBucket(f.bucketName)
	if _, err := k.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k.cs.CoreV1().Namespaces().Delete(context.Background(), f.ns, metav1.DeleteOptions{})
	})
	f.pgUser, f.pgDB = newPostgresDB(t)
	redisPW := "pw-" + randHex(12)
	f.redisPort = startRedis(t, redisPW)
	f.secret("pg-creds", map[string]string{
		"POSTGRES_HOST": "postgres", "POSTGRES_DB": f.pgDB, "POSTGRES_USER": f.pgUser, "POSTGRES_PASSWORD": "pw-" + f.pgUser,
	})
	f.secret("redis-creds", map[string]string{
		"CNVRG_REDIS_PASSWORD": redisPW, "REDIS_URL": "redis://:" + redisPW + "@redis",
	})
	f.storageSecret("cp-object-storage", f.bucketName)
	return f
}

// invalidPlanEvents lists the InvalidBackupPlan Events about the object
// named name in the fixture's namespace.
func (f *fixture) invalidPlanEvents(t *testing.T, name string) []corev1.Event {
	t.Helper()
	events, err := f.k.cs.CoreV1().Events(f.ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var found []corev1.Event
	for _, e := range events.Items {
		if e.Reason == scanner.ReasonInvalidBackupPlan {
			found = append(found, e)
		}
	}
	return found
}

func (f *fixture) openBucket(name string) bucket.Bucket {
	b, err := s3.New(context.Background(), s3.Options{
		Bucket: name, Endpoint: f.srv.Endpoint, Region: f.srv.Region, AccessKey: f.srv.AccessKey, SecretKey: f.srv.SecretKey,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return bucket.Prefixed(b, "capsule/")
}

func (f *fixture) secret(name string, data map[string]string) {
	f.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns}, StringData: data}
	if _, err := f.k.cs.CoreV1().Secrets(f.ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) storageSecret(name, bucketName string) {
	f.secret(name, map[string]string{
		"CNVRG_STORAGE_TYPE": "minio", "CNVRG_STORAGE_ENDPOINT": f.srv.Endpoint, "CNVRG_STORAGE_REGION": f.srv.Region,
		"CNVRG_STORAGE_BUCKET": bucketName, "CNVRG_STORAGE_ACCESS_KEY": f.srv.AccessKey, "CNVRG_STORAGE_SECRET_KEY": f.srv.SecretKey,
	})
}

// app creates the sample CnvrgApp (testdata/cnvrgapp.yaml) in the
// fixture's namespace, with redis on the fixture's port, after edit.
func (f *fixture) app(name string, edit func(u *unstructured.Unstructured)) *unstructured.Unstructured {
	f.t.Helper()
	data, err := os.ReadFile("testdata/cnvrgapp.yaml")
	if err != nil {
		f.t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		f.t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetNamespace(f.ns)
	u.SetName(name)
	set(f.t, u, int64(f.redisPort), "spec", "dbs", "redis", "port")
	if edit != nil {
		edit(u)
	}
	out, err := f.k.dyn.Resource(scanner.CnvrgApps()).Namespace(f.ns).Create(context.Background(), u, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// update applies edit to the CnvrgApp's current version.
func (f *fixture) update(name string, edit func(u *unstructured.Unstructured)) {
	f.t.Helper()
	ctx := context.Background()
	for {
		u, err := f.k.dyn.Resource(scanner.CnvrgApps()).Namespace(f.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			f.t.Fatal(err)
		}
		edit(u)
		_, err = f.k.dyn.Resource(scanner.CnvrgApps()).Namespace(f.ns).Update(ctx, u, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "the object has been modified") {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) deleteApp(name string) {
	f.t.Helper()
	if err := f.k.dyn.Resource(scanner.CnvrgApps()).Namespace(f.ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func set(t *testing.T, u *unstructured.Unstructured, v any, fields ...string) {
	t.Helper()
	if err := unstructured.SetNestedField(u.Object, v, fields...); err != nil {
		t.Fatal(err)
	}
}

// replica is one capsule replica as "capsule worker --scan" runs it: a
// scanner and, when it has workers, a fleet of watchers, one per bucket.
type replica struct {
	name   string
	sc     *scanner.Scanner
	fl     *fleet.Fleet
	cancel context.CancelFunc
	done   chan struct{}
}

func loopback(string, string) string { return "127.0.0.1" }

func (f *fixture) replica(name string, rec *recorder, workers bool) *replica {
	f.t.Helper()
	return startReplica(f.t, name, rec, workers, scanner.Config{
		Dynamic: f.k.dyn, Kube: f.k.cs, Namespaces: []string{f.ns}, HostFor: loopback,
	})
}

// startReplica runs a replica with cfg (its clients, namespaces, HostFor,
// SecretRefresh and Log if set; the rest is filled in here) until the test
// ends.
func startReplica(t *testing.T, name string, rec *recorder, workers bool, cfg scanner.Config) *replica {
	t.Helper()
	reg := engines.NewRegistry(postgres.New(), redis.New())
	if cfg.Log == nil {
		cfg.Log = testLog(t, name)
	}
	log := cfg.Log
	cfg.Engines, cfg.Holder, cfg.Tick, cfg.Events = reg, name, 500*time.Millisecond, rec.scannerEvent(name)
	sc, err := scanner.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, sc: sc, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := sc.Run(ctx); err != nil {
			t.Errorf("replica %s: scanner: %v", name, err)
		}
	}()
	if workers {
		r.fl, err = fleet.New(fleet.Config{
			Set: sc, Log: log, Changed: rec.fleetChanged(name),
			New: func(key string, b bucket.Bucket) (fleet.Runner, error) {
				// As "capsule worker --scan" does: each bucket serves
				// only the sources of the plans that name it.
				exec, err := executor.New(executor.Config{Bucket: b, Engines: reg, Sources: bucketSources(sc, key), Worker: name, Log: log})
				if err != nil {
					return nil, err
				}
				return watcher.New(watcher.Config{
					Bucket: b, Runner: exec, Worker: name, Concurrency: 2, Poll: 100 * time.Millisecond,
					Lease: 3 * time.Second, Grace: 5 * time.Second, Log: log, Events: rec.watcherEvent(name),
				})
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.fl.Run(ctx); err != nil {
				t.Errorf("replica %s: fleet: %v", name, err)
			}
		}()
	}
	go func() { wg.Wait(); close(r.done) }()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

// newPostgresDB makes a fresh login role (CREATEDB, not a superuser: the
// least privilege a restore accepts) and a database it owns, with a
// table of rows, on the machine's PostgreSQL (127.0.0.1:5432, trust,
// superuser postgres), and drops both when the test ends.
func newPostgresDB(t *testing.T) (user, db string) { return newPostgresRoleDB(t, "CREATEDB") }

// newPostgresRoleDB is newPostgresDB with the role's attributes (CREATEDB,
// or NOCREATEDB: the platform's application role).
func newPostgresRoleDB(t *testing.T, attrs string) (user, db string) {
	t.Helper()
	ctx := context.Background()
	name := "capsule_scan_" + randHex(4)
	admin, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable")
	if err != nil {
		t.Fatalf("connect to PostgreSQL as postgres: %v", err)
	}
	defer admin.Close(ctx)
	for _, q := range []string{
		`CREATE ROLE ` + name + ` LOGIN ` + attrs + ` PASSWORD 'pw-` + name + `'`,
		`CREATE DATABASE ` + name + ` OWNER ` + name,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		admin, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable")
		if err != nil {
			t.Errorf("drop the test database: %v", err)
			return
		}
		defer admin.Close(ctx)
		rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1`, name+"%")
		if err != nil {
			t.Error(err)
			return
		}
		var dbs []string
		for rows.Next() {
			var d string
			_ = rows.Scan(&d)
			dbs = append(dbs, d)
		}
		rows.Close()
		for _, d := range dbs {
			if _, err := admin.Exec(ctx, `DROP DATABASE "`+d+`" WITH (FORCE)`); err != nil {
				t.Errorf("drop database %s: %v", d, err)
			}
		}
		if _, err := admin.Exec(ctx, `DROP ROLE `+name); err != nil {
			t.Errorf("drop role %s: %v", name, err)
		}
	})
	conn, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname="+name)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE runs (id int PRIMARY KEY, note text);
		INSERT INTO runs SELECT i, md5(i::text) FROM generate_series(1, 2000) i;
		ALTER TABLE runs OWNER TO `+name); err != nil {
		t.Fatal(err)
	}
	return name, name
}

// startRedis runs a redis-server with a password on a free loopback port
// until the test ends, with a few keys in it.
func startRedis(t *testing.T, password string) int {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed (scripts/services.sh installs it)")
	}
	dir := t.TempDir()
	for attempt := 0; attempt < 4; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		conf := filepath.Join(dir, "redis.conf")
		lines := []string{"bind 127.0.0.1", fmt.Sprintf("port %d", port), `save ""`, "appendonly no", "dir " + dir, "requirepass " + password}
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("redis-server", conf)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		c := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), Password: password})
		ready := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if c.Ping(context.Background()).Err() == nil {
				ready = true
				break
			}
			select {
			case <-exited:
				deadline = time.Time{}
			case <-time.After(50 * time.Millisecond):
			}
		}
		if !ready {
			c.Close()
			_ = cmd.Process.Kill()
			<-exited
			continue
		}
		for i := range 200 {
			if err := c.Set(context.Background(), fmt.Sprintf("key:%d", i), randHex(16), 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		return port
	}
	t.Fatal("redis-server did not start")
	return 0
}

// binary builds cmd/capsule once per test process, into the kubeEnv's
// temporary directory.
func (k *kubeEnv) binary(t *testing.T) string {
	t.Helper()
	k.build.Do(func() {
		bin := filepath.Join(k.dir, "capsule")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/capsule")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			k.buildErr = fmt.Errorf("go build ./cmd/capsule: %v\n%s", err, out)
			return
		}
		k.bin = bin
	})
	if k.buildErr != nil {
		t.Fatal(k.buildErr)
	}
	return k.bin
}
