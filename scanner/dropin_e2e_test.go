package scanner_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
	"github.com/cnvrg/capsule/scanner"
	"github.com/jackc/pgx/v5"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// operatorRole is the cnvrg operator's ClusterRole for capsule, exactly
// (pkg/capsule/tmpl/clusterrole.tpl of cnvrg-operator 4.3.34).
var operatorRole = []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims", "secrets"}, Verbs: []string{"list", "get"}}}

// apiCall is one request the binary made to the API server.
type apiCall struct {
	method, path, query string
	status              int
}

// kubeProxy forwards the binary's requests to envtest as the
// ServiceAccount (impersonated: the API server's RBAC decides) and
// records each.
type kubeProxy struct {
	mu    sync.Mutex
	calls []apiCall
}

func (p *kubeProxy) start(t *testing.T, k *kubeEnv, user string, groups []string) string {
	t.Helper()
	rc := rest.CopyConfig(k.rc)
	rc.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	rt, err := rest.TransportFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(rc.Host)
	if err != nil || target.Scheme == "" {
		target, err = url.Parse("https://" + rc.Host)
	}
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		FlushInterval: -1,
		Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			c := apiCall{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery}
			if err == nil {
				c.status = resp.StatusCode
			}
			p.mu.Lock()
			p.calls = append(p.calls, c)
			p.mu.Unlock()
			return resp, err
		}),
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	conf := filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: envtest, cluster: {server: %q}}]
users: [{name: cnvrg-capsule, user: {}}]
contexts: [{name: capsule, context: {cluster: envtest, user: cnvrg-capsule}}]
current-context: capsule
`, srv.URL)
	if err := os.WriteFile(conf, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

func (p *kubeProxy) list() []apiCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]apiCall(nil), p.calls...)
}

// lockedBuffer collects a process's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// plantStaging leaves a staging directory as a worker that died mid
// restore leaves it (no lock, two hours old) in dir. A PostgreSQL restore
// removes such directories in the staging directory it uses, and only
// there.
func plantStaging(t *testing.T, dir string) string {
	t.Helper()
	planted := filepath.Join(dir, "capsule-pg-restore-planted")
	if err := os.MkdirAll(planted, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(planted, old, old); err != nil {
		t.Fatal(err)
	}
	return planted
}

// TestDropInOperatorsWay runs the capsule binary as the cnvrg operator's
// Deployment runs the old capsule service: "capsule start" with no
// settings but the operator's GIN_MODE=release and what a test needs to
// reach the cluster and the services from outside it (a kubeconfig,
// --service-host, the old service's env twins for the PVC mount and the
// listen address). The API server (envtest, RBAC on) holds what the
// operator creates: a CnvrgApp, its pg-storage PVC with the
// capsule.mlops.cnvrg.io/ annotations (owned by the CnvrgApp), pg-creds
// with the platform's keys and cp-object-storage; the binary runs as the
// ServiceAccount with the operator's exact ClusterRole (get and list on
// PVCs and Secrets). The application role lacks CREATEDB, as on the
// platform. It must back up on schedule into the bucket, restore as
// postgres through POSTGRESQL_ADMIN_PASSWORD and say so, stage on the
// PVC, serve the probes and metrics, and never ask the API server for
// what the role does not grant.
func TestDropInOperatorsWay(t *testing.T) {
	k := needKube(t)
	bin := k.binary(t)
	ctx := context.Background()
	oc := newOperatorCluster(t, k)
	ns, appRole, db := oc.ns, oc.appRole, oc.db
	appPW, adminPW, srv := oc.appPW, oc.adminPW, oc.srv

	// The operator's ServiceAccount, ClusterRole and binding.
	const sa = "cnvrg-capsule"
	oc.bindRole(t, sa, "cnvrg-capsule-"+oc.id, operatorRole)
	proxy := &kubeProxy{}
	user, groups := oc.as(sa)
	kubeconfig := proxy.start(t, k, user, groups)

	// The PVC mounted at /tmp/capsule-data (here a directory named by the
	// old service's CNVRG_CAPSULE_DUMPDIR), and the container's TMPDIR.
	dumpDir, tmpDir := t.TempDir(), t.TempDir()
	onPVC, inTmp := plantStaging(t, dumpDir), plantStaging(t, tmpDir)

	// A damaged index among the plan's backups: the worker's catalog, the
	// API and retention all meet it, and it must be reported once.
	plan, cluster := oc.plan, oc.cluster
	b := openTestBucket(t, srv, oc.bucketName)
	damaged := requests.IndexKey(cluster, plan, "damaged-"+randHex(4))
	if _, err := b.Put(ctx, damaged, strings.NewReader("{"), 1, bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	started := time.Now()
	cmd := exec.Command(bin, "start", "--service-host", "127.0.0.1")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + tmpDir,
		"GIN_MODE=release", // the operator's only variable
		"KUBECONFIG=" + kubeconfig,
		"CNVRG_CAPSULE_DUMPDIR=" + dumpDir,
		"CNVRG_CAPSULE_API_BIND_ADDR=127.0.0.1:0", // the default :8080 is no port to take on a shared machine
	}
	stderr := &lockedBuffer{}
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() || os.Getenv("CAPSULE_TEST_SHOW_LOG") != "" {
			t.Logf("capsule start:\n%s", stderr.String())
		}
	})
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`serving the API and the page on (http://[0-9.:]+)/`)
		lines := bufio.NewScanner(pr)
		for lines.Scan() {
			if m := re.FindStringSubmatch(lines.Text()); m != nil {
				addr <- m[1]
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	var base string
	select {
	case base = <-addr:
	case err := <-exited:
		t.Fatalf("capsule start exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("capsule start never said where it listens")
	}

	// waitFor polls what an outside observer sees (the process is not the
	// test's: no events to wait on), failing when the process exits.
	waitFor := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(timeout)
		for !cond() {
			select {
			case <-tick.C:
			case err := <-exited:
				t.Fatalf("capsule start exited while waiting for %s: %v", what, err)
			case <-deadline:
				t.Fatalf("timed out after %s waiting for %s", timeout, what)
			}
		}
	}

	var backup index.Entry
	t.Run("a scheduled backup lands in the bucket", func(t *testing.T) {
		waitFor("the scheduled backup of "+plan, 120*time.Second, func() bool {
			es, err := index.List(ctx, b, index.Filter{Cluster: cluster, Source: plan})
			if err != nil || len(es) == 0 {
				return false
			}
			backup = es[0]
			return true
		})
		if backup.Status != requests.StatusSucceeded || backup.Plan != plan {
			t.Fatalf("backup %s of %s: status %s plan %q", backup.BackupID, plan, backup.Status, backup.Plan)
		}
		// The slot of 1.5h that held the start (or the next, had the test
		// crossed a boundary).
		sched, _ := scanner.ParseSchedule("1.5h")
		if a, b := requests.SlotID(plan, sched.Slot(started)), requests.SlotID(plan, sched.Slot(time.Now())); backup.BackupID != a && backup.BackupID != b {
			t.Errorf("backup id %s is not the 1.5h slot of %s (%s)", backup.BackupID, plan, a)
		}
	})
	if backup.BackupID == "" {
		t.FailNow()
	}

	t.Run("a restore as postgres: the application role lacks CREATEDB", func(t *testing.T) {
		before := pgRows(t, db)
		markDB(t, db, "after-the-backup")
		req := &requests.Request{Kind: requests.KindRestore, BackupID: backup.BackupID, DropPrevious: true}
		if err := client.Submit(ctx, b, req); err != nil {
			t.Fatal(err)
		}
		var res requests.Result
		waitFor("the restore's result", 120*time.Second, func() bool {
			data, _, err := bucket.GetBytes(ctx, b, requests.ResultKey(req.ID))
			if errors.Is(err, bucket.ErrNotFound) {
				return false
			}
			if err != nil {
				t.Fatal(err)
			}
			return json.Unmarshal(data, &res) == nil
		})
		if res.Status != requests.StatusSucceeded {
			t.Fatalf("restore %s: %s %s", req.ID, res.Status, res.Error)
		}
		want := "postgres (POSTGRESQL_ADMIN_PASSWORD: the application role lacks CREATEDB)"
		if got := res.Details[scanner.RestoredAs]; got != want {
			t.Errorf("restoredAs %q, want %q (details %v)", got, want, res.Details)
		}
		if after := pgRows(t, db); after != before {
			t.Errorf("after the restore: %s, want the backup's %s", after, before)
		}
		if owner := dbOwner(t, db); owner != appRole {
			t.Errorf("the restored database belongs to %s, want the application role %s", owner, appRole)
		}
	})

	t.Run("the restore staged on the PVC, not in TMPDIR", func(t *testing.T) {
		if _, err := os.Stat(onPVC); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the abandoned staging directory on the PVC is still there (%v): the restore did not stage in %s", err, dumpDir)
		}
		if _, err := os.Stat(inTmp); err != nil {
			t.Errorf("the restore staged in TMPDIR (it swept %s): %v", inTmp, err)
		}
	})

	t.Run("probes, metrics and the API", func(t *testing.T) {
		get := func(path string) (int, string) {
			t.Helper()
			resp, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		if code, body := get("/healthz"); code != http.StatusOK {
			t.Errorf("/healthz: %d %s", code, body)
		}
		if code, body := get("/readyz"); code != http.StatusOK || !strings.Contains(body, `"plans":1`) {
			t.Errorf("/readyz: %d %s", code, body)
		}
		_, metrics := get("/metrics")
		for _, want := range []string{
			`capsule_requests_finished_total{engine="postgres",kind="Backup",status="succeeded"} 1`,
			`capsule_requests_finished_total{engine="postgres",kind="Restore",status="succeeded"} 1`,
			fmt.Sprintf(`capsule_last_backup_success_timestamp_seconds{cluster=%q,source=%q}`, cluster, plan),
			`capsule_bucket_operations_total{operation="put",outcome="ok"}`,
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if code, body := get("/v1/clusters/" + url.PathEscape(cluster) + "/backups"); code != http.StatusOK || !strings.Contains(body, backup.BackupID) {
			t.Errorf("the API's listing of %s: %d %s", cluster, code, body)
		}
	})

	t.Run("the damaged index is reported once, by everyone", func(t *testing.T) {
		lock := retention.LockKey(retention.Policy{Cluster: cluster, Source: plan, Plan: plan, Keep: 5})
		waitFor("retention of "+plan, 60*time.Second, func() bool {
			_, err := b.Head(ctx, lock)
			return err == nil
		})
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(metrics), "\ncapsule_damaged_indexes_total 1\n") {
			t.Errorf("/metrics: capsule_damaged_indexes_total is not 1")
		}
		if n := strings.Count(stderr.String(), "damaged backup index: skipped"); n != 1 {
			t.Errorf("the damaged index %s was logged %d times, want once (one reporter for the catalog, the API and retention)", damaged, n)
		}
	})

	t.Run("only what the operator's role grants", func(t *testing.T) {
		calls := proxy.list()
		if len(calls) == 0 {
			t.Fatal("the binary made no call to the API server")
		}
		named := map[string]bool{"pg-creds": true, "cp-object-storage": true}
		for _, c := range calls {
			ok := false
			switch {
			case c.method == http.MethodPost && c.path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
				ok = true
			case c.method == http.MethodGet && c.path == "/api/v1/persistentvolumeclaims" && !strings.Contains(c.query, "watch"):
				ok = true // list, all namespaces
			case c.method == http.MethodGet && strings.HasPrefix(c.path, "/api/v1/namespaces/"+ns+"/secrets/"):
				ok = named[strings.TrimPrefix(c.path, "/api/v1/namespaces/"+ns+"/secrets/")]
			}
			if !ok {
				t.Errorf("the binary asked for %s %s?%s", c.method, c.path, c.query)
			}
			if c.status == http.StatusForbidden {
				t.Errorf("forbidden: %s %s?%s", c.method, c.path, c.query)
			}
		}
	})

	t.Run("it said once what the role does not allow", func(t *testing.T) {
		logs := stderr.String()
		for _, want := range []string{
			"no access to cnvrgapps (list): plans come from the PVC annotations only",
			"no watch on persistentvolumeclaims: listing them periodically",
			"cannot create events: invalid plans are logged only",
		} {
			if n := strings.Count(logs, want); n != 1 {
				t.Errorf("the log says %q %d times, want once", want, n)
			}
		}
		for _, s := range []string{appPW, adminPW, srv.SecretKey} {
			if strings.Contains(logs, s) {
				t.Errorf("a secret is in the log")
			}
		}
	})
}

// operatorCluster is what the cnvrg operator leaves in a cluster for
// capsule: an infra namespace for capsule's Deployment, and the
// CnvrgApp's namespace with the CnvrgApp (PostgreSQL backed up every
// 1.5h, the old syntax), its pg-storage PVC annotated with a copy of the
// backup block and owned by the CnvrgApp, pg-creds with the platform's
// keys (the application role owns its database but lacks CREATEDB) and
// cp-object-storage naming a fresh bucket on the test's S3 server.
type operatorCluster struct {
	k              *kubeEnv
	id, infra, ns  string
	appRole, db    string
	appPW, adminPW string
	srv            *s3test.Server
	bucketName     string
	app            *unstructured.Unstructured
	plan, cluster  string
}

func newOperatorCluster(t *testing.T, k *kubeEnv) *operatorCluster {
	t.Helper()
	ctx := context.Background()
	oc := &operatorCluster{k: k, id: randHex(3)}
	oc.infra, oc.ns = "cnvrg-infra-"+oc.id, "cnvrg-"+oc.id
	oc.plan, oc.cluster = oc.ns+"/cnvrg-app/pg", oc.ns+"/cnvrg-app"
	for _, n := range []string{oc.infra, oc.ns} {
		if _, err := k.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k.cs.CoreV1().Namespaces().Delete(context.Background(), n, metav1.DeleteOptions{}) })
	}
	oc.appRole, oc.db = newPostgresRoleDB(t, "NOCREATEDB")
	oc.appPW, oc.adminPW = "app-pw-"+randHex(8), "admin-pw-"+randHex(8)
	oc.srv = s3test.Shared(t)
	oc.bucketName = oc.srv.NewBucket(t)
	oc.secret(t, "pg-creds", map[string]string{
		"POSTGRESQL_USER": oc.appRole, "POSTGRESQL_PASSWORD": oc.appPW, "POSTGRESQL_ADMIN_PASSWORD": oc.adminPW,
		"POSTGRESQL_DATABASE": oc.db, "POSTGRES_DB": oc.db, "POSTGRES_USER": oc.appRole, "POSTGRES_PASSWORD": oc.appPW, "POSTGRES_HOST": "postgres",
	})
	oc.secret(t, "cp-object-storage", map[string]string{
		"CNVRG_STORAGE_TYPE": "minio", "CNVRG_STORAGE_ENDPOINT": oc.srv.Endpoint, "CNVRG_STORAGE_REGION": oc.srv.Region,
		"CNVRG_STORAGE_BUCKET": oc.bucketName, "CNVRG_STORAGE_ACCESS_KEY": oc.srv.AccessKey, "CNVRG_STORAGE_SECRET_KEY": oc.srv.SecretKey,
		"CNVRG_STORAGE_AZURE_ACCESS_KEY": "", "CNVRG_STORAGE_AZURE_ACCOUNT_NAME": "", "CNVRG_STORAGE_AZURE_CONTAINER": "",
	})
	data, err := os.ReadFile("testdata/cnvrgapp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	app := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &app.Object); err != nil {
		t.Fatal(err)
	}
	app.SetNamespace(oc.ns)
	set(t, app, "1.5h", "spec", "dbs", "pg", "backup", "period")
	set(t, app, false, "spec", "dbs", "redis", "backup", "enabled")
	if oc.app, err = k.dyn.Resource(scanner.CnvrgApps()).Namespace(oc.ns).Create(ctx, app, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	yes := true
	oc.pvc(t, "pg-storage", map[string]string{
		"capsule.mlops.cnvrg.io/backup": "true", "capsule.mlops.cnvrg.io/serviceType": "postgresql",
		"capsule.mlops.cnvrg.io/bucketRef": "cp-object-storage", "capsule.mlops.cnvrg.io/credsRef": "pg-creds",
		"capsule.mlops.cnvrg.io/rotation": "5", "capsule.mlops.cnvrg.io/period": "1.5h",
	}, []metav1.OwnerReference{{APIVersion: "mlops.cnvrg.io/v1", Kind: "CnvrgApp", Name: oc.app.GetName(), UID: oc.app.GetUID(), Controller: &yes}})
	return oc
}

func (oc *operatorCluster) secret(t *testing.T, name string, data map[string]string) {
	t.Helper()
	if _, err := oc.k.cs.CoreV1().Secrets(oc.ns).Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: data}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (oc *operatorCluster) pvc(t *testing.T, name string, ann map[string]string, owners []metav1.OwnerReference) {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: oc.ns, Annotations: ann, OwnerReferences: owners},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("80Gi")}},
		},
	}
	pvcs := oc.k.cs.CoreV1().PersistentVolumeClaims(oc.ns)
	if _, err := pvcs.Create(context.Background(), pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// envtest deletes no namespace's content and runs no controller that
	// would release the PVC's protection finalizer: take it off, so that
	// the annotated PVC does not outlive the test for scanners of all
	// namespaces.
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = pvcs.Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		_ = pvcs.Delete(ctx, name, metav1.DeleteOptions{})
	})
}

// bindRole makes the ServiceAccount sa in the infra namespace and binds
// it to a ClusterRole of the rules.
func (oc *operatorCluster) bindRole(t *testing.T, sa, role string, rules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	if _, err := oc.k.cs.CoreV1().ServiceAccounts(oc.infra).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rbac := oc.k.cs.RbacV1()
	if _, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: oc.infra}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rbac.ClusterRoleBindings().Delete(context.Background(), role, metav1.DeleteOptions{})
		_ = rbac.ClusterRoles().Delete(context.Background(), role, metav1.DeleteOptions{})
	})
	oc.waitAllowed(t, sa, rules)
}

// waitAllowed waits until the API server's authorizer grants the
// ServiceAccount every verb of rules. The RBAC authorizer reads roles and
// bindings through its own informers, so a binding just created may not
// count yet for a few hundred milliseconds; a replica started in that window
// concludes that its role is narrower than it is (which is the replica's
// right reading at that instant, and not what a test of the role means).
func (oc *operatorCluster) waitAllowed(t *testing.T, sa string, rules []rbacv1.PolicyRule) {
	t.Helper()
	user, groups := oc.as(sa)
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, verb := range r.Verbs {
					for {
						rev, err := oc.k.cs.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authv1.SubjectAccessReview{
							Spec: authv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &authv1.ResourceAttributes{
								Namespace: oc.ns, Verb: verb, Group: g, Resource: res}},
						}, metav1.CreateOptions{})
						if err == nil && rev.Status.Allowed {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("%s is still not allowed to %s %s.%s (err %v)", sa, verb, res, g, err)
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
			}
		}
	}
}

// as returns the ServiceAccount's identity for impersonation.
func (oc *operatorCluster) as(sa string) (string, []string) {
	return "system:serviceaccount:" + oc.infra + ":" + sa, []string{"system:serviceaccounts", "system:serviceaccounts:" + oc.infra, "system:authenticated"}
}

func openTestBucket(t *testing.T, srv *s3test.Server, name string) bucket.Bucket {
	t.Helper()
	f := &fixture{t: t, srv: srv}
	return f.openBucket(name)
}

// pgRows describes the rows of the runs table.
func pgRows(t *testing.T, db string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname="+db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows, sum string
	if err := conn.QueryRow(ctx, `SELECT count(*)::text, md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM runs`).Scan(&rows, &sum); err != nil {
		t.Fatal(err)
	}
	return rows + " rows, md5 " + sum
}

func dbOwner(t *testing.T, db string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname=postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var owner string
	if err := conn.QueryRow(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`, db).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	return owner
}

// clientsAs returns API clients that act as the ServiceAccount sa of the
// infra namespace (impersonated: the API server's RBAC decides).
func (oc *operatorCluster) clientsAs(t *testing.T, sa string) (dynamic.Interface, kubernetes.Interface) {
	t.Helper()
	rc := rest.CopyConfig(oc.k.rc)
	user, groups := oc.as(sa)
	rc.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return dyn, cs
}

// TestDropInRolesConverge runs two scanner replicas side by side: one
// with the operator's ClusterRole (it may only list PVCs and get Secrets:
// the plan comes from the PVC's annotations, and it lists them every
// Poll), one with a wider role (it watches CnvrgApps and PVCs and may
// create Events: the plan comes from the CnvrgApp). Both name the one
// service's plan alike, so its slot has one request, written by one and
// found by the other. A PVC with a bad annotation is a Warning Event on
// the PVC from the wider role, and a log line only from the operator's.
func TestDropInRolesConverge(t *testing.T) {
	k := needKube(t)
	oc := newOperatorCluster(t, k)
	oc.pvc(t, "scratch-storage", map[string]string{
		"capsule.mlops.cnvrg.io/backup": "true", "capsule.mlops.cnvrg.io/serviceType": "postgresql", "capsule.mlops.cnvrg.io/period": "soon",
	}, nil)
	oc.bindRole(t, "capsule-narrow", "capsule-narrow-"+oc.id, operatorRole)
	oc.bindRole(t, "capsule-wide", "capsule-wide-"+oc.id, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}},
		{APIGroups: []string{scanner.Group}, Resources: []string{scanner.Resource}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
	})
	rec := newRecorder()
	replica := func(name, sa string) (*replica, *logBuffer) {
		dyn, cs := oc.clientsAs(t, sa)
		lb, log := newLogBuffer(t)
		r := startReplica(t, name, rec, false, scanner.Config{
			Dynamic: dyn, Kube: cs, Namespaces: []string{oc.ns}, HostFor: loopback, Poll: 200 * time.Millisecond,
			Log: log.WithField("replica", name),
		})
		return r, lb
	}
	started := time.Now()
	narrow, narrowLog := replica("narrow", "capsule-narrow")
	wide, wideLog := replica("wide", "capsule-wide")
	sched, _ := scanner.ParseSchedule("1.5h")
	var slotID string
	rec.wait(t, 60*time.Second, "both replicas at the plan's slot", func() bool {
		for id, by := range rec.submitted {
			if rec.subPlan[id] == oc.plan && len(by)+len(rec.exists[id]) >= 2 {
				slotID = id
				return true
			}
		}
		return false
	})
	t.Run("one plan, one request", func(t *testing.T) {
		np, okN := findPlan(narrow.sc.Plans(), oc.plan)
		wp, okW := findPlan(wide.sc.Plans(), oc.plan)
		if !okN || !okW || np.From != scanner.FromPVC || wp.From != scanner.FromCnvrgApp {
			t.Fatalf("plans: narrow %v (from %q), wide %v (from %q)", okN, np.From, okW, wp.From)
		}
		if len(narrow.sc.Plans()) != 1 || len(wide.sc.Plans()) != 1 {
			t.Errorf("plans: narrow %d, wide %d; want one each", len(narrow.sc.Plans()), len(wide.sc.Plans()))
		}
		rec.mu.Lock()
		by, found := rec.submitted[slotID], rec.exists[slotID]
		rec.mu.Unlock()
		if len(by) != 1 || len(found) < 1 || by[0] == found[0] {
			t.Errorf("slot request %s written by %v, found by %v: want one writer and the other replica finding it", slotID, by, found)
		}
		if a, b := requests.SlotID(oc.plan, sched.Slot(started)), requests.SlotID(oc.plan, sched.Slot(time.Now())); slotID != a && slotID != b {
			t.Errorf("slot request %s, want %s", slotID, a)
		}
		keys := keysUnder(t, openTestBucket(t, oc.srv, oc.bucketName), requests.RequestsPrefix)
		if len(keys) != 1 || keys[0] != requests.RequestKey(slotID) {
			t.Errorf("requests in the bucket: %v, want only %s", keys, requests.RequestKey(slotID))
		}
	})
	t.Run("the bad PVC: an Event from the wider role, a log line from the operator's", func(t *testing.T) {
		rec.wait(t, 30*time.Second, "both replicas to report the bad PVC", func() bool { return rec.problems["narrow"] > 0 && rec.problems["wide"] > 0 })
		events, err := k.cs.CoreV1().Events(oc.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range events.Items {
			if e.Reason == scanner.ReasonInvalidBackupPlan {
				got = append(got, e.InvolvedObject.Kind+"/"+e.InvolvedObject.Name+" by "+e.ReportingInstance+": "+e.Message)
			}
		}
		if len(got) != 1 || !strings.HasPrefix(got[0], "PersistentVolumeClaim/scratch-storage by wide: metadata.annotations[capsule.mlops.cnvrg.io/period]") {
			t.Errorf("InvalidBackupPlan Events %v, want one on the PVC by the wide replica", got)
		}
		for name, lb := range map[string]*logBuffer{"narrow": narrowLog, "wide": wideLog} {
			if !strings.Contains(lb.String(), `pvc=`+oc.ns+`/scratch-storage`) {
				t.Errorf("%s did not log the bad PVC", name)
			}
		}
	})
	t.Run("each logs what its role does not allow", func(t *testing.T) {
		n, w := narrowLog.String(), wideLog.String()
		for _, want := range []string{"no access to cnvrgapps (list)", "no watch on persistentvolumeclaims", "cannot create events"} {
			if strings.Count(n, want) != 1 {
				t.Errorf("the operator's role: %q logged %d times, want once", want, strings.Count(n, want))
			}
			if strings.Contains(w, want) {
				t.Errorf("the wider role logged %q", want)
			}
		}
		if strings.Contains(n, "cannot record the Event") {
			t.Errorf("the operator's role tried to write an Event")
		}
	})
}
