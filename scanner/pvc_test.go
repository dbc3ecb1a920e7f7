package scanner

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// operatorPVC is the PostgreSQL PVC as the cnvrg operator leaves it: owned
// by the CnvrgApp, with the backup block copied into annotations.
func operatorPVC(app *unstructured.Unstructured, ann map[string]string) *unstructured.Unstructured {
	pvc := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "PersistentVolumeClaim"}}
	pvc.SetNamespace("cnvrg")
	pvc.SetName("pg-storage")
	pvc.SetUID("pvc-uid")
	base := map[string]string{
		annBackup: "true", annServiceType: "postgresql", annBucketRef: "cp-object-storage",
		annCredsRef: "pg-creds", annRotation: "5", annPeriod: "24h",
	}
	for k, v := range ann {
		if v == "-" {
			delete(base, k)
			continue
		}
		base[k] = v
	}
	pvc.SetAnnotations(base)
	if app != nil {
		yes := true
		pvc.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: Group + "/" + Version, Kind: "CnvrgApp", Name: app.GetName(), UID: app.GetUID(), Controller: &yes}})
	}
	return pvc
}

// operatorSecrets are pg-creds and cp-object-storage as the operator
// writes them: both spellings of the PostgreSQL keys and the admin's
// password.
func operatorSecrets() secretMap {
	s := sampleSecrets()
	s["cnvrg/pg-creds"] = map[string]string{
		"POSTGRESQL_USER": "cnvrg", "POSTGRESQL_PASSWORD": "pg-secret-pw", "POSTGRESQL_ADMIN_PASSWORD": "pg-admin-pw",
		"POSTGRESQL_DATABASE": "cnvrg_production", "POSTGRES_DB": "cnvrg_production", "POSTGRES_USER": "cnvrg",
		"POSTGRES_PASSWORD": "pg-secret-pw", "POSTGRES_HOST": "postgres",
	}
	return s
}

func sampleAppWithUID(t *testing.T) *unstructured.Unstructured {
	app := sampleApp(t)
	app.SetUID(types.UID("app-uid"))
	return app
}

func TestPVCPlanIsTheCnvrgAppsPlan(t *testing.T) {
	app := sampleAppWithUID(t)
	ps := testParser(operatorSecrets())
	fromApp := ps.app(context.Background(), app)
	fromPVC := ps.pvc(context.Background(), operatorPVC(app, map[string]string{annPeriod: "1.5h", annRotation: "3"}))
	if len(fromPVC.problems) != 0 || len(fromPVC.plans) != 1 {
		t.Fatalf("plans %v problems %v", fromPVC.plans, fromPVC.problems)
	}
	p, a := fromPVC.plans[0], fromApp.plans[0]
	if p.Name != a.Name || p.Name != "cnvrg/cnvrg-app/pg" || p.Cluster != a.Cluster || p.Bucket.Key() != a.Bucket.Key() {
		t.Errorf("PVC plan %s (cluster %s, bucket %s), CnvrgApp plan %s (cluster %s, bucket %s): want the same", p.Name, p.Cluster, p.Bucket.Key(), a.Name, a.Cluster, a.Bucket.Key())
	}
	if p.From != FromPVC || p.PVC != "pg-storage" || a.From != FromCnvrgApp {
		t.Errorf("from %q pvc %q; app plan from %q", p.From, p.PVC, a.From)
	}
	if p.Schedule.Period != 90*time.Minute || p.Rotation != 3 {
		t.Errorf("period %s rotation %d, want 1h30m and 3", p.Schedule.Period, p.Rotation)
	}
	if p.Host != "postgres.cnvrg" || p.Port != 5432 || p.SourceConfig["url"] != "postgres://cnvrg@postgres.cnvrg:5432/cnvrg_production" {
		t.Errorf("host %s port %d url %v", p.Host, p.Port, p.SourceConfig["url"])
	}
	if !p.hasAdmin || p.admin != "pg-admin-pw" || !a.hasAdmin {
		t.Errorf("the admin password was not read: pvc %v app %v", p.hasAdmin, a.hasAdmin)
	}
	out, _ := json.Marshal(p)
	for _, secret := range []string{"pg-secret-pw", "pg-admin-pw", "storage-secret-key"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("the plan prints a secret: %s", out)
		}
	}
	if !strings.Contains(string(out), `"from":"pvc"`) || !strings.Contains(string(out), `"adminPassword":true`) {
		t.Errorf("plan JSON %s", out)
	}
}

func TestPVCPlanKeysOfTheImage(t *testing.T) {
	// Only the PostgreSQL image's spellings, no POSTGRES_HOST: the
	// operator's defaults fill in.
	secrets := operatorSecrets()
	secrets["cnvrg/pg-creds"] = map[string]string{"POSTGRESQL_USER": "cnvrg", "POSTGRESQL_PASSWORD": "pw", "POSTGRESQL_DATABASE": "cnvrg_production"}
	res := testParser(secrets).pvc(context.Background(), operatorPVC(nil, map[string]string{annCredsRef: "-", annBucketRef: "-", annPeriod: "-", annRotation: "-"}))
	if len(res.problems) != 0 || len(res.plans) != 1 {
		t.Fatalf("plans %v problems %v", res.plans, res.problems)
	}
	p := res.plans[0]
	if p.Name != "cnvrg/pg-storage/pg" || p.Cluster != "cnvrg/pg-storage" || p.Host != "postgres.cnvrg" || p.password != "pw" || p.hasAdmin ||
		p.Schedule.Spec != DefaultPeriod || p.Rotation != DefaultRotation || p.CredsSecret != DefaultPgCreds || p.Bucket.Secret != DefaultBucketRef {
		t.Errorf("plan %+v", p)
	}
	if p.SourceConfig["url"] != "postgres://cnvrg@postgres.cnvrg:5432/cnvrg_production" {
		t.Errorf("url %v", p.SourceConfig["url"])
	}
}

func TestPVCAnnotationProblems(t *testing.T) {
	for _, c := range []struct {
		name    string
		ann     map[string]string
		secrets func(secretMap)
		field   string
		msg     string
	}{
		{"bad period", map[string]string{annPeriod: "1.5d"}, nil, annotationPath(annPeriod), "neither a period"},
		{"rotation", map[string]string{annRotation: "five"}, nil, annotationPath(annRotation), "not a whole number"},
		{"rotation zero", map[string]string{annRotation: "0"}, nil, annotationPath(annRotation), "at least 1"},
		{"service type", map[string]string{annServiceType: "redis"}, nil, annotationPath(annServiceType), "not supported"},
		{"missing creds", map[string]string{annCredsRef: "nope"}, nil, annotationPath(annCredsRef), `Secret "nope" not found`},
		{"host", nil, func(s secretMap) { s["cnvrg/pg-creds"]["POSTGRES_HOST"] = "169.254.169.254/latest" }, annotationPath(annCredsRef), "not a Service name"},
		{"azure", nil, func(s secretMap) { s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_TYPE"] = "azure" }, annotationPath(annBucketRef), "CNVRG_STORAGE_AZURE_ACCOUNT_NAME: required for azure"},
	} {
		t.Run(c.name, func(t *testing.T) {
			secrets := operatorSecrets()
			if c.secrets != nil {
				c.secrets(secrets)
			}
			res := testParser(secrets).pvc(context.Background(), operatorPVC(nil, c.ann))
			if len(res.plans) != 0 || len(res.problems) != 1 {
				t.Fatalf("plans %v problems %v, want one problem", res.plans, res.problems)
			}
			p := res.problems[0]
			if p.Field != c.field || !strings.Contains(p.Message, c.msg) || p.PVC != "pg-storage" || p.Where() != "persistentvolumeclaim cnvrg/pg-storage" {
				t.Errorf("problem %+v, want field %s with %q", p, c.field, c.msg)
			}
		})
	}
	t.Run("disabled", func(t *testing.T) {
		res := testParser(operatorSecrets()).pvc(context.Background(), operatorPVC(nil, map[string]string{annBackup: "false"}))
		if len(res.plans)+len(res.problems) != 0 {
			t.Errorf("plans %v problems %v, want none", res.plans, res.problems)
		}
	})
}

// TestOneServiceOnePlan: a CnvrgApp and its annotated PVC describe the
// same service: one plan, the CnvrgApp's where the CnvrgApps were read,
// else the PVC's under the same name.
func TestOneServiceOnePlan(t *testing.T) {
	app := sampleAppWithUID(t)
	ps := testParser(operatorSecrets())
	known := func(string) bool { return true }
	unknown := func(string) bool { return false }
	pgPlans := func(rs []scanned) []Plan {
		var out []Plan
		for _, r := range rs {
			for _, p := range r.plans {
				if p.Service == "pg" {
					out = append(out, p)
				}
			}
		}
		return out
	}
	for _, c := range []struct {
		name      string
		apps      []*unstructured.Unstructured
		pvc       *unstructured.Unstructured
		appsKnown func(string) bool
		from      string
	}{
		{"owned, CnvrgApps read", []*unstructured.Unstructured{app}, operatorPVC(app, nil), known, FromCnvrgApp},
		{"by pvcName, CnvrgApps read", []*unstructured.Unstructured{app}, operatorPVC(nil, nil), known, FromCnvrgApp},
		{"owned, no access to CnvrgApps", nil, operatorPVC(app, nil), unknown, FromPVC},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := pgPlans(ps.scan(context.Background(), c.apps, []*unstructured.Unstructured{c.pvc}, c.appsKnown))
			if len(got) != 1 || got[0].Name != "cnvrg/cnvrg-app/pg" || got[0].From != c.from {
				t.Errorf("pg plans %v, want one, cnvrg/cnvrg-app/pg from %s", got, c.from)
			}
		})
	}
	t.Run("the CnvrgApp disabled the backup", func(t *testing.T) {
		off := app.DeepCopy()
		_ = unstructured.SetNestedField(off.Object, false, "spec", "dbs", "pg", "backup", "enabled")
		// The operator has not copied the change onto the PVC yet.
		if got := pgPlans(ps.scan(context.Background(), []*unstructured.Unstructured{off}, []*unstructured.Unstructured{operatorPVC(app, nil)}, known)); len(got) != 0 {
			t.Errorf("pg plans %v, want none: the CnvrgApp says no", got)
		}
	})
	t.Run("two PVCs, one plan name", func(t *testing.T) {
		other := operatorPVC(app, nil)
		other.SetName("pg-storage-2")
		rs := ps.scan(context.Background(), nil, []*unstructured.Unstructured{operatorPVC(app, nil), other}, unknown)
		got := pgPlans(rs)
		var problems []Problem
		for _, r := range rs {
			problems = append(problems, r.problems...)
		}
		if len(got) != 1 || got[0].PVC != "pg-storage" || len(problems) != 1 || problems[0].PVC != "pg-storage-2" ||
			!strings.Contains(problems[0].Message, "already described by PersistentVolumeClaim pg-storage") {
			t.Errorf("plans %v problems %v", got, problems)
		}
	})
}

// TestAWSOperatorMinioEndpoint: for CNVRG_STORAGE_TYPE aws, the
// operator's default in-cluster MinIO URL is ignored (the bucket is on
// AWS); another endpoint is used; minio keeps its endpoint.
func TestAWSOperatorMinioEndpoint(t *testing.T) {
	for _, c := range []struct {
		typ, endpoint, wantURL, ignored string
	}{
		{"aws", "http://minio.cnvrg.example.com", "s3://b/capsule/?region=eu-west-1", "http://minio.cnvrg.example.com"},
		{"aws", "https://minio-prefix.apps.example.com:443", "s3://b/capsule/?region=eu-west-1", "https://minio-prefix.apps.example.com:443"},
		{"aws", "https://s3.eu-west-1.amazonaws.com", "s3://b/capsule/?endpoint=https%3A%2F%2Fs3.eu-west-1.amazonaws.com&region=eu-west-1", ""},
		{"minio", "http://minio.cnvrg.example.com", "s3://b/capsule/?endpoint=http%3A%2F%2Fminio.cnvrg.example.com&region=eu-west-1", ""},
	} {
		spec, err := bucketSpec("cp-object-storage", map[string][]byte{
			keyStorageType: []byte(c.typ), keyStorageEndpoint: []byte(c.endpoint), keyStorageRegion: []byte("eu-west-1"),
			keyStorageBucket: []byte("b"), keyStorageAccess: []byte("AK"), keyStorageSecret: []byte("SK"),
		}, "capsule/")
		if err != nil {
			t.Errorf("%s %s: %v", c.typ, c.endpoint, err)
			continue
		}
		if spec.URL() != c.wantURL || spec.IgnoredEndpoint != c.ignored {
			t.Errorf("%s %s: url %s ignored %q, want %s and %q", c.typ, c.endpoint, spec.URL(), spec.IgnoredEndpoint, c.wantURL, c.ignored)
		}
	}
}

// TestPVCPITR: capsule.mlops.cnvrg.io/pitr on the PVC turns pitr on in
// its plan; a bad value is one problem on the PVC and the plan goes on
// without pitr.
func TestPVCPITR(t *testing.T) {
	res := testParser(operatorSecrets()).pvc(context.Background(), operatorPVC(nil, map[string]string{annPITR: "true"}))
	if len(res.plans) != 1 || len(res.problems) != 0 || !res.plans[0].PITR || res.plans[0].SourceConfig["pitr"] != true {
		t.Fatalf("plans %+v problems %v, want one plan with pitr", res.plans, res.problems)
	}
	res = testParser(operatorSecrets()).pvc(context.Background(), operatorPVC(nil, map[string]string{annPITR: "on"}))
	if len(res.plans) != 1 || res.plans[0].PITR || len(res.problems) != 1 {
		t.Fatalf("plans %+v problems %v, want the plan without pitr and one problem", res.plans, res.problems)
	}
	if p := res.problems[0]; p.Field != annotationPath(annPITR) || p.PVC != "pg-storage" || !strings.Contains(p.Message, `"on"`) {
		t.Errorf("problem %+v", p)
	}
}
