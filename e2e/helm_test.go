package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/config"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/engines/files"
	"github.com/cnvrg/capsule/engines/mysql"
	"github.com/cnvrg/capsule/engines/postgres"
	"github.com/cnvrg/capsule/engines/redis"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// The Helm chart (deploy/helm/capsule) and the plain manifests rendered
// from it (deploy/kubernetes). helm is the pinned binary that
// scripts/install-helm.sh builds from the Go module proxy; the API server
// is envtest's real kube-apiserver (helm_kube_test.go).

const chartDir = "../deploy/helm/capsule"

// needHelm returns the pinned helm, or skips the test.
func needHelm(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../.tools/bin/helm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no %s: run scripts/install-helm.sh (scripts/install-tools.sh runs it)", p)
	}
	return p
}

// chartCase is one way to install the chart: a namespace and values files
// from the chart's ci/ folder.
type chartCase struct {
	name      string
	namespace string
	values    string // a file in ci/, or "" for the defaults
}

var chartCases = []chartCase{
	{"defaults", "cnvrg", ""},
	{"full", "capsule-system", "full-values.yaml"},
	{"operator", "cnvrg", "operator-values.yaml"},
	{"all-namespaces", "capsule-system", "all-namespaces-values.yaml"},
	{"no-scanner", "capsule-system", "no-scanner-values.yaml"},
}

// manifest is a rendered chart: its text and its objects.
type manifest struct {
	text    []byte
	objects []*unstructured.Unstructured
}

// helmTemplate runs helm template for release capsule in namespace ns.
func helmTemplate(helm, ns string, args ...string) ([]byte, error) {
	cmd := exec.Command(helm, append([]string{"template", "capsule", chartDir, "--namespace", ns}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm template %s: %w\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes(), nil
}

func render(t *testing.T, helm string, c chartCase, args ...string) *manifest {
	t.Helper()
	if c.values != "" {
		args = append([]string{"--values", filepath.Join(chartDir, "ci", c.values)}, args...)
	}
	text, err := helmTemplate(helm, c.namespace, args...)
	if err != nil {
		t.Fatal(err)
	}
	return &manifest{text: text, objects: parseObjects(t, text)}
}

func parseObjects(t *testing.T, text []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(text), 4096)
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if err == io.EOF {
			return objs
		}
		if err != nil {
			t.Fatalf("rendered YAML: %v", err)
		}
		if m == nil {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// all returns the objects of kind.
func (m *manifest) all(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range m.objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// one decodes the only object of kind into into; false when there is none.
func (m *manifest) one(t *testing.T, kind string, into any) bool {
	t.Helper()
	objs := m.all(kind)
	switch len(objs) {
	case 0:
		return false
	case 1:
	default:
		t.Fatalf("%d objects of kind %s, want one", len(objs), kind)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(objs[0].Object, into); err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	return true
}

func (m *manifest) deployment(t *testing.T) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	var d appsv1.Deployment
	if !m.one(t, "Deployment", &d) {
		t.Fatal("no Deployment")
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(d.Spec.Template.Spec.Containers))
	}
	return &d, &d.Spec.Template.Spec.Containers[0]
}

func envOf(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// rules are a role's rules as comparable strings: "group|resource|verb".
func rules(rs []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rs {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			out = append(out, fmt.Sprintf("unexpected rule %+v", r))
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, g+"|"+res+"|"+v)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

var (
	scannerRules  = []string{"mlops.cnvrg.io|cnvrgapps|get", "mlops.cnvrg.io|cnvrgapps|list", "mlops.cnvrg.io|cnvrgapps|watch", "|events|create"} // sorted
	secretsGet    = []string{"|secrets|get"}
	operatorRules = []string{"|persistentvolumeclaims|get", "|persistentvolumeclaims|list", "|secrets|get", "|secrets|list"}
)

// TestChartRenders renders the chart with its defaults and with every
// values file of its ci/ folder, and checks what the issue asks of each:
// non-root, read-only root filesystem, a staging volume where TMPDIR
// points, RBAC with nothing beyond what the scanner uses (or exactly the
// operator's ClusterRole), never a Secret, and arguments and a config
// file that the real capsule binary accepts.
func TestChartRenders(t *testing.T) {
	helm := needHelm(t)
	ci, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ci {
		if !slices.ContainsFunc(chartCases, func(c chartCase) bool { return c.values == filepath.Base(f) }) {
			t.Errorf("%s is not one of chartCases: add it", f)
		}
	}
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			m := render(t, helm, c)
			checkCommon(t, c, m)
			switch c.name {
			case "defaults":
				checkDefaults(t, c, m)
			case "full":
				checkFull(t, c, m)
			case "operator":
				checkOperator(t, c, m)
			case "all-namespaces":
				checkAllNamespaces(t, c, m)
			case "no-scanner":
				checkNoScanner(t, c, m)
			}
		})
	}
}

func checkCommon(t *testing.T, c chartCase, m *manifest) {
	t.Helper()
	if len(m.all("Secret")) > 0 {
		t.Errorf("the chart renders a Secret: secrets come from Secrets that exist, never from values")
	}
	clusterScoped := map[string]bool{"ClusterRole": true, "ClusterRoleBinding": true}
	for _, o := range m.objects {
		if o.GetLabels()["app.kubernetes.io/name"] != "capsule" {
			t.Errorf("%s %s lacks the label app.kubernetes.io/name=capsule", o.GetKind(), o.GetName())
		}
		switch {
		case clusterScoped[o.GetKind()]:
			if o.GetNamespace() != "" {
				t.Errorf("%s %s has a namespace", o.GetKind(), o.GetName())
			}
		case o.GetKind() == "Role" || o.GetKind() == "RoleBinding":
		case o.GetNamespace() != c.namespace:
			t.Errorf("%s %s is in namespace %q, want the release's %q", o.GetKind(), o.GetName(), o.GetNamespace(), c.namespace)
		}
	}

	d, ctr := m.deployment(t)
	pod := d.Spec.Template.Spec
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context: want seccompProfile RuntimeDefault")
	}
	sc := ctr.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container: want readOnlyRootFilesystem")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container: want allowPrivilegeEscalation false")
	}
	if sc == nil || sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container: want every capability dropped and none added")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := ctr.Resources.Requests[r]; !ok {
			t.Errorf("container: no %s request", r)
		}
	}
	if _, ok := ctr.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Errorf("container: no memory limit")
	}
	if req, lim := ctr.Resources.Requests[corev1.ResourceMemory], ctr.Resources.Limits[corev1.ResourceMemory]; req.Cmp(lim) > 0 {
		t.Errorf("memory request %s above its limit %s", req.String(), lim.String())
	}

	// Writable places: /tmp and the staging volume, which TMPDIR names
	// (PostgreSQL restores copy the archive under it).
	mounts := map[string]string{}
	for _, vm := range ctr.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	if v, ok := vols[mounts["/tmp"]]; !ok || v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil {
		t.Errorf("/tmp: want an emptyDir with a size limit, got %+v", v)
	}
	tmpdir, _ := envOf(ctr, "TMPDIR")
	staging, ok := vols[mounts[tmpdir]]
	switch {
	case tmpdir == "" || !ok:
		t.Errorf("TMPDIR %q is not a mounted volume (mounts %v)", tmpdir, mounts)
	case staging.EmptyDir != nil && staging.EmptyDir.SizeLimit == nil:
		t.Errorf("staging emptyDir without a size limit")
	case staging.EmptyDir == nil && staging.Ephemeral == nil && staging.PersistentVolumeClaim == nil:
		t.Errorf("staging volume %+v is neither an emptyDir nor a PVC", staging.VolumeSource)
	}

	// The arguments are a capsule command line: the binary knows every
	// flag (--help parses them all without running the command).
	args := append(slices.Clone(ctr.Args), "--help")
	if out, err := exec.Command(binary, args...).CombinedOutput(); err != nil {
		t.Errorf("capsule %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if !slices.Contains(ctr.Args, "--listen=:8080") {
		t.Errorf("args %v: want --listen=:8080 (probes and /metrics)", ctr.Args)
	}
	for _, p := range []*corev1.Probe{ctr.LivenessProbe, ctr.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "http" {
			t.Errorf("probe %+v: want an HTTP probe on the port named http", p)
		}
	}

	// The config file, where there is one, is one capsule accepts.
	var cms []corev1.ConfigMap
	for _, o := range m.all("ConfigMap") {
		var cm corev1.ConfigMap
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &cm); err != nil {
			t.Fatal(err)
		}
		cms = append(cms, cm)
	}
	path, hasConfig := envOf(ctr, "CAPSULE_CONFIG")
	if hasConfig != (len(cms) == 1) {
		t.Errorf("CAPSULE_CONFIG %q with %d ConfigMaps", path, len(cms))
	}
	if hasConfig && len(cms) == 1 {
		if mounts[filepath.Dir(path)] != "config" {
			t.Errorf("CAPSULE_CONFIG %s is not on the config volume (mounts %v)", path, mounts)
		}
		cfg, err := config.Parse([]byte(cms[0].Data[filepath.Base(path)]))
		if err == nil {
			err = cfg.Validate(engines.NewRegistry(files.New(), postgres.New(), redis.New(), mysql.New()))
		}
		if err != nil {
			t.Errorf("the ConfigMap's %s: %v", filepath.Base(path), err)
		}
	}

	// RBAC subjects are the Deployment's ServiceAccount.
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, o := range m.all(kind) {
			var b rbacv1.RoleBinding
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &b); err != nil {
				t.Fatal(err)
			}
			want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: pod.ServiceAccountName, Namespace: c.namespace}}
			if !reflect.DeepEqual(b.Subjects, want) {
				t.Errorf("%s %s binds %+v, want %+v", kind, b.Name, b.Subjects, want)
			}
		}
	}
}

// roles returns the Roles by namespace, as rule strings.
func (m *manifest) roles(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, o := range m.all("Role") {
		var r rbacv1.Role
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
			t.Fatal(err)
		}
		out[r.Namespace] = append(out[r.Namespace], rules(r.Rules)...)
	}
	return out
}

func (m *manifest) clusterRole(t *testing.T) []string {
	t.Helper()
	var cr rbacv1.ClusterRole
	if !m.one(t, "ClusterRole", &cr) {
		return nil
	}
	return rules(cr.Rules)
}

func checkDefaults(t *testing.T, c chartCase, m *manifest) {
	d, ctr := m.deployment(t)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", d.Spec.Replicas)
	}
	for _, a := range []string{"worker", "--scan", "--namespaces=" + c.namespace} {
		if !slices.Contains(ctr.Args, a) {
			t.Errorf("args %v lack %s", ctr.Args, a)
		}
	}
	if got := m.clusterRole(t); !reflect.DeepEqual(got, scannerRules) {
		t.Errorf("ClusterRole rules %v, want %v", got, scannerRules)
	}
	if got := m.roles(t); !reflect.DeepEqual(got, map[string][]string{c.namespace: secretsGet}) {
		t.Errorf("Roles %v, want secrets get in %s only", got, c.namespace)
	}
	for _, kind := range []string{"ServiceAccount", "ClusterRoleBinding", "RoleBinding", "PodDisruptionBudget", "Service", "NetworkPolicy"} {
		if len(m.all(kind)) != 1 {
			t.Errorf("%d objects of kind %s, want one", len(m.all(kind)), kind)
		}
	}
	for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "ConfigMap"} {
		if len(m.all(kind)) != 0 {
			t.Errorf("%s rendered by default", kind)
		}
	}
	var pdb struct {
		Spec struct {
			MaxUnavailable any `json:"maxUnavailable"`
		} `json:"spec"`
	}
	if o := m.all("PodDisruptionBudget"); len(o) == 1 {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(o[0].Object, &pdb)
		if fmt.Sprint(pdb.Spec.MaxUnavailable) != "1" {
			t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
		}
	}
	if tok := d.Spec.Template.Spec.AutomountServiceAccountToken; tok == nil || !*tok {
		t.Errorf("the scanner needs the ServiceAccount's token: automountServiceAccountToken %v", tok)
	}
}

func checkFull(t *testing.T, c chartCase, m *manifest) {
	d, ctr := m.deployment(t)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	if !strings.Contains(ctr.Image, "@sha256:") {
		t.Errorf("image %s: want the digest", ctr.Image)
	}
	if !slices.Contains(ctr.Args, "--namespaces=cnvrg,cnvrg-staging") {
		t.Errorf("args %v: want --namespaces=cnvrg,cnvrg-staging", ctr.Args)
	}
	if got := m.roles(t); !reflect.DeepEqual(got, map[string][]string{"cnvrg": secretsGet, "cnvrg-staging": secretsGet}) {
		t.Errorf("Roles %v, want secrets get in cnvrg and cnvrg-staging", got)
	}
	var sa corev1.ServiceAccount
	if !m.one(t, "ServiceAccount", &sa) || sa.Annotations["eks.amazonaws.com/role-arn"] == "" {
		t.Errorf("ServiceAccount annotations %v: want the IRSA role", sa.Annotations)
	}
	for _, want := range []string{"CAPSULE_BUCKET", "CAPSULE_CLUSTER", "CAPSULE_CONFIG", "CAPSULE_API_TOKEN_FILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		if !slices.ContainsFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == want }) {
			t.Errorf("env lacks %s", want)
		}
	}
	for _, e := range ctr.Env {
		if strings.HasPrefix(e.Name, "AWS_") && e.Name != "AWS_REGION" && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("env %s: want a reference to a Secret, not a value", e.Name)
		}
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "staging" && (v.Ephemeral == nil || v.Ephemeral.VolumeClaimTemplate == nil) {
			t.Errorf("staging volume %+v: want a generic ephemeral PVC", v.VolumeSource)
		}
	}
	// The PrometheusRule holds exactly the alert rules of deploy/prometheus.
	var pr struct {
		Spec map[string]any `json:"spec"`
	}
	if o := m.all("PrometheusRule"); len(o) != 1 {
		t.Fatalf("%d PrometheusRules, want one", len(o))
	} else {
		pr.Spec, _ = o[0].Object["spec"].(map[string]any)
	}
	data, err := os.ReadFile("../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := yaml.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pr.Spec) != fmt.Sprint(want) {
		t.Errorf("PrometheusRule spec differs from deploy/prometheus/alerts.yaml:\n got %v\nwant %v", pr.Spec, want)
	}
	if len(m.all("ServiceMonitor")) != 1 {
		t.Errorf("no ServiceMonitor")
	}
}

func checkOperator(t *testing.T, c chartCase, m *manifest) {
	if got := m.clusterRole(t); !reflect.DeepEqual(got, operatorRules) {
		t.Errorf("ClusterRole rules %v, want the operator's %v", got, operatorRules)
	}
	if got := m.roles(t); len(got) != 0 {
		t.Errorf("Roles %v beside the operator's ClusterRole", got)
	}
	d, _ := m.deployment(t)
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "staging" && (v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "capsule-staging") {
			t.Errorf("staging volume %+v: want the claim capsule-staging", v.VolumeSource)
		}
	}
	for _, kind := range []string{"PodDisruptionBudget", "NetworkPolicy"} {
		if len(m.all(kind)) != 0 {
			t.Errorf("%s rendered though disabled", kind)
		}
	}
}

func checkAllNamespaces(t *testing.T, c chartCase, m *manifest) {
	_, ctr := m.deployment(t)
	if slices.ContainsFunc(ctr.Args, func(a string) bool { return strings.HasPrefix(a, "--namespaces") }) {
		t.Errorf("args %v: no --namespaces with scanner.allNamespaces", ctr.Args)
	}
	want := append(slices.Clone(scannerRules), secretsGet...)
	sort.Strings(want)
	if got := m.clusterRole(t); !reflect.DeepEqual(got, want) {
		t.Errorf("ClusterRole rules %v, want %v", got, want)
	}
	if got := m.roles(t); len(got) != 0 {
		t.Errorf("Roles %v with scanner.allNamespaces", got)
	}
}

func checkNoScanner(t *testing.T, c chartCase, m *manifest) {
	d, ctr := m.deployment(t)
	if slices.Contains(ctr.Args, "--scan") {
		t.Errorf("args %v: --scan with the scanner off", ctr.Args)
	}
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
		if len(m.all(kind)) != 0 {
			t.Errorf("%s rendered with rbac.create false", kind)
		}
	}
	if tok := d.Spec.Template.Spec.AutomountServiceAccountToken; tok == nil || *tok {
		t.Errorf("without the scanner the pod needs no Kubernetes token: automountServiceAccountToken %v", tok)
	}
}

// TestChartRefusesBadValues: values that would make a broken install
// fail the render, with a message that names the value.
func TestChartRefusesBadValues(t *testing.T) {
	helm := needHelm(t)
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"rbac.mode=admin"}, `rbac.mode: "admin" is neither scanner nor operator`},
		{[]string{"staging.type=hostPath"}, `staging.type: "hostPath" is not emptyDir, ephemeral or existingClaim`},
		{[]string{"staging.type=existingClaim"}, "staging.existingClaim: name the PersistentVolumeClaim"},
		{[]string{"scanner.allNamespaces=true", "scanner.namespaces={a}"}, "scanner.namespaces: leave it empty with scanner.allNamespaces"},
		{[]string{"scanner.enabled=false"}, "bucket: without the scanner the workers serve only this bucket"},
		{[]string{"config.bucket=s3://x/"}, "config.bucket: set the top-level value bucket instead"},
		{[]string{"serviceAccount.create=false"}, "serviceAccount.name: name the existing ServiceAccount"},
	} {
		var args []string
		for _, s := range tc.set {
			args = append(args, "--set", s)
		}
		_, err := helmTemplate(helm, "cnvrg", args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %v: %v, want an error with %q", tc.set, err, tc.want)
		}
	}
}

// TestPlainManifestsAreTheChartRendered: deploy/kubernetes/capsule.yaml is
// what scripts/render-manifests.sh makes from the chart now.
func TestPlainManifestsAreTheChartRendered(t *testing.T) {
	helm := needHelm(t)
	out := filepath.Join(t.TempDir(), "capsule.yaml")
	cmd := exec.Command("bash", "../scripts/render-manifests.sh", out)
	cmd.Env = append(os.Environ(), "HELM="+helm)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render-manifests.sh: %v\n%s", err, b)
	}
	fresh, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("../deploy/kubernetes/capsule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, committed) {
		t.Errorf("deploy/kubernetes/capsule.yaml is not the chart's render: run scripts/render-manifests.sh and commit the result")
	}
}

// TestChartAlertsAreTheDeployedOnes: the chart's copy of the alert rules
// (a chart cannot read files outside its folder) is deploy/prometheus's.
func TestChartAlertsAreTheDeployedOnes(t *testing.T) {
	a, err := os.ReadFile("../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(chartDir, "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("deploy/helm/capsule/files/alerts.yaml differs from deploy/prometheus/alerts.yaml: copy it over")
	}
}

// TestREADMEInstallsTheChart runs the README's helm install command (as
// helm template, with the README's own quoting): it renders, and the
// ServiceAccount carries the IRSA role it sets.
func TestREADMEInstallsTheChart(t *testing.T) {
	helm := needHelm(t)
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i := strings.Index(text, "\nhelm install ")
	if i < 0 {
		t.Fatal("the README shows no helm install command")
	}
	line := text[i+1:]
	// The command and its continuation lines.
	var cmdText strings.Builder
	for _, l := range strings.Split(line, "\n") {
		cmdText.WriteString(l + "\n")
		if !strings.HasSuffix(l, `\`) {
			break
		}
	}
	script := `helm() { [ "$1" = install ] || exit 9; shift; "$HELM" template "$@"; }` + "\n" + cmdText.String()
	cmd := exec.Command("bash", "-euc", script)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "HELM="+helm)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("the README's %s: %v\n%s", cmdText.String(), err, errb.String())
	}
	m := &manifest{text: out.Bytes(), objects: parseObjects(t, out.Bytes())}
	var sa corev1.ServiceAccount
	if !m.one(t, "ServiceAccount", &sa) || !strings.HasPrefix(sa.Annotations["eks.amazonaws.com/role-arn"], "arn:aws:iam::") {
		t.Errorf("the README's command gives the ServiceAccount annotations %v, want eks.amazonaws.com/role-arn", sa.Annotations)
	}
	if sa.Namespace != "cnvrg" {
		t.Errorf("namespace %q, want cnvrg", sa.Namespace)
	}
}
