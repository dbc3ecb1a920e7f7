package scanner

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/crypt/crypttest"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// sampleApp reads testdata/cnvrgapp.yaml, the conventions' sample.
func sampleApp(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile("testdata/cnvrgapp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

type secretMap map[string]map[string]string

func (s secretMap) get(_ context.Context, ns, name string) (map[string][]byte, error) {
	d, ok := s[ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
	}
	out := map[string][]byte{}
	for k, v := range d {
		out[k] = []byte(v)
	}
	return out, nil
}

func sampleSecrets() secretMap {
	return secretMap{
		"cnvrg/pg-creds":    {"POSTGRES_HOST": "postgres", "POSTGRES_DB": "cnvrg_production", "POSTGRES_USER": "cnvrg", "POSTGRES_PASSWORD": "pg-secret-pw"},
		"cnvrg/redis-creds": {"CNVRG_REDIS_PASSWORD": "redis-secret-pw", "REDIS_URL": "redis://:redis-secret-pw@redis"},
		"cnvrg/cp-object-storage": {"CNVRG_STORAGE_TYPE": "minio", "CNVRG_STORAGE_ENDPOINT": "http://minio.cnvrg:9000",
			"CNVRG_STORAGE_BUCKET": "cnvrg-storage", "CNVRG_STORAGE_ACCESS_KEY": "AK", "CNVRG_STORAGE_SECRET_KEY": "storage-secret-key"},
	}
}

func testParser(secrets secretMap) *parser {
	return &parser{prefix: "capsule/", hostFor: func(svc, ns string) string { return svc + "." + ns }, secret: secrets.get}
}

func TestSamplePlans(t *testing.T) {
	res := testParser(sampleSecrets()).app(context.Background(), sampleApp(t))
	if len(res.problems) != 0 {
		t.Fatalf("problems: %v", res.problems)
	}
	if len(res.plans) != 2 {
		t.Fatalf("%d plans, want pg and redis (es has no backup block)", len(res.plans))
	}
	pg, redis := res.plans[0], res.plans[1]
	if pg.Name != "cnvrg/cnvrg-app/pg" || pg.Cluster != "cnvrg/cnvrg-app" || pg.Engine != "postgres" {
		t.Errorf("pg plan: %s %s %s", pg.Name, pg.Cluster, pg.Engine)
	}
	if got := pg.SourceConfig["url"]; got != "postgres://cnvrg@postgres.cnvrg:5432/cnvrg_production" {
		t.Errorf("pg url %v", got)
	}
	if pw, _ := pg.Source().Secret(context.Background()); pw != "pg-secret-pw" {
		t.Errorf("pg password %q", pw)
	}
	if pg.Schedule.Period.String() != "24h0m0s" || pg.Rotation != 5 {
		t.Errorf("pg schedule %s rotation %d", pg.Schedule.Spec, pg.Rotation)
	}
	if got := redis.SourceConfig["url"]; got != "redis://redis.cnvrg:6379" {
		t.Errorf("redis url %v", got)
	}
	if pw, _ := redis.Source().Secret(context.Background()); pw != "redis-secret-pw" {
		t.Errorf("redis password %q", pw)
	}
	if redis.Schedule.Period.String() != "6h0m0s" || redis.Rotation != 10 {
		t.Errorf("redis schedule %s rotation %d", redis.Schedule.Spec, redis.Rotation)
	}
	if got, want := pg.Bucket.URL(), "s3://cnvrg-storage/capsule/?endpoint=http%3A%2F%2Fminio.cnvrg%3A9000&region=us-east-1"; got != want {
		t.Errorf("bucket url %s, want %s", got, want)
	}
	if pg.Bucket.Credentials() != "static" {
		t.Errorf("credentials %s", pg.Bucket.Credentials())
	}
	if strings.Join(res.secrets, ",") != "cnvrg/cp-object-storage,cnvrg/pg-creds,cnvrg/redis-creds" {
		t.Errorf("secrets %v", res.secrets)
	}
	out, err := json.Marshal(res.plans)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"pg-secret-pw", "redis-secret-pw", "storage-secret-key", `"AK"`} {
		if strings.Contains(string(out), secret) {
			t.Errorf("a plan's JSON holds a secret (%s): %s", secret, out)
		}
	}
}

func TestClusterOverrideAndNoDB(t *testing.T) {
	secrets := sampleSecrets()
	delete(secrets["cnvrg/pg-creds"], "POSTGRES_DB")
	ps := testParser(secrets)
	ps.cluster = "prod"
	res := ps.app(context.Background(), sampleApp(t))
	if len(res.plans) != 2 || res.plans[0].Cluster != "prod" {
		t.Fatalf("plans %v problems %v", res.plans, res.problems)
	}
	if res.plans[0].SourceConfig["databases"] != "all" || res.plans[0].SourceConfig["url"] != "postgres://cnvrg@postgres.cnvrg:5432" {
		t.Errorf("pg config %v", res.plans[0].SourceConfig)
	}
}

func TestInvalidBlocksAreProblems(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(app *unstructured.Unstructured, s secretMap)
		field  string
		plans  int
		substr string
	}{
		{"bad period", func(a *unstructured.Unstructured, _ secretMap) {
			_ = unstructured.SetNestedField(a.Object, "every day", "spec", "dbs", "pg", "backup", "period")
		}, "spec.dbs.pg.backup.period", 1, "neither a period"},
		{"zero rotation", func(a *unstructured.Unstructured, _ secretMap) {
			_ = unstructured.SetNestedField(a.Object, int64(0), "spec", "dbs", "redis", "backup", "rotation")
		}, "spec.dbs.redis.backup.rotation", 1, "at least 1"},
		{"missing creds secret", func(_ *unstructured.Unstructured, s secretMap) { delete(s, "cnvrg/pg-creds") }, "spec.dbs.pg.backup.credsRef", 1, `"pg-creds" not found`},
		{"missing user", func(_ *unstructured.Unstructured, s secretMap) { delete(s["cnvrg/pg-creds"], "POSTGRES_USER") }, "spec.dbs.pg.backup.credsRef", 1, "POSTGRES_USER"},
		{"azure bucket", func(_ *unstructured.Unstructured, s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_TYPE"] = "azure"
		},
			"spec.dbs.pg.backup.bucketRef", 0, "CNVRG_STORAGE_AZURE_ACCOUNT_NAME: required for azure"},
		{"unknown storage type", func(_ *unstructured.Unstructured, s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_TYPE"] = "ceph"
		},
			"spec.dbs.pg.backup.bucketRef", 0, `"ceph" is not one of minio, aws, azure, gcp`},
		{"bad port", func(a *unstructured.Unstructured, _ secretMap) {
			_ = unstructured.SetNestedField(a.Object, int64(70000), "spec", "dbs", "redis", "port")
		}, "spec.dbs.redis.port", 1, "not a port"},
		{"svcName with a path", func(a *unstructured.Unstructured, _ secretMap) {
			_ = unstructured.SetNestedField(a.Object, "169.254.169.254/latest/meta-data", "spec", "dbs", "redis", "svcName")
		}, "spec.dbs.redis.svcName", 1, "RFC 1123"},
		{"endpoint with a path", func(_ *unstructured.Unstructured, s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_ENDPOINT"] = "http://169.254.169.254/latest/meta-data"
		}, "spec.dbs.pg.backup.bucketRef", 0, "no path"},
		{"endpoint with a bad port", func(_ *unstructured.Unstructured, s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_ENDPOINT"] = "http://minio:99999"
		}, "spec.dbs.pg.backup.bucketRef", 0, "not a port number"},
		{"endpoint with a user", func(_ *unstructured.Unstructured, s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_ENDPOINT"] = "http://evil@minio:9000"
		}, "spec.dbs.pg.backup.bucketRef", 0, "no user"},
		{"bucket name with a slash", func(_ *unstructured.Unstructured, s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_BUCKET"] = "b/../other"
		}, "spec.dbs.pg.backup.bucketRef", 0, "not a bucket name"},
		{"region with a host", func(_ *unstructured.Unstructured, s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_REGION"] = "evil.example.com/x"
		}, "spec.dbs.pg.backup.bucketRef", 0, "not a region"},
		{"bad verify annotation keeps the backups", func(a *unstructured.Unstructured, _ secretMap) {
			a.SetAnnotations(map[string]string{"capsule.cnvrg.io/verify-pg": "often"})
		}, "metadata.annotations.capsule.cnvrg.io/verify-pg", 2, "every=N"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			app, secrets := sampleApp(t), sampleSecrets()
			c.edit(app, secrets)
			res := testParser(secrets).app(context.Background(), app)
			if len(res.plans) != c.plans {
				t.Errorf("%d plans, want %d", len(res.plans), c.plans)
			}
			if len(res.problems) == 0 {
				t.Fatal("no problem reported")
			}
			p := res.problems[0]
			if p.Field != c.field || !strings.Contains(p.Message, c.substr) {
				t.Errorf("problem %q, want field %s and %q", p.Error(), c.field, c.substr)
			}
			if p.App.Name != "cnvrg-app" || p.App.Namespace != "cnvrg" {
				t.Errorf("problem's app %v", p.App)
			}
		})
	}
}

func TestDisabledBlocks(t *testing.T) {
	app := sampleApp(t)
	_ = unstructured.SetNestedField(app.Object, false, "spec", "dbs", "pg", "backup", "enabled")
	unstructured.RemoveNestedField(app.Object, "spec", "dbs", "redis", "backup")
	res := testParser(sampleSecrets()).app(context.Background(), app)
	if len(res.plans) != 0 || len(res.problems) != 0 {
		t.Errorf("plans %v problems %v, want none", res.plans, res.problems)
	}
}

func TestVerifySettings(t *testing.T) {
	app := sampleApp(t)
	app.SetAnnotations(map[string]string{"capsule.cnvrg.io/verify-pg": "every=3", "capsule.cnvrg.io/verify-redis": "period=12h"})
	res := testParser(sampleSecrets()).app(context.Background(), app)
	if len(res.plans) != 2 || len(res.problems) != 0 {
		t.Fatalf("plans %v problems %v", res.plans, res.problems)
	}
	if v := res.plans[0].Verify; v == nil || v.Every != 3 {
		t.Errorf("pg verify %+v", v)
	}
	if v := res.plans[1].Verify; v == nil || v.Schedule == nil || v.Schedule.Period.Hours() != 12 {
		t.Errorf("redis verify %+v", v)
	}
	// The block's own setting (a CRD that keeps it) wins over the annotation.
	_ = unstructured.SetNestedField(app.Object, map[string]any{"every": int64(2)}, "spec", "dbs", "pg", "backup", "verify")
	res = testParser(sampleSecrets()).app(context.Background(), app)
	if v := res.plans[0].Verify; v == nil || v.Every != 2 {
		t.Errorf("pg verify from the block %+v", v)
	}
}

func TestAWSRoleBucket(t *testing.T) {
	secrets := sampleSecrets()
	secrets["cnvrg/cp-object-storage"] = map[string]string{"CNVRG_STORAGE_TYPE": "aws", "CNVRG_STORAGE_REGION": "eu-west-1", "CNVRG_STORAGE_BUCKET": "b"}
	res := testParser(secrets).app(context.Background(), sampleApp(t))
	if len(res.plans) != 2 {
		t.Fatalf("problems %v", res.problems)
	}
	if b := res.plans[0].Bucket; b.Credentials() != "role" || b.URL() != "s3://b/capsule/?region=eu-west-1" {
		t.Errorf("bucket %s credentials %s", b.URL(), b.Credentials())
	}
}

// A plan names the recipients of its backups and the Secret whose age
// identities open them; the printed plan holds neither identity.
func TestPlanEncryption(t *testing.T) {
	key, ssh := crypttest.X25519(t), crypttest.SSH(t)
	secrets := sampleSecrets()
	secrets["cnvrg/pg-age"] = map[string]string{"AGE_IDENTITY": string(key.Identity)}
	secrets["cnvrg/redis-ssh"] = map[string]string{"ssh-privatekey": string(ssh.Identity)}
	app := sampleApp(t)
	unstructured.SetNestedMap(app.Object, map[string]any{"recipients": []any{key.Recipient, ssh.Recipient + " ops"}, "identityRef": "pg-age"}, "spec", "dbs", "pg", "backup", "encryption")
	app.SetAnnotations(map[string]string{RecipientsAnnotationPrefix + "redis": ssh.Recipient, IdentityAnnotationPrefix + "redis": "redis-ssh"})
	res := testParser(secrets).app(context.Background(), app)
	if len(res.problems) != 0 || len(res.plans) != 2 {
		t.Fatalf("problems %v, %d plans", res.problems, len(res.plans))
	}
	for i, want := range []struct {
		recipients []string
		secret     string
		identity   []byte
	}{{[]string{key.Recipient, ssh.Recipient}, "pg-age", key.Identity}, {[]string{ssh.Recipient}, "redis-ssh", ssh.Identity}} {
		p := res.plans[i]
		src := p.Source()
		if !slices.Equal(src.Recipients, want.recipients) || p.IdentitySecret != want.secret || src.Identities == nil {
			t.Fatalf("plan %s: recipients %v secret %q, want %v %q", p.Name, src.Recipients, p.IdentitySecret, want.recipients, want.secret)
		}
		got, err := src.Identities(context.Background())
		if err != nil || len(got) != 1 {
			t.Fatalf("plan %s identities: %v %v", p.Name, got, err)
		}
		for origin, v := range got {
			if string(v) != string(want.identity) || !strings.Contains(origin, "Secret cnvrg/"+want.secret) {
				t.Errorf("plan %s: identity from %s", p.Name, origin)
			}
		}
		printed, _ := json.Marshal(p)
		if strings.Contains(string(printed), "AGE-SECRET-KEY") || strings.Contains(string(printed), "PRIVATE KEY") || !strings.Contains(string(printed), want.secret) {
			t.Errorf("printed plan: %s", printed)
		}
	}

	// A secret key given as a recipient, and a Secret that holds no
	// identity, are problems that quote neither.
	secrets["cnvrg/pg-age"] = map[string]string{"AGE_IDENTITY": "not a key"}
	secretKey := strings.TrimSpace(strings.Split(string(key.Identity), "\n")[1])
	unstructured.SetNestedSlice(app.Object, []any{secretKey}, "spec", "dbs", "redis", "backup", "encryption", "recipients")
	res = testParser(secrets).app(context.Background(), app)
	var fields []string
	for _, p := range res.problems {
		fields = append(fields, p.Field)
		if strings.Contains(p.Message, secretKey) || strings.Contains(p.Message, "not a key") {
			t.Errorf("problem quotes a secret: %s", p.Message)
		}
	}
	if len(res.plans) != 0 || !slices.Contains(fields, "spec.dbs.pg.backup.encryption.identityRef") || !slices.Contains(fields, "spec.dbs.redis.backup.encryption.recipients") {
		t.Fatalf("plans %d, problems at %v", len(res.plans), fields)
	}
}

// TestPITRSettings: the annotation capsule.cnvrg.io/pitr-pg (or the
// block's backup.pitr, which wins) turns pitr on in the plan's source and
// shows in the printed plan; a bad value, or pitr on another engine, is
// one problem at the setting and the plan goes on without pitr.
func TestPITRSettings(t *testing.T) {
	app := sampleApp(t)
	app.SetAnnotations(map[string]string{PITRAnnotationPrefix + "pg": "true"})
	res := testParser(sampleSecrets()).app(context.Background(), app)
	if len(res.plans) != 2 || len(res.problems) != 0 {
		t.Fatalf("plans %v problems %v", res.plans, res.problems)
	}
	pg, redis := res.plans[0], res.plans[1]
	if !pg.PITR || pg.Source().Config["pitr"] != true || redis.PITR || redis.Source().Config["pitr"] != nil {
		t.Errorf("pg pitr %v config %v; redis pitr %v config %v", pg.PITR, pg.SourceConfig, redis.PITR, redis.SourceConfig)
	}
	printed, _ := json.Marshal(pg)
	var view struct {
		PITR   *bool `json:"pitr"`
		Source struct {
			Config map[string]any `json:"config"`
		} `json:"source"`
	}
	if err := json.Unmarshal(printed, &view); err != nil || view.PITR == nil || !*view.PITR || view.Source.Config["pitr"] != true {
		t.Errorf("printed plan %s", printed)
	}
	printed, _ = json.Marshal(redis)
	if !strings.Contains(string(printed), `"pitr":false`) {
		t.Errorf("printed redis plan %s, want pitr false", printed)
	}

	// The block's own setting wins over the annotation.
	_ = unstructured.SetNestedField(app.Object, false, "spec", "dbs", "pg", "backup", "pitr")
	res = testParser(sampleSecrets()).app(context.Background(), app)
	if len(res.plans) != 2 || len(res.problems) != 0 || res.plans[0].PITR {
		t.Errorf("backup.pitr false: plans %v problems %v", res.plans, res.problems)
	}
	unstructured.RemoveNestedField(app.Object, "spec", "dbs", "pg", "backup", "pitr")

	for _, c := range []struct {
		name  string
		ann   map[string]string
		block any
		field string
		msg   string
	}{
		{"bad value", map[string]string{PITRAnnotationPrefix + "pg": "yes"}, nil, "metadata.annotations." + PITRAnnotationPrefix + "pg", `"yes": want "true" or "false"`},
		{"redis", map[string]string{PITRAnnotationPrefix + "redis": "true"}, nil, "metadata.annotations." + PITRAnnotationPrefix + "redis", "PostgreSQL only, not redis"},
		{"block not a bool", nil, "true", "spec.dbs.pg.backup.pitr", "must be true or false"},
	} {
		t.Run(c.name, func(t *testing.T) {
			app := sampleApp(t)
			app.SetAnnotations(c.ann)
			if c.block != nil {
				_ = unstructured.SetNestedField(app.Object, c.block, "spec", "dbs", "pg", "backup", "pitr")
			}
			res := testParser(sampleSecrets()).app(context.Background(), app)
			if len(res.plans) != 2 || len(res.problems) != 1 {
				t.Fatalf("plans %d problems %v, want both plans and one problem", len(res.plans), res.problems)
			}
			for _, p := range res.plans {
				if p.PITR || p.SourceConfig["pitr"] != nil {
					t.Errorf("plan %s has pitr on", p.Name)
				}
			}
			if p := res.problems[0]; p.Field != c.field || !strings.Contains(p.Message, c.msg) {
				t.Errorf("problem %+v, want at %s with %q", p, c.field, c.msg)
			}
		})
	}
}
