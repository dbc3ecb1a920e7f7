package scanner_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/azblob"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/internal/azuritetest"
	"github.com/cnvrg/capsule/internal/gcstest"
	"github.com/cnvrg/capsule/scanner"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// serviceAccountKey is a GCP service account key as Google issues it,
// with a fresh RSA key; privateKey is its PEM body, to look for in logs.
func serviceAccountKey(t *testing.T) (keyJSON, privateKey string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "capsule-test", "private_key_id": randHex(20),
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "capsule@capsule-test.iam.gserviceaccount.com", "client_id": "123456789012345678901",
		"token_uri": "https://oauth2.googleapis.com/token", "universe_domain": "googleapis.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(out), base64.StdEncoding.EncodeToString(der)
}

// replaceSecret overwrites a Secret of the fixture's namespace.
func (f *fixture) replaceSecret(name string, data map[string]string) {
	f.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns}, StringData: data}
	if _, err := f.k.cs.CoreV1().Secrets(f.ns).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// operatorStorage is cp-object-storage as the cnvrg operator writes it:
// every key of every storage type, the in-cluster MinIO URL as the
// endpoint unless one was configured, the default bucket and region;
// then set.
func operatorStorage(set map[string]string) map[string]string {
	m := map[string]string{
		"CNVRG_STORAGE_TYPE": "minio", "CNVRG_STORAGE_ENDPOINT": "http://minio.cnvrg.example.com",
		"CNVRG_STORAGE_BUCKET": "cnvrg-storage", "CNVRG_STORAGE_REGION": "eastus",
		"CNVRG_STORAGE_ACCESS_KEY": "", "CNVRG_STORAGE_SECRET_KEY": "",
		"CNVRG_STORAGE_AZURE_ACCESS_KEY": "", "CNVRG_STORAGE_AZURE_ACCOUNT_NAME": "", "CNVRG_STORAGE_AZURE_CONTAINER": "",
		"CNVRG_STORAGE_KEYFILE": scanner.DefaultGCPKeyFile, "CNVRG_STORAGE_PROJECT": "", "CNVRG_STORAGE_GCP_SECRET_REF": scanner.DefaultGCPSecretRef,
	}
	for k, v := range set {
		m[k] = v
	}
	return m
}

// TestAzureAndGCPBuckets: one namespace's cp-object-storage is of type
// azure (an Azurite container, the account key in the Secret), another's
// of type gcp (a fake-gcs-server bucket, the service account key in
// gcp-storage-secret). One replica serves both: scheduled PostgreSQL
// backups land in the container and the bucket the Secrets name, the
// scanner reads the key Secret by name and lists no Secret, and no key
// reaches a log line.
func TestAzureAndGCPBuckets(t *testing.T) {
	id := randHex(3)
	az, gc := newFixtureIn(t, "capsule-az-"+id), newFixtureIn(t, "capsule-gcp-"+id)

	azurite := azuritetest.Shared(t)
	container := azurite.NewContainer(t)
	su, err := url.Parse(azurite.ServiceURL) // http://127.0.0.1:PORT/ACCOUNT
	if err != nil {
		t.Fatal(err)
	}
	az.replaceSecret("cp-object-storage", operatorStorage(map[string]string{
		"CNVRG_STORAGE_TYPE": "azure", "CNVRG_STORAGE_ENDPOINT": su.Scheme + "://" + su.Host,
		"CNVRG_STORAGE_ACCESS_KEY": azurite.Key, "CNVRG_STORAGE_AZURE_ACCESS_KEY": azurite.Key,
		"CNVRG_STORAGE_AZURE_ACCOUNT_NAME": azurite.Account, "CNVRG_STORAGE_AZURE_CONTAINER": container,
	}))

	fake := gcstest.Shared(t)
	gcsBucket := fake.NewBucket(t)
	keyJSON, privateKey := serviceAccountKey(t)
	gc.replaceSecret("cp-object-storage", operatorStorage(map[string]string{
		"CNVRG_STORAGE_TYPE": "gcp", "CNVRG_STORAGE_ENDPOINT": fake.Endpoint, "CNVRG_STORAGE_BUCKET": gcsBucket,
		"CNVRG_STORAGE_PROJECT": "capsule-test",
	}))
	gc.secret(scanner.DefaultGCPSecretRef, map[string]string{"key.json": keyJSON})

	for _, f := range []*fixture{az, gc} {
		f.pgOnly(func(u *unstructured.Unstructured) {
			set(t, u, "2s", "spec", "dbs", "pg", "backup", "period")
			set(t, u, int64(2), "spec", "dbs", "pg", "backup", "rotation")
		})
	}
	rec := newRecorder()
	calls := &apiCalls{rec: rec}
	rc := rest.CopyConfig(az.k.rc)
	rc.Wrap(calls.wrap)
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	logs, log := newLogBuffer(t)
	r := startReplica(t, "replica-a", rec, true, scanner.Config{
		Dynamic: dyn, Kube: cs, Namespaces: []string{az.ns, gc.ns}, HostFor: loopback, Log: log,
	})
	rec.wait(t, 30*time.Second, "both plans, or a problem", func() bool {
		_, okA := findPlan(r.sc.Plans(), az.pgPlan())
		_, okG := findPlan(r.sc.Plans(), gc.pgPlan())
		return (okA && okG) || len(r.sc.Problems()) > 0
	})
	if p := r.sc.Problems(); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	rec.wait(t, 120*time.Second, "a successful PostgreSQL backup of each plan, and retention after it", func() bool {
		retained := map[string]bool{}
		for _, run := range rec.retention {
			if run.err == nil {
				retained[run.plan] = true
			}
		}
		return len(rec.succeeded(az.pgPlan())) > 0 && len(rec.succeeded(gc.pgPlan())) > 0 && retained[az.pgPlan()] && retained[gc.pgPlan()]
	})
	r.stop()

	t.Run("the workers serve the container and the bucket", func(t *testing.T) {
		rec.mu.Lock()
		got := rec.fleets[r.name]
		rec.mu.Unlock()
		wantAz := "azblob://" + container + "/capsule/?account=" + azurite.Account + "&endpoint=" + url.QueryEscape(azurite.ServiceURL) + "#keys-"
		wantGCS := "gs://" + gcsBucket + "/capsule/?endpoint=" + url.QueryEscape(fake.Endpoint) + "#keys-"
		if len(got) != 2 || !strings.HasPrefix(got[0], wantAz) || !strings.HasPrefix(got[1], wantGCS) {
			t.Errorf("the fleet serves %v, want %s… and %s…", got, wantAz, wantGCS)
		}
	})
	t.Run("the plans say the keys came from the Secrets", func(t *testing.T) {
		for _, p := range r.sc.Plans() {
			if p.Bucket.Credentials() != "static" {
				t.Errorf("plan %s: credentials %s, want static", p.Name, p.Bucket.Credentials())
			}
		}
		if p := r.sc.Problems(); len(p) != 0 {
			t.Errorf("problems: %v", p)
		}
	})
	t.Run("the backups are in the Azure container", func(t *testing.T) {
		b, err := azblob.New(azblob.Options{Container: container, ServiceURL: azurite.ServiceURL, Account: azurite.Account, AccountKey: azurite.Key})
		if err != nil {
			t.Fatal(err)
		}
		if got := planBackups(t, bucket.Prefixed(b, "capsule/"), az.cluster(), az.pgPlan()); len(got) == 0 {
			t.Errorf("no backup of %s in container %s", az.pgPlan(), container)
		}
		if got := planBackups(t, az.bucket, az.cluster(), az.pgPlan()); len(got) != 0 {
			t.Errorf("backups of %s in the S3 bucket: %v", az.pgPlan(), got)
		}
	})
	t.Run("the backups are in the GCS bucket", func(t *testing.T) {
		b, err := gcs.New(t.Context(), gcs.Options{Bucket: gcsBucket, Endpoint: fake.Endpoint})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if got := planBackups(t, bucket.Prefixed(b, "capsule/"), gc.cluster(), gc.pgPlan()); len(got) == 0 {
			t.Errorf("no backup of %s in bucket %s", gc.pgPlan(), gcsBucket)
		}
		if got := planBackups(t, gc.bucket, gc.cluster(), gc.pgPlan()); len(got) != 0 {
			t.Errorf("backups of %s in the S3 bucket: %v", gc.pgPlan(), got)
		}
	})
	t.Run("only gets of the named Secrets", func(t *testing.T) {
		named := map[string]bool{}
		for _, f := range []*fixture{az, gc} {
			named["/api/v1/namespaces/"+f.ns+"/secrets/cp-object-storage"] = true
			named["/api/v1/namespaces/"+f.ns+"/secrets/pg-creds"] = true
		}
		keySecret := "/api/v1/namespaces/" + gc.ns + "/secrets/" + scanner.DefaultGCPSecretRef
		named[keySecret] = true
		sawKey := false
		for _, c := range calls.list() {
			method, uri, _ := strings.Cut(c, " ")
			if method != http.MethodGet || !named[uri] {
				t.Errorf("the scanner asked for %s", c)
			}
			sawKey = sawKey || uri == keySecret
		}
		if !sawKey {
			t.Errorf("the key Secret was never read: %v", calls.list())
		}
	})
	t.Run("no key in the logs", func(t *testing.T) {
		out := logs.String()
		for what, s := range map[string]string{"the account key": azurite.Key, "the private key": privateKey[40:120], "the key JSON": keyJSON[:60]} {
			if strings.Contains(out, s) {
				t.Errorf("the logs hold %s", what)
			}
		}
	})
}

// TestCloudBucketProblemsAreEvents: an azure Secret without an account, one with a
// container name that is not Azure's, and a gcp Secret whose key Secret
// does not exist each give a Warning Event on their CnvrgApp naming the
// bucketRef and the Secret's key, and no plan; the account key is in no
// log line and no Event.
func TestCloudBucketProblemsAreEvents(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	key := base64.StdEncoding.EncodeToString([]byte("capsule-test-account-key-" + randHex(16)))
	f.secret("az-no-account", operatorStorage(map[string]string{
		"CNVRG_STORAGE_TYPE": "azure", "CNVRG_STORAGE_AZURE_ACCESS_KEY": key, "CNVRG_STORAGE_AZURE_CONTAINER": "backups",
	}))
	f.secret("az-bad-container", operatorStorage(map[string]string{
		"CNVRG_STORAGE_TYPE": "azure", "CNVRG_STORAGE_AZURE_ACCESS_KEY": key, "CNVRG_STORAGE_AZURE_ACCOUNT_NAME": "capsuletest",
		"CNVRG_STORAGE_AZURE_CONTAINER": "backups/../other",
	}))
	f.secret("gcp-no-key-secret", operatorStorage(map[string]string{
		"CNVRG_STORAGE_TYPE": "gcp", "CNVRG_STORAGE_BUCKET": "capsule-backups", "CNVRG_STORAGE_GCP_SECRET_REF": "no-such-secret",
	}))
	want := map[string]string{
		"app-no-account":    `Secret "az-no-account": CNVRG_STORAGE_AZURE_ACCOUNT_NAME: required for azure`,
		"app-bad-container": `Secret "az-bad-container": CNVRG_STORAGE_AZURE_CONTAINER: "backups/../other" is not a container name`,
		"app-gcp":           `Secret "gcp-no-key-secret": CNVRG_STORAGE_GCP_SECRET_REF: Secret "no-such-secret" not found in namespace ` + f.ns,
	}
	refs := map[string]string{"app-no-account": "az-no-account", "app-bad-container": "az-bad-container", "app-gcp": "gcp-no-key-secret"}
	for app, ref := range refs {
		f.app(app, func(u *unstructured.Unstructured) {
			set(t, u, false, "spec", "dbs", "redis", "backup", "enabled")
			set(t, u, ref, "spec", "dbs", "pg", "backup", "bucketRef")
		})
	}
	logs, log := newLogBuffer(t)
	rec := newRecorder()
	r := startReplica(t, "replica-a", rec, false, scanner.Config{
		Dynamic: f.k.dyn, Kube: f.k.cs, Namespaces: []string{f.ns}, HostFor: loopback, Log: log,
	})
	rec.wait(t, 30*time.Second, "a problem for each CnvrgApp", func() bool { return len(r.sc.Problems()) >= len(want) })
	if ps := r.sc.Plans(); len(ps) != 0 {
		t.Errorf("plans %v, want none", ps)
	}
	for app, msg := range want {
		t.Run(app, func(t *testing.T) {
			found := false
			for _, p := range r.sc.Problems() {
				if p.App.Name == app {
					found = true
					if p.Field != "spec.dbs.pg.backup.bucketRef" || !strings.HasPrefix(p.Message, msg) {
						t.Errorf("problem %s: %q, want spec.dbs.pg.backup.bucketRef: %q", app, p.Error(), msg)
					}
				}
			}
			if !found {
				t.Fatalf("no problem for %s: %v", app, r.sc.Problems())
			}
			events, err := f.k.cs.CoreV1().Events(f.ns).List(ctx, metav1.ListOptions{
				FieldSelector: fields.OneTermEqualSelector("involvedObject.name", app).String(),
			})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range events.Items {
				if e.Reason == scanner.ReasonInvalidBackupPlan && e.Type == corev1.EventTypeWarning {
					got = append(got, e.Message)
				}
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], "spec.dbs.pg.backup.bucketRef: "+msg) {
				t.Errorf("Warning Events on %s: %q, want one: %q", app, got, msg)
			}
		})
	}
	t.Run("no key in the logs", func(t *testing.T) {
		if strings.Contains(logs.String(), key) {
			t.Error("the logs hold the account key")
		}
	})
}
