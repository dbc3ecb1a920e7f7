package scanner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/scanner"
	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// tenants is two namespaces that share a worker fleet and do not trust
// each other: each has the sample CnvrgApp (PostgreSQL only), its own
// database, its own Secrets and its own bucket. The attacker's namespace
// sorts first, so that "the first Secret wins" would pick the attacker's.
type tenants struct {
	attacker, victim *fixture
}

func newTenants(t *testing.T) *tenants {
	id := randHex(3)
	return &tenants{attacker: newFixtureIn(t, "capsule-a-"+id), victim: newFixtureIn(t, "capsule-v-"+id)}
}

func (f *fixture) pgPlan() string  { return f.ns + "/cnvrg-app/pg" }
func (f *fixture) cluster() string { return f.ns + "/cnvrg-app" }

// pgOnly is the sample CnvrgApp with only its PostgreSQL block backed up,
// after edit.
func (f *fixture) pgOnly(edit func(u *unstructured.Unstructured)) {
	f.app("cnvrg-app", func(u *unstructured.Unstructured) {
		set(f.t, u, false, "spec", "dbs", "redis", "backup", "enabled")
		if edit != nil {
			edit(u)
		}
	})
}

// replica runs one replica with workers over both namespaces.
func (ts *tenants) replica(t *testing.T, rec *recorder, log logrus.FieldLogger) *replica {
	return startReplica(t, "replica-a", rec, true, scanner.Config{
		Dynamic: ts.victim.k.dyn, Kube: ts.victim.k.cs, Namespaces: []string{ts.attacker.ns, ts.victim.ns},
		HostFor: loopback, Log: log,
	})
}

// submit writes req into b and waits until a watcher of the test finishes
// it; it returns the result from the bucket.
func submit(t *testing.T, rec *recorder, b bucket.Bucket, req *requests.Request) requests.Result {
	t.Helper()
	if err := client.Submit(context.Background(), b, req); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 60*time.Second, "request "+req.ID+" to finish", func() bool { return rec.finished[req.ID] != "" })
	data, _, err := bucket.GetBytes(context.Background(), b, requests.ResultKey(req.ID))
	if err != nil {
		t.Fatalf("result of %s: %v", req.ID, err)
	}
	var res requests.Result
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

func wantRejected(t *testing.T, res requests.Result, substr string) {
	t.Helper()
	if res.Status != requests.StatusRejected || !strings.Contains(res.Error, substr) {
		t.Errorf("request %s ended %s (%q), want rejected with %q", res.ID, res.Status, res.Error, substr)
	}
}

// keysUnder lists the keys under prefix in b.
func keysUnder(t *testing.T, b bucket.Bucket, prefix string) []string {
	t.Helper()
	var keys []string
	if err := bucket.Walk(context.Background(), b, prefix, func(o bucket.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// dbState describes a tenant's database: its oid (a restore's swap makes
// a new database under the name), its rows, and the databases named like
// it (a restore's side or previous database).
func dbState(t *testing.T, db string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname="+db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var oid uint32
	var rows, sum string
	var dbs []string
	if err := conn.QueryRow(ctx, `SELECT oid FROM pg_database WHERE datname = $1`, db).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*)::text, md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM runs`).Scan(&rows, &sum); err != nil {
		t.Fatal(err)
	}
	r, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY datname`, db+"%")
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var d string
		_ = r.Scan(&d)
		dbs = append(dbs, d)
	}
	r.Close()
	return fmt.Sprintf("oid %d, %s rows, md5 %s, databases %v", oid, rows, sum, dbs)
}

// markDB adds a row only this tenant's database has.
func markDB(t *testing.T, db, note string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname="+db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO runs VALUES (0, $1)`, note); err != nil {
		t.Fatal(err)
	}
}

// TestTenantCannotUseAnotherTenantsSource: requests written into the
// attacker's own bucket that name the victim's source, for a backup
// (exfiltration) or as a restore's target with dropPrevious (destruction),
// or that restore a backup the attacker's bucket says was made from the
// victim's source, all end rejected; nothing of the victim's lands in the
// attacker's bucket and the victim's database is untouched.
func TestTenantCannotUseAnotherTenantsSource(t *testing.T) {
	ts := newTenants(t)
	a, v := ts.attacker, ts.victim
	a.pgOnly(nil)
	v.pgOnly(nil)
	markDB(t, v.pgDB, "victim-"+randHex(4))
	markDB(t, a.pgDB, "attacker-"+randHex(4))
	rec := newRecorder()
	ts.replica(t, rec, nil)
	// Each plan's current slot is caught up at once: a backup of each
	// tenant in its own bucket shows both buckets are served.
	rec.wait(t, 90*time.Second, "a scheduled backup of each tenant", func() bool {
		return len(rec.succeeded(a.pgPlan())) > 0 && len(rec.succeeded(v.pgPlan())) > 0
	})
	attackerBackup := rec.succeeded(a.pgPlan())[0]
	victimBefore := dbState(t, v.pgDB)

	t.Run("backup of the victim's source into the attacker's bucket", func(t *testing.T) {
		res := submit(t, rec, a.bucket, &requests.Request{Kind: requests.KindBackup, Cluster: v.cluster(), Source: v.pgPlan()})
		wantRejected(t, res, fmt.Sprintf("source %q is not served by this bucket", v.pgPlan()))
		for _, k := range keysUnder(t, a.bucket, "backups/") {
			if strings.Contains(k, v.ns) {
				t.Errorf("the victim's data is in the attacker's bucket: %s", k)
			}
		}
	})
	t.Run("restore into the victim's source with dropPrevious", func(t *testing.T) {
		res := submit(t, rec, a.bucket, &requests.Request{Kind: requests.KindRestore, BackupID: attackerBackup, Target: v.pgPlan(), DropPrevious: true})
		wantRejected(t, res, fmt.Sprintf("target: source %q is not served by this bucket", v.pgPlan()))
	})
	t.Run("verify into the victim's server", func(t *testing.T) {
		res := submit(t, rec, a.bucket, &requests.Request{Kind: requests.KindVerify, BackupID: attackerBackup, Target: v.pgPlan()})
		wantRejected(t, res, fmt.Sprintf("target: source %q is not served by this bucket", v.pgPlan()))
	})
	// A backup in the attacker's bucket that says it was made from the
	// victim's source (the attacker wrote it, consistent with its key).
	forged := forgeBackup(t, a.bucket, attackerBackup, v.cluster(), v.pgPlan())
	t.Run("restore of a backup recorded as the victim's, into the attacker's own source", func(t *testing.T) {
		res := submit(t, rec, a.bucket, &requests.Request{Kind: requests.KindRestore, BackupID: forged, Target: a.pgPlan()})
		wantRejected(t, res, fmt.Sprintf("source %q is not served by this bucket", v.pgPlan()))
	})
	t.Run("restore of a backup recorded as the victim's, to its own source", func(t *testing.T) {
		res := submit(t, rec, a.bucket, &requests.Request{Kind: requests.KindRestore, BackupID: forged, DropPrevious: true})
		wantRejected(t, res, fmt.Sprintf("target: source %q is not served by this bucket", v.pgPlan()))
	})
	t.Run("the victim's database is untouched", func(t *testing.T) {
		if got := dbState(t, v.pgDB); got != victimBefore {
			t.Errorf("the victim's database changed:\nbefore %s\nafter  %s", victimBefore, got)
		}
	})
	t.Run("each tenant's own requests still run", func(t *testing.T) {
		res := submit(t, rec, v.bucket, &requests.Request{Kind: requests.KindVerify, BackupID: rec.succeeded(v.pgPlan())[0]})
		if res.Status != requests.StatusSucceeded {
			t.Errorf("the victim's verification ended %s: %s", res.Status, res.Error)
		}
	})
}

// forgeBackup copies backup id of b, as its owner could, into a backup
// that claims cluster and source: index and artifacts under the keys
// those name. It returns the new backup's id.
func forgeBackup(t *testing.T, b bucket.Bucket, id, cluster, source string) string {
	t.Helper()
	ctx := context.Background()
	e, err := index.Find(ctx, b, id)
	if err != nil {
		t.Fatal(err)
	}
	x := *e.BackupIndex
	x.BackupID, x.RequestID = "forged-"+randHex(6), "forged-"+randHex(6)
	x.Cluster, x.Source, x.Plan = cluster, source, ""
	x.Artifacts = slices.Clone(x.Artifacts)
	for i, art := range x.Artifacts {
		data, _, err := bucket.GetBytes(ctx, b, art.Key)
		if err != nil {
			t.Fatal(err)
		}
		x.Artifacts[i].Key = requests.ArtifactKey(cluster, source, x.BackupID, x.Attempt, art.Name)
		if _, err := bucket.PutBytes(ctx, b, x.Artifacts[i].Key, data, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := index.Write(ctx, b, &x); err != nil {
		t.Fatal(err)
	}
	return x.BackupID
}

// logBuffer is a logger that writes to t.Log and keeps every line.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   *testing.T
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogBuffer(t *testing.T) (*logBuffer, logrus.FieldLogger) {
	lb := &logBuffer{t: t}
	l := logrus.New()
	l.SetOutput(lb)
	l.SetLevel(logrus.DebugLevel)
	return lb, l
}

// TestTenantSameBucketOtherKeys: the attacker names the victim's bucket
// (same URL) in a Secret with wrong keys. The two get separate clients,
// and the victim's scheduled backups go on succeeding; no key is logged.
func TestTenantSameBucketOtherKeys(t *testing.T) {
	ts := newTenants(t)
	a, v := ts.attacker, ts.victim
	wrongAccess, wrongSecret := "attacker-"+randHex(4), "wrong-"+randHex(12)
	a.secret("shared-storage", map[string]string{
		"CNVRG_STORAGE_TYPE": "minio", "CNVRG_STORAGE_ENDPOINT": a.srv.Endpoint, "CNVRG_STORAGE_REGION": a.srv.Region,
		"CNVRG_STORAGE_BUCKET": v.bucketName, "CNVRG_STORAGE_ACCESS_KEY": wrongAccess, "CNVRG_STORAGE_SECRET_KEY": wrongSecret,
	})
	a.pgOnly(func(u *unstructured.Unstructured) {
		set(t, u, "shared-storage", "spec", "dbs", "pg", "backup", "bucketRef")
		set(t, u, "2s", "spec", "dbs", "pg", "backup", "period")
	})
	v.pgOnly(func(u *unstructured.Unstructured) {
		set(t, u, "2s", "spec", "dbs", "pg", "backup", "period")
		set(t, u, int64(3), "spec", "dbs", "pg", "backup", "rotation")
	})
	logs, log := newLogBuffer(t)
	rec := newRecorder()
	r := ts.replica(t, rec, log)
	allSee(t, rec, []*replica{r}, "both plans", func(ps []scanner.Plan) bool {
		_, okA := findPlan(ps, a.pgPlan())
		_, okV := findPlan(ps, v.pgPlan())
		return okA && okV
	})
	rec.mu.Lock()
	before := len(rec.succeeded(v.pgPlan()))
	rec.mu.Unlock()
	rec.wait(t, 60*time.Second, "two more successful backups of the victim", func() bool {
		return len(rec.succeeded(v.pgPlan())) >= before+2
	})
	t.Run("two clients for one URL", func(t *testing.T) {
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range r.sc.Buckets() {
				if !yield(k) {
					return
				}
			}
		})
		url := "s3://" + v.bucketName + "/capsule/?"
		if len(keys) != 2 || !strings.HasPrefix(keys[0], url) || !strings.HasPrefix(keys[1], url) || keys[0] == keys[1] {
			t.Errorf("bucket clients %v, want two for %s", keys, url)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if got := rec.fleets[r.name]; len(got) != 2 {
			t.Errorf("the fleet serves %v, want both clients", got)
		}
	})
	t.Run("the victim's backups are in its bucket", func(t *testing.T) {
		if got := planBackups(t, v.bucket, v.cluster(), v.pgPlan()); len(got) == 0 {
			t.Error("no backup of the victim in its bucket")
		}
	})
	t.Run("no key in the logs", func(t *testing.T) {
		out := logs.String()
		for _, s := range []string{wrongAccess, wrongSecret, v.srv.SecretKey} {
			if strings.Contains(out, s) {
				t.Errorf("the logs hold a key (%.6s…)", s)
			}
		}
	})
}

// TestSvcNameIsADNSLabel: a svcName that is not a Service's name (a
// host:port, user@host, a path, an address with a path) is refused with a
// Warning Event naming the field, and no plan is made of it.
func TestSvcNameIsADNSLabel(t *testing.T) {
	f := newFixture(t)
	bad := map[string]string{
		"app-slash": "postgres/x",
		"app-at":    "evil@postgres",
		"app-colon": "postgres:6432",
		"app-imds":  "169.254.169.254/latest/meta-data",
		"app-ip":    "10.0.0.1",
	}
	for name, svc := range bad {
		f.app(name, func(u *unstructured.Unstructured) {
			set(t, u, false, "spec", "dbs", "redis", "backup", "enabled")
			set(t, u, svc, "spec", "dbs", "pg", "svcName")
		})
	}
	rec := newRecorder()
	// The default HostFor (<svcName>.<namespace>), as in a cluster.
	r := startReplica(t, "replica-a", rec, false, scanner.Config{Dynamic: f.k.dyn, Kube: f.k.cs, Namespaces: []string{f.ns}})
	seen := func(app string) bool {
		for _, p := range r.sc.Problems() {
			if p.App.Name == app {
				return true
			}
		}
		_, ok := findPlan(r.sc.Plans(), f.ns+"/"+app+"/pg")
		return ok
	}
	rec.wait(t, 30*time.Second, "a plan or a problem for every CnvrgApp", func() bool {
		for app := range bad {
			if !seen(app) {
				return false
			}
		}
		return true
	})
	events, err := f.k.cs.CoreV1().Events(f.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for app, svc := range bad {
		t.Run(app, func(t *testing.T) {
			if p, ok := findPlan(r.sc.Plans(), f.ns+"/"+app+"/pg"); ok {
				t.Errorf("a plan was made for svcName %q: host %s, url %v", svc, p.Host, p.SourceConfig["url"])
			}
			found := false
			for _, p := range r.sc.Problems() {
				if p.App.Name == app && p.Field == "spec.dbs.pg.svcName" && strings.Contains(p.Message, fmt.Sprintf("%q", svc)) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem naming spec.dbs.pg.svcName for %q: %v", svc, r.sc.Problems())
			}
			found = false
			for _, e := range events.Items {
				if e.InvolvedObject.Name == app && e.Reason == scanner.ReasonInvalidBackupPlan && e.Type == corev1.EventTypeWarning &&
					strings.Contains(e.Message, "spec.dbs.pg.svcName") {
					found = true
				}
			}
			if !found {
				t.Errorf("no Warning Event naming spec.dbs.pg.svcName on %s", app)
			}
		})
	}
}

// apiCalls records the requests a client makes for Secrets.
type apiCalls struct {
	mu    sync.Mutex
	calls []string
	rec   *recorder
}

func (c *apiCalls) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		if strings.Contains(req.URL.Path, "/secrets") {
			c.mu.Lock()
			c.calls = append(c.calls, req.Method+" "+req.URL.RequestURI())
			c.mu.Unlock()
			c.rec.wake()
		}
		return rt.RoundTrip(req)
	})
}

func (c *apiCalls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestScannerNeedsOnlyGetOnNamedSecrets runs the scanner and its workers
// as a ServiceAccount that may only get Secrets, and only in the two
// tenants' namespaces: it still makes both tenants' plans and backups; it
// never lists or watches Secrets, and reads only the ones the CnvrgApps
// name, never one in a third namespace it also watches.
func TestScannerNeedsOnlyGetOnNamedSecrets(t *testing.T) {
	ts := newTenants(t)
	a, v := ts.attacker, ts.victim
	k := a.k
	ctx := context.Background()
	a.pgOnly(nil)
	v.pgOnly(nil)
	bystander := "capsule-b-" + randHex(3)
	if _, err := k.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: bystander}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.cs.CoreV1().Namespaces().Delete(context.Background(), bystander, metav1.DeleteOptions{}) })
	if _, err := k.cs.CoreV1().Secrets(bystander).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bystander-secret"},
		StringData: map[string]string{"token": "bystander-" + randHex(8)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The ServiceAccount: CnvrgApps and Events everywhere, get on Secrets
	// in the tenants' namespaces only.
	sa := "capsule-scanner-" + randHex(3)
	user := "system:serviceaccount:" + v.ns + ":" + sa
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: v.ns}}
	rbac := k.cs.RbacV1()
	if _, err := k.cs.CoreV1().ServiceAccounts(v.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{scanner.Group}, Resources: []string{scanner.Resource}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rbac.ClusterRoleBindings().Delete(context.Background(), sa, metav1.DeleteOptions{})
		_ = rbac.ClusterRoles().Delete(context.Background(), sa, metav1.DeleteOptions{})
	})
	for _, ns := range []string{a.ns, v.ns} {
		if _, err := rbac.Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}},
		}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := rbac.RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	rec := newRecorder()
	calls := &apiCalls{rec: rec}
	rc := rest.CopyConfig(k.rc)
	rc.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + v.ns, "system:authenticated"}}
	rc.Wrap(calls.wrap)
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	// RBAC holds: the ServiceAccount cannot read the bystander's Secret,
	// nor list the tenants' (the request goes through the recorder too,
	// so it is not counted below).
	if _, err := cs.CoreV1().Secrets(bystander).Get(ctx, "bystander-secret", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("get the bystander's Secret as %s: %v, want forbidden", user, err)
	}
	if _, err := cs.CoreV1().Secrets(v.ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list the victim's Secrets as %s: %v, want forbidden", user, err)
	}
	probes := len(calls.list())

	cfg := scanner.Config{Dynamic: dyn, Kube: cs, Namespaces: []string{a.ns, v.ns, bystander}, HostFor: loopback}
	secretRefresh(&cfg, 300*time.Millisecond)
	r := startReplica(t, "replica-a", rec, true, cfg)
	named := map[string]bool{}
	for _, ns := range []string{a.ns, v.ns} {
		for _, name := range []string{"pg-creds", "cp-object-storage"} {
			named[ns+"/"+name] = true
		}
	}
	getsOf := func(key string) int {
		ns, name, _ := strings.Cut(key, "/")
		n := 0
		for _, c := range calls.list()[probes:] {
			if c == "GET /api/v1/namespaces/"+ns+"/secrets/"+name {
				n++
			}
		}
		return n
	}
	rec.wait(t, 90*time.Second, "both tenants' plans and a backup of each", func() bool {
		_, okA := findPlan(r.sc.Plans(), a.pgPlan())
		_, okV := findPlan(r.sc.Plans(), v.pgPlan())
		return okA && okV && len(rec.succeeded(a.pgPlan())) > 0 && len(rec.succeeded(v.pgPlan())) > 0
	})
	rec.wait(t, 30*time.Second, "every named Secret read again after a refresh", func() bool {
		for key := range named {
			if getsOf(key) < 2 {
				return false
			}
		}
		return true
	})
	r.stop()
	got := calls.list()[probes:]
	t.Run("only gets of the Secrets the CnvrgApps name", func(t *testing.T) {
		for _, c := range got {
			method, uri, _ := strings.Cut(c, " ")
			tail, ok := strings.CutPrefix(uri, "/api/v1/namespaces/")
			ns, name, _ := strings.Cut(tail, "/secrets/")
			if method != http.MethodGet || !ok || strings.ContainsAny(name, "/?") || !named[ns+"/"+name] {
				t.Errorf("the scanner asked for %s", c)
			}
			if strings.Contains(uri, bystander) {
				t.Errorf("the scanner asked for a Secret of the bystander's namespace: %s", c)
			}
		}
	})
	t.Run("no problem reported", func(t *testing.T) {
		if p := r.sc.Problems(); len(p) != 0 {
			t.Errorf("problems: %v", p)
		}
	})
}

// TestWorkerScanServesConfigSourcesOnlyInItsBucket runs "capsule worker
// --scan --bucket F --config --listen" with a files source in its
// configuration: a request written into a tenant's bucket cannot back
// that source up (the worker's own files into the tenant's bucket), a
// request in F cannot use the tenant's plan, and each bucket still runs
// its own. --listen serves the probes, the metrics of every bucket, and
// the API of F.
func TestWorkerScanServesConfigSourcesOnlyInItsBucket(t *testing.T) {
	f := newFixture(t)
	bin := f.k.binary(t)
	f.pgOnly(nil)
	fixedName := f.srv.NewBucket(t)
	fixed := f.openBucket(fixedName)
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "worker-only.txt"), []byte("the worker's own data"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "capsule.yaml")
	if err := os.WriteFile(conf, []byte("sources:\n  tree:\n    engine: files\n    path: "+tree+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "worker", "--scan", "--bucket", f.srv.URL(fixedName, "capsule/"), "--config", conf,
		"--kubeconfig", f.k.conf, "--namespaces", f.ns, "--service-host", "127.0.0.1",
		"--name", "worker-1", "--poll", "200ms", "--lease", "3s", "--scan-tick", "500ms", "--log-format", "text", "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), f.srv.Env()...)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the worker exits (exitErr says how): every
	// waiter sees it, the cleanup too.
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("worker:\n%s", stderr.String())
		}
	})
	// The process is outside the test: read the results from the buckets,
	// as a user would.
	result := func(b bucket.Bucket, req *requests.Request) requests.Result {
		t.Helper()
		if err := client.Submit(context.Background(), b, req); err != nil {
			t.Fatal(err)
		}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(60 * time.Second)
		for {
			data, _, err := bucket.GetBytes(context.Background(), b, requests.ResultKey(req.ID))
			if err == nil {
				var res requests.Result
				if err := json.Unmarshal(data, &res); err != nil {
					t.Fatal(err)
				}
				return res
			}
			if !errors.Is(err, bucket.ErrNotFound) {
				t.Fatal(err)
			}
			select {
			case <-tick.C:
			case <-exited:
				t.Fatalf("the worker exited: %v", exitErr)
			case <-deadline:
				t.Fatalf("no result for %s %s", req.Kind, req.ID)
			}
		}
	}
	t.Run("the configuration's source from the tenant's bucket", func(t *testing.T) {
		res := result(f.bucket, &requests.Request{Kind: requests.KindBackup, Source: "tree"})
		wantRejected(t, res, `source "tree" is not served by this bucket`)
		for _, k := range keysUnder(t, f.bucket, "backups/") {
			if strings.Contains(k, "tree") {
				t.Errorf("the worker's files are in the tenant's bucket: %s", k)
			}
		}
	})
	t.Run("the tenant's source from the worker's bucket", func(t *testing.T) {
		res := result(fixed, &requests.Request{Kind: requests.KindBackup, Cluster: f.cluster(), Source: f.pgPlan()})
		wantRejected(t, res, fmt.Sprintf("source %q is not served by this bucket", f.pgPlan()))
	})
	t.Run("the configuration's source from the worker's bucket", func(t *testing.T) {
		if res := result(fixed, &requests.Request{Kind: requests.KindBackup, Source: "tree"}); res.Status != requests.StatusSucceeded {
			t.Errorf("backup of tree in the worker's bucket: %s %s", res.Status, res.Error)
		}
	})
	t.Run("the tenant's source from the tenant's bucket", func(t *testing.T) {
		if res := result(f.bucket, &requests.Request{Kind: requests.KindBackup, Cluster: f.cluster(), Source: f.pgPlan()}); res.Status != requests.StatusSucceeded {
			t.Errorf("backup of %s in the tenant's bucket: %s %s", f.pgPlan(), res.Status, res.Error)
		}
	})
	t.Run("--listen: probes, every bucket's metrics, the API of --bucket", func(t *testing.T) {
		m := regexp.MustCompile(`serving the API and the page on (http://[0-9.:]+)/`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatal("the worker did not say where it listens")
		}
		get := func(path string) (int, string) {
			resp, err := http.Get(m[1] + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, body := get(path); code != http.StatusOK {
				t.Errorf("%s: %d %s", path, code, body)
			}
		}
		_, metrics := get("/metrics")
		// Backups in both buckets: the registry hears every watcher.
		if want := `capsule_requests_finished_total{engine="files",kind="Backup",status="succeeded"} 1`; !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
		if want := `capsule_requests_finished_total{engine="postgres",kind="Backup",status="succeeded"}`; !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
		// The API serves --bucket: its own backups, and no backup of the
		// tenant's plan (the request naming that plan there was rejected,
		// and shows as such on a card of its own).
		code, body := get("/v1/clusters")
		var list struct {
			Clusters []struct {
				Name    string `json:"name"`
				Backups int    `json:"backups"`
			} `json:"clusters"`
		}
		if err := json.Unmarshal([]byte(body), &list); code != http.StatusOK || err != nil {
			t.Fatalf("/v1/clusters of --bucket: %d %s (%v)", code, body, err)
		}
		for _, c := range list.Clusters {
			if (c.Name == "default") != (c.Backups > 0) {
				t.Errorf("/v1/clusters of --bucket: cluster %s has %d backups; want backups in default only: %s", c.Name, c.Backups, body)
			}
		}
	})
}
