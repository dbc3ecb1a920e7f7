package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"
)

// kubeAPI is an envtest API server (a real kube-apiserver and etcd, RBAC
// enforced) of one test, with the CnvrgApp CRD and the Prometheus
// Operator's two CRDs (cut down, testdata/monitoring-crds.yaml) installed.
type kubeAPI struct {
	cs      kubernetes.Interface
	dyn     dynamic.Interface
	conf    string // the administrator's kubeconfig (system:masters)
	kubectl string
	dir     string
}

func startKube(t *testing.T) *kubeAPI {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run scripts/envtest-assets.sh and export KUBEBUILDER_ASSETS=<repo>/.tools/envtest")
	}
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		CRDInstallOptions: envtest.CRDInstallOptions{Paths: []string{
			filepath.Join("..", "scanner", "testdata", "cnvrgapp-crd.yaml"),
			filepath.Join("testdata", "monitoring-crds.yaml"),
		}},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("envtest stop: %v", err)
		}
	})
	user, err := env.AddUser(envtest.User{Name: "capsule-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	k := &kubeAPI{dir: t.TempDir(), kubectl: filepath.Join(assets, "kubectl")}
	k.conf = filepath.Join(k.dir, "admin.kubeconfig")
	mustDo(t, os.WriteFile(k.conf, kc, 0o600))
	if k.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if k.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return k
}

// as writes a kubeconfig that impersonates the ServiceAccount ns/name as
// its token would authenticate it (user and groups), and returns its path.
func (k *kubeAPI) as(t *testing.T, ns, name string) string {
	t.Helper()
	c, err := clientcmd.LoadFromFile(k.conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range c.AuthInfos {
		ai.Impersonate = "system:serviceaccount:" + ns + ":" + name
		ai.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	}
	p := filepath.Join(k.dir, ns+"-"+name+".kubeconfig")
	if err := clientcmd.WriteToFile(*c, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (k *kubeAPI) namespace(t *testing.T, name string) {
	t.Helper()
	if _, err := k.cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// run runs kubectl with kubeconfig conf; it returns stdout, stderr and
// the error.
func (k *kubeAPI) run(conf string, stdin []byte, args ...string) (string, string, error) {
	cmd := exec.Command(k.kubectl, append([]string{"--kubeconfig", conf}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// TestChartAcceptedByTheAPIServer: every object the chart renders, with
// the defaults and with each ci/ values file, passes a real
// kube-apiserver's validation and admission (kubectl apply
// --dry-run=server, strict field validation): the ServiceMonitor and
// PrometheusRule against the Prometheus Operator's schema for the fields
// the chart sets.
func TestChartAcceptedByTheAPIServer(t *testing.T) {
	helm := needHelm(t)
	k := startKube(t)
	made := map[string]bool{}
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			m := render(t, helm, c)
			// Dry runs still need the namespaces to exist.
			for _, o := range m.objects {
				if ns := o.GetNamespace(); ns != "" && !made[ns] {
					k.namespace(t, ns)
					made[ns] = true
				}
			}
			out, errOut, err := k.run(k.conf, m.text, "apply", "--dry-run=server", "--validate=strict", "-f", "-")
			if err != nil {
				t.Fatalf("kubectl apply --dry-run=server: %v\n%s\n%s", err, out, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != len(m.objects) {
				t.Errorf("the API server answered for %d objects, the chart rendered %d:\n%s", len(lines), len(m.objects), out)
			}
			for _, l := range lines {
				if !strings.HasSuffix(l, "(server dry run)") {
					t.Errorf("kubectl: %s", l)
				}
			}
			t.Logf("%d objects accepted: %s", len(lines), strings.Join(kinds(m), ", "))
		})
	}
}

func kinds(m *manifest) []string {
	var ks []string
	for _, o := range m.objects {
		ks = append(ks, o.GetKind())
	}
	return ks
}

var cnvrgApps = schema.GroupVersionResource{Group: "mlops.cnvrg.io", Version: "v1", Resource: "cnvrgapps"}

// TestChartRBACIsWhatTheScannerNeeds installs the chart's objects with
// the default values (the scanner serves the release's namespace) in a
// real API server, then runs the real capsule binary with the
// Deployment's own arguments as the chart's ServiceAccount
// (impersonation, the user and groups its token carries):
//
//   - it works: it makes the plan of the CnvrgApp of its namespace, backs
//     the database up into the bucket the CnvrgApp names, and records a
//     Warning Event for a CnvrgApp with a bad backup block;
//   - it cannot read a Secret of a namespace it does not serve: neither
//     kubectl nor the scanner told to look there gets one, and nothing of
//     that namespace's lands in any bucket.
func TestChartRBACIsWhatTheScannerNeeds(t *testing.T) {
	helm := needHelm(t)
	pg := needPostgres(t)
	k := startKube(t)
	ctx := context.Background()
	served, other := "cnvrg-"+randHex(3), "other-"+randHex(3)
	k.namespace(t, served)
	k.namespace(t, other)

	m := render(t, helm, chartCase{name: "rbac", namespace: served})
	if out, errOut, err := k.run(k.conf, m.text, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, errOut)
	}
	d, ctr := m.deployment(t)
	sa := k.as(t, served, d.Spec.Template.Spec.ServiceAccountName)

	// Each namespace: a database, its Secrets, a bucket, a CnvrgApp.
	srv := s3test.Shared(t)
	type tenant struct {
		ns, db, bucketName string
		b                  bucket.Bucket
	}
	tenants := map[string]*tenant{}
	for _, ns := range []string{served, other} {
		tn := &tenant{ns: ns, db: pg.prefix + "_" + strings.ReplaceAll(strings.SplitN(ns, "-", 2)[0], "-", "_"), bucketName: srv.NewBucket(t)}
		pg.createSource(tn.db, 50)
		raw, err := s3.New(ctx, s3.Options{Bucket: tn.bucketName, Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
		if err != nil {
			t.Fatal(err)
		}
		tn.b = raw
		secret(t, k, ns, "pg-creds", map[string]string{
			"POSTGRES_HOST": "postgres", "POSTGRES_DB": tn.db, "POSTGRES_USER": pg.role(), "POSTGRES_PASSWORD": "unused-" + randHex(4),
		})
		secret(t, k, ns, "cp-object-storage", map[string]string{
			"CNVRG_STORAGE_TYPE": "minio", "CNVRG_STORAGE_ENDPOINT": srv.Endpoint, "CNVRG_STORAGE_REGION": srv.Region,
			"CNVRG_STORAGE_BUCKET": tn.bucketName, "CNVRG_STORAGE_ACCESS_KEY": srv.AccessKey, "CNVRG_STORAGE_SECRET_KEY": srv.SecretKey,
		})
		cnvrgApp(t, k, ns, "cnvrg-app", "2s")
		tenants[ns] = tn
	}
	cnvrgApp(t, k, served, "broken-app", "every day")

	t.Run("kubectl as the ServiceAccount", func(t *testing.T) {
		if _, errOut, err := k.run(sa, nil, "-n", other, "get", "secret", "pg-creds"); err == nil || !strings.Contains(errOut, "Forbidden") {
			t.Errorf("get a Secret of %s: %v %s, want Forbidden", other, err, errOut)
		}
		for _, q := range []struct {
			args []string
			want string
		}{
			{[]string{"get", "secrets", "-n", served}, "yes"},
			{[]string{"list", "secrets", "-n", served}, "no"},
			{[]string{"watch", "secrets", "-n", served}, "no"},
			{[]string{"get", "secrets", "-n", other}, "no"},
			{[]string{"get", "pods", "-n", served}, "no"},
			{[]string{"create", "pods/exec", "-n", served}, "no"},
			{[]string{"list", "cnvrgapps.mlops.cnvrg.io", "-A"}, "yes"},
			{[]string{"create", "events", "-n", served}, "yes"},
		} {
			out, _, _ := k.run(sa, nil, append([]string{"auth", "can-i"}, q.args...)...)
			if got := strings.TrimSpace(out); got != q.want {
				t.Errorf("can-i %s: %s, want %s", strings.Join(q.args, " "), got, q.want)
			}
		}
	})

	t.Run("the scanner told to look in a namespace it does not serve", func(t *testing.T) {
		cmd := exec.Command(binary, "scan", "--once", "-o", "json", "--kubeconfig", sa, "--namespaces", served+","+other, "--service-host", "127.0.0.1")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("capsule scan: %v\n%s", err, errb.String())
		}
		var res struct {
			Plans []struct {
				Name string `json:"name"`
			} `json:"plans"`
			Problems []struct {
				App     struct{ Namespace, Name string } `json:"app"`
				Field   string                           `json:"field"`
				Message string                           `json:"message"`
			} `json:"problems"`
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		var plans []string
		for _, p := range res.Plans {
			plans = append(plans, p.Name)
		}
		if !slices.Contains(plans, served+"/cnvrg-app/pg") || slices.ContainsFunc(plans, func(p string) bool { return strings.HasPrefix(p, other+"/") }) {
			t.Errorf("plans %v: want %s/cnvrg-app/pg and none of %s", plans, served, other)
		}
		forbidden := false
		for _, p := range res.Problems {
			if p.App.Namespace == other && strings.Contains(strings.ToLower(p.Message), "forbidden") {
				forbidden = true
			}
		}
		if !forbidden {
			t.Errorf("problems %+v: want %s's Secrets reported forbidden", res.Problems, other)
		}
	})

	t.Run("the Deployment's worker", func(t *testing.T) {
		// The container's own arguments and environment; only where
		// things are differs: the kubeconfig (the ServiceAccount's
		// identity), a free port, the databases on loopback, TMPDIR.
		port := freePort(t)
		args, listening := []string{}, false
		for _, a := range ctr.Args {
			if strings.HasPrefix(a, "--listen=") {
				a, listening = "--listen=127.0.0.1:"+strconv.Itoa(port), true
			}
			args = append(args, a)
		}
		// A capsule from before the drop-in mode (which brought PVC
		// plans and --listen beside --scan) refuses --listen here: it
		// gets the rest of the arguments, so the RBAC is still tested,
		// the probes are not. Any later capsule must take them all.
		if listening && !dropInCapsule() && !listenWithScan(t) {
			t.Logf("this capsule refuses --listen with --scan: running the chart's other arguments; probes and /metrics untested")
			args = slices.DeleteFunc(args, func(a string) bool { return strings.HasPrefix(a, "--listen=") })
			listening = false
		}
		args = append(args, "--kubeconfig", sa, "--service-host", "127.0.0.1", "--name", "chart-worker")
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		for _, e := range ctr.Env {
			v := e.Value
			if e.Name == "TMPDIR" {
				v = t.TempDir()
			}
			env = append(env, e.Name+"="+v)
		}
		w := startProc(t, env, args...)
		t.Cleanup(w.stop)
		tn := tenants[served]
		waitFor(t, 120*time.Second, "a backup of "+served+" committed", func() bool {
			return w.exited() == nil && len(indexes(t, tn.b)) > 0
		})
		if err := w.exited(); err != nil {
			t.Fatalf("the worker exited: %v\n%s", err, w.output())
		}
		if listening {
			for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
				resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + path)
				if err != nil {
					t.Errorf("GET %s: %v", path, err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s: %s", path, resp.Status)
				}
			}
		}
		waitFor(t, 60*time.Second, "a Warning Event on broken-app", func() bool {
			evs, err := k.cs.CoreV1().Events(served).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool {
				return e.InvolvedObject.Name == "broken-app" && e.Type == corev1.EventTypeWarning && e.Reason == "InvalidBackupPlan"
			})
		})
		w.stop()
		if keys := allKeys(t, tenants[other].b); len(keys) > 0 {
			t.Errorf("the bucket of %s, which is not served, got %v", other, keys)
		}
	})
}

// dropInCapsule says whether this capsule's scanner can make plans from
// the operator's PVC annotations (the drop-in mode).
func dropInCapsule() bool {
	out, _ := exec.Command(binary, "worker", "--help").CombinedOutput()
	return strings.Contains(string(out), "PVC")
}

// listenWithScan says whether capsule worker takes --listen with --scan.
func listenWithScan(t *testing.T) bool {
	out, _ := exec.Command(binary, "worker", "--scan", "--listen=127.0.0.1:0", "--kubeconfig", filepath.Join(t.TempDir(), "none")).CombinedOutput()
	return !strings.Contains(string(out), "do not combine with --scan")
}

// TestChartOperatorRBACRunsTheScanner: with rbac.mode=operator the
// chart's ServiceAccount has exactly the cnvrg operator's ClusterRole
// (persistentvolumeclaims and secrets: get, list), and the Deployment's
// worker still backs up what the operator's PVC annotations ask for.
func TestChartOperatorRBACRunsTheScanner(t *testing.T) {
	helm := needHelm(t)
	if !dropInCapsule() {
		t.Skip("this capsule's scanner reads CnvrgApps only (no plans from the operator's PVC annotations yet): the operator's ClusterRole cannot run it")
	}
	pg := needPostgres(t)
	k := startKube(t)
	ns := "cnvrg-" + randHex(3)
	k.namespace(t, ns)
	m := render(t, helm, chartCase{name: "operator", namespace: ns}, "--set", "rbac.mode=operator")
	if out, errOut, err := k.run(k.conf, m.text, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, errOut)
	}
	d, ctr := m.deployment(t)
	sa := k.as(t, ns, d.Spec.Template.Spec.ServiceAccountName)

	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	b, err := s3.New(context.Background(), s3.Options{Bucket: name, Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	db := pg.prefix + "_operator"
	pg.createSource(db, 50)
	secret(t, k, ns, "pg-creds", map[string]string{
		"POSTGRES_HOST": "postgres", "POSTGRES_DB": db, "POSTGRES_USER": pg.role(), "POSTGRES_PASSWORD": "unused-" + randHex(4),
	})
	secret(t, k, ns, "cp-object-storage", map[string]string{
		"CNVRG_STORAGE_TYPE": "minio", "CNVRG_STORAGE_ENDPOINT": srv.Endpoint, "CNVRG_STORAGE_REGION": srv.Region,
		"CNVRG_STORAGE_BUCKET": name, "CNVRG_STORAGE_ACCESS_KEY": srv.AccessKey, "CNVRG_STORAGE_SECRET_KEY": srv.SecretKey,
	})
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "pg-storage", Namespace: ns, Annotations: map[string]string{
			"capsule.mlops.cnvrg.io/backup": "true", "capsule.mlops.cnvrg.io/serviceType": "postgresql",
			"capsule.mlops.cnvrg.io/bucketRef": "cp-object-storage", "capsule.mlops.cnvrg.io/credsRef": "pg-creds",
			"capsule.mlops.cnvrg.io/rotation": "5", "capsule.mlops.cnvrg.io/period": "2s",
		}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := k.cs.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	port := freePort(t)
	args := []string{}
	for _, a := range ctr.Args {
		if strings.HasPrefix(a, "--listen=") {
			a = "--listen=127.0.0.1:" + strconv.Itoa(port)
		}
		args = append(args, a)
	}
	args = append(args, "--kubeconfig", sa, "--service-host", "127.0.0.1", "--name", "operator-worker")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}
	w := startProc(t, env, args...)
	t.Cleanup(w.stop)
	waitFor(t, 120*time.Second, "a backup from the PVC's annotations committed", func() bool {
		return w.exited() == nil && len(indexes(t, b)) > 0
	})
	if err := w.exited(); err != nil {
		t.Fatalf("the worker exited: %v\n%s", err, w.output())
	}
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz: %s", resp.Status)
	}
}

func secret(t *testing.T, k *kubeAPI, ns, name string, data map[string]string) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}
	if _, err := k.cs.CoreV1().Secrets(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// cnvrgApp creates the platform's sample CnvrgApp with only PostgreSQL
// backed up, every period.
func cnvrgApp(t *testing.T, k *kubeAPI, ns, name, period string) {
	t.Helper()
	data, err := os.ReadFile("../scanner/testdata/cnvrgapp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(ns)
	u.SetName(name)
	mustDo(t, unstructured.SetNestedField(u.Object, period, "spec", "dbs", "pg", "backup", "period"))
	mustDo(t, unstructured.SetNestedField(u.Object, false, "spec", "dbs", "redis", "backup", "enabled"))
	if _, err := k.dyn.Resource(cnvrgApps).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// indexes lists the backupIndex.json keys in b (any prefix).
func indexes(t *testing.T, b bucket.Bucket) []string {
	var out []string
	for _, k := range allKeys(t, b) {
		if strings.HasSuffix(k, "/backupIndex.json") {
			out = append(out, k)
		}
	}
	return out
}

func allKeys(t *testing.T, b bucket.Bucket) []string {
	t.Helper()
	var keys []string
	if err := bucket.Walk(context.Background(), b, "", func(o bucket.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// proc is a capsule process of a test, its output kept in a file.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, log: filepath.Join(t.TempDir(), "capsule.log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); f.Close(); close(p.done) }()
	return p
}

// exited is nil while the process runs, else how it ended.
func (p *proc) exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			return errExitedZero
		}
		return p.err
	default:
		return nil
	}
}

var errExitedZero = errors.New("exited with status 0")

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	if p.t.Failed() {
		p.t.Logf("capsule's output (last 6000 bytes):\n%s", tail([]byte(p.output()), 6000))
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}
