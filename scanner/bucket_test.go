package scanner

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testKeyJSON is a service account key with a fresh RSA key.
func testKeyJSON(t *testing.T) string {
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
		"type": "service_account", "project_id": "capsule-test", "private_key_id": "0123456789abcdef",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "capsule@capsule-test.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// azureKey is an account key as Azure gives it (64 random bytes, base64).
func azureKey(t *testing.T) string {
	b := make([]byte, 64)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// operatorAzure is cp-object-storage as the operator writes it for azure:
// every key of every type, the in-cluster MinIO URL as the endpoint, the
// default bucket and region, and the account key twice.
func operatorAzure(key string) map[string]string {
	return map[string]string{
		"CNVRG_STORAGE_TYPE": "azure", "CNVRG_STORAGE_ENDPOINT": "http://minio.cnvrg.example.com",
		"CNVRG_STORAGE_BUCKET": "cnvrg-storage", "CNVRG_STORAGE_REGION": "eastus",
		"CNVRG_STORAGE_ACCESS_KEY": key, "CNVRG_STORAGE_SECRET_KEY": "",
		"CNVRG_STORAGE_AZURE_ACCESS_KEY": key, "CNVRG_STORAGE_AZURE_ACCOUNT_NAME": "cnvrgstore", "CNVRG_STORAGE_AZURE_CONTAINER": "backups",
		"CNVRG_STORAGE_KEYFILE": DefaultGCPKeyFile, "CNVRG_STORAGE_PROJECT": "", "CNVRG_STORAGE_GCP_SECRET_REF": DefaultGCPSecretRef,
	}
}

// operatorGCP is the same for gcp, with its key Secret.
func operatorGCP(key string) (storage, keySecret map[string]string) {
	return map[string]string{
			"CNVRG_STORAGE_TYPE": "gcp", "CNVRG_STORAGE_ENDPOINT": "http://minio.cnvrg.example.com",
			"CNVRG_STORAGE_BUCKET": "cnvrg-backups", "CNVRG_STORAGE_REGION": "eastus",
			"CNVRG_STORAGE_ACCESS_KEY": "", "CNVRG_STORAGE_SECRET_KEY": "",
			"CNVRG_STORAGE_AZURE_ACCESS_KEY": "", "CNVRG_STORAGE_AZURE_ACCOUNT_NAME": "", "CNVRG_STORAGE_AZURE_CONTAINER": "",
			"CNVRG_STORAGE_KEYFILE": DefaultGCPKeyFile, "CNVRG_STORAGE_PROJECT": "capsule-test", "CNVRG_STORAGE_GCP_SECRET_REF": DefaultGCPSecretRef,
		},
		map[string]string{"key.json": key}
}

// pgPlanOf runs the sample CnvrgApp's pg block against secrets and
// returns its plan, or its first problem.
func pgPlanOf(t *testing.T, ps *parser) (Plan, *Problem) {
	t.Helper()
	res := ps.app(context.Background(), sampleApp(t))
	for _, p := range res.problems {
		if p.Field == "spec.dbs.pg.backup.bucketRef" {
			return Plan{}, &p
		}
	}
	if len(res.problems) != 0 {
		t.Fatalf("problems: %v", res.problems)
	}
	for _, p := range res.plans {
		if p.Service == "pg" {
			return p, nil
		}
	}
	t.Fatal("no pg plan")
	return Plan{}, nil
}

// TestAzureBuckets: an azure Secret as the operator writes it is the
// account's container on Azure; the endpoint is used only for an emulator
// at an IP address (path-style) or the account's own blob endpoint.
func TestAzureBuckets(t *testing.T) {
	key := azureKey(t)
	for _, c := range []struct {
		name           string
		edit           func(map[string]string)
		url, ignored   string
		credentials    string
		wantServiceURL string
	}{
		{"as the operator writes it", nil, "azblob://backups/capsule/?account=cnvrgstore", "http://minio.cnvrg.example.com", "static",
			"https://cnvrgstore.blob.core.windows.net/"},
		{"Azurite", func(m map[string]string) { m["CNVRG_STORAGE_ENDPOINT"] = "http://127.0.0.1:10000" },
			"azblob://backups/capsule/?account=cnvrgstore&endpoint=http%3A%2F%2F127.0.0.1%3A10000%2Fcnvrgstore", "", "static",
			"http://127.0.0.1:10000/cnvrgstore"},
		{"a sovereign cloud", func(m map[string]string) {
			m["CNVRG_STORAGE_ENDPOINT"] = "https://cnvrgstore.blob.core.chinacloudapi.cn"
		},
			"azblob://backups/capsule/?account=cnvrgstore&endpoint=https%3A%2F%2Fcnvrgstore.blob.core.chinacloudapi.cn%2F", "", "static",
			"https://cnvrgstore.blob.core.chinacloudapi.cn/"},
		{"the operator's NodePort URL", func(m map[string]string) { m["CNVRG_STORAGE_ENDPOINT"] = "http://apps.example.com:30090" },
			"azblob://backups/capsule/?account=cnvrgstore", "http://apps.example.com:30090", "static", "https://cnvrgstore.blob.core.windows.net/"},
		{"another account's endpoint", func(m map[string]string) { m["CNVRG_STORAGE_ENDPOINT"] = "https://other.blob.core.windows.net" },
			"azblob://backups/capsule/?account=cnvrgstore", "https://other.blob.core.windows.net", "static", "https://cnvrgstore.blob.core.windows.net/"},
		{"workload identity", func(m map[string]string) { m["CNVRG_STORAGE_AZURE_ACCESS_KEY"] = "" },
			"azblob://backups/capsule/?account=cnvrgstore", "http://minio.cnvrg.example.com", "role", "https://cnvrgstore.blob.core.windows.net/"},
		{"the container from CNVRG_STORAGE_BUCKET", func(m map[string]string) { m["CNVRG_STORAGE_AZURE_CONTAINER"] = "" },
			"azblob://cnvrg-storage/capsule/?account=cnvrgstore", "http://minio.cnvrg.example.com", "static", "https://cnvrgstore.blob.core.windows.net/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			secrets := sampleSecrets()
			secrets["cnvrg/cp-object-storage"] = operatorAzure(key)
			if c.edit != nil {
				c.edit(secrets["cnvrg/cp-object-storage"])
			}
			p, problem := pgPlanOf(t, testParser(secrets))
			if problem != nil {
				t.Fatal(problem)
			}
			b := p.Bucket
			if b.URL() != c.url || b.IgnoredEndpoint != c.ignored || b.Credentials() != c.credentials || b.serviceURL() != c.wantServiceURL {
				t.Errorf("url %s ignored %q credentials %s service %s, want %s, %q, %s, %s", b.URL(), b.IgnoredEndpoint, b.Credentials(), b.serviceURL(),
					c.url, c.ignored, c.credentials, c.wantServiceURL)
			}
			out, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), key) {
				t.Errorf("the plan's JSON holds the account key: %s", out)
			}
		})
	}
}

// TestGCPBuckets: a gcp Secret's service account key comes from the
// Secret CNVRG_STORAGE_GCP_SECRET_REF names, read by name; without a
// key.json there, from this pod's key file, else Application Default
// Credentials.
func TestGCPBuckets(t *testing.T) {
	key := testKeyJSON(t)
	keyFile := filepath.Join(t.TempDir(), "key.json")
	for _, c := range []struct {
		name        string
		edit        func(s secretMap)
		keyFile     string // written to the pod's key file when set
		url         string
		credentials string
		secrets     string
	}{
		{"as the operator writes it", nil, "", "gs://cnvrg-backups/capsule/", "static", "cnvrg/cp-object-storage,cnvrg/gcp-storage-secret"},
		{"another key Secret", func(s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_GCP_SECRET_REF"] = "my-gcp-key"
			s["cnvrg/my-gcp-key"] = s["cnvrg/gcp-storage-secret"]
			delete(s, "cnvrg/gcp-storage-secret")
		}, "", "gs://cnvrg-backups/capsule/", "static", "cnvrg/cp-object-storage,cnvrg/my-gcp-key"},
		{"the default key Secret", func(s secretMap) { s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_GCP_SECRET_REF"] = "" },
			"", "gs://cnvrg-backups/capsule/", "static", "cnvrg/cp-object-storage,cnvrg/gcp-storage-secret"},
		{"fake-gcs-server", func(s secretMap) { s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_ENDPOINT"] = "http://127.0.0.1:4443" },
			"", "gs://cnvrg-backups/capsule/?endpoint=http%3A%2F%2F127.0.0.1%3A4443", "static", "cnvrg/cp-object-storage,cnvrg/gcp-storage-secret"},
		{"the pod's key file", func(s secretMap) { s["cnvrg/gcp-storage-secret"] = map[string]string{"other": "x"} },
			key, "gs://cnvrg-backups/capsule/", "keyfile", "cnvrg/cp-object-storage,cnvrg/gcp-storage-secret"},
		{"workload identity", func(s secretMap) { s["cnvrg/gcp-storage-secret"] = map[string]string{"key.json": "  \n"} },
			"", "gs://cnvrg-backups/capsule/", "role", "cnvrg/cp-object-storage,cnvrg/gcp-storage-secret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_ = os.Remove(keyFile)
			if c.keyFile != "" {
				if err := os.WriteFile(keyFile, []byte(c.keyFile), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			secrets := sampleSecrets()
			secrets["cnvrg/cp-object-storage"], secrets["cnvrg/gcp-storage-secret"] = operatorGCP(key)
			if c.edit != nil {
				c.edit(secrets)
			}
			ps := testParser(secrets)
			ps.gcpKeyFile = keyFile
			res := ps.app(context.Background(), sampleApp(t))
			p, problem := pgPlanOf(t, ps)
			if problem != nil {
				t.Fatal(problem)
			}
			b := p.Bucket
			if b.URL() != c.url || b.Credentials() != c.credentials {
				t.Errorf("url %s credentials %s, want %s and %s", b.URL(), b.Credentials(), c.url, c.credentials)
			}
			if got := strings.Join(res.secrets, ","); !strings.HasPrefix(got, c.secrets) {
				t.Errorf("Secrets read %s, want %s first", got, c.secrets)
			}
			if c.credentials != "role" && string(b.keyJSON) != key {
				t.Error("the bucket does not carry the key")
			}
			out, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), "PRIVATE KEY") {
				t.Errorf("the plan's JSON holds the key: %s", out)
			}
		})
	}
}

// TestCloudBucketProblems: a bad value of an azure or gcp Secret is a
// problem on the bucketRef naming the Secret's key, with no plan, and
// never quotes a key.
func TestCloudBucketProblems(t *testing.T) {
	azKey, gcpKey := azureKey(t), testKeyJSON(t)
	azure := func(edit func(m map[string]string)) func(secretMap) {
		return func(s secretMap) {
			s["cnvrg/cp-object-storage"] = operatorAzure(azKey)
			edit(s["cnvrg/cp-object-storage"])
		}
	}
	gcp := func(edit func(s secretMap)) func(secretMap) {
		return func(s secretMap) {
			s["cnvrg/cp-object-storage"], s["cnvrg/gcp-storage-secret"] = operatorGCP(gcpKey)
			edit(s)
		}
	}
	for _, c := range []struct {
		name  string
		edit  func(secretMap)
		want  string
		avoid string
	}{
		{"no account", azure(func(m map[string]string) { m["CNVRG_STORAGE_AZURE_ACCOUNT_NAME"] = "" }), "CNVRG_STORAGE_AZURE_ACCOUNT_NAME: required for azure", ""},
		{"an account with a host", azure(func(m map[string]string) { m["CNVRG_STORAGE_AZURE_ACCOUNT_NAME"] = "evil.example.com/x" }),
			`CNVRG_STORAGE_AZURE_ACCOUNT_NAME: "evil.example.com/x" is not a storage account name`, ""},
		{"an account in capitals", azure(func(m map[string]string) { m["CNVRG_STORAGE_AZURE_ACCOUNT_NAME"] = "CnvrgStore" }),
			"is not a storage account name", ""},
		{"a container with a path", azure(func(m map[string]string) { m["CNVRG_STORAGE_AZURE_CONTAINER"] = "backups/../other" }),
			`CNVRG_STORAGE_AZURE_CONTAINER: "backups/../other" is not a container name`, ""},
		{"a container with double hyphens", azure(func(m map[string]string) { m["CNVRG_STORAGE_AZURE_CONTAINER"] = "a--b" }),
			"CNVRG_STORAGE_AZURE_CONTAINER: \"a--b\" is not a container name", ""},
		{"a bad container from CNVRG_STORAGE_BUCKET", azure(func(m map[string]string) {
			m["CNVRG_STORAGE_AZURE_CONTAINER"], m["CNVRG_STORAGE_BUCKET"] = "", "Cnvrg_Storage"
		}), `CNVRG_STORAGE_BUCKET: "Cnvrg_Storage" is not a container name`, ""},
		{"no container", azure(func(m map[string]string) { m["CNVRG_STORAGE_AZURE_CONTAINER"], m["CNVRG_STORAGE_BUCKET"] = "", "" }),
			"CNVRG_STORAGE_AZURE_CONTAINER: required for azure", ""},
		{"a key that is not base64", azure(func(m map[string]string) { m["CNVRG_STORAGE_AZURE_ACCESS_KEY"] = "not base64 " + azKey }),
			"CNVRG_STORAGE_AZURE_ACCESS_KEY: not an account key (base64)", azKey},
		{"an azure endpoint with a path", azure(func(m map[string]string) { m["CNVRG_STORAGE_ENDPOINT"] = "http://169.254.169.254/latest/meta-data" }),
			"CNVRG_STORAGE_ENDPOINT: no path", ""},
		{"an azure endpoint with a user", azure(func(m map[string]string) { m["CNVRG_STORAGE_ENDPOINT"] = "http://user:pw@127.0.0.1:10000" }),
			"CNVRG_STORAGE_ENDPOINT: no user", "pw@"},
		{"a key Secret that does not exist", gcp(func(s secretMap) { s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_GCP_SECRET_REF"] = "nope" }),
			`CNVRG_STORAGE_GCP_SECRET_REF: Secret "nope" not found in namespace cnvrg`, ""},
		{"the default key Secret missing", gcp(func(s secretMap) { delete(s, "cnvrg/gcp-storage-secret") }),
			`CNVRG_STORAGE_GCP_SECRET_REF: Secret "gcp-storage-secret" not found`, ""},
		{"a key Secret name with a path", gcp(func(s secretMap) { s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_GCP_SECRET_REF"] = "../kube-system/x" }),
			`CNVRG_STORAGE_GCP_SECRET_REF: "../kube-system/x" is not a Secret name`, ""},
		{"a key.json that is not JSON", gcp(func(s secretMap) { s["cnvrg/gcp-storage-secret"]["key.json"] = "SECRET-MARKER " + gcpKey }),
			`Secret "gcp-storage-secret": key.json: not JSON`, "SECRET-MARKER"},
		{"a key.json of another type", gcp(func(s secretMap) {
			s["cnvrg/gcp-storage-secret"]["key.json"] = `{"type":"external_account","credential_source":{"executable":{"command":"SECRET-MARKER"}}}`
		}), `key.json: type: want "service_account"`, "SECRET-MARKER"},
		{"another key file", gcp(func(s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_KEYFILE"] = "/var/run/secrets/kubernetes.io/serviceaccount/token"
		}),
			"CNVRG_STORAGE_KEYFILE: capsule reads a key file only at /opt/app-root/conf/gcp-keyfile/key.json", ""},
		{"a gcs bucket name with a path", gcp(func(s secretMap) { s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_BUCKET"] = "b/../other" }),
			`CNVRG_STORAGE_BUCKET: "b/../other" is not a bucket name`, ""},
		{"a gcs bucket name in capitals", gcp(func(s secretMap) { s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_BUCKET"] = "Backups" }),
			"is not a bucket name", ""},
		{"a gcs bucket name too long", gcp(func(s secretMap) { s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_BUCKET"] = strings.Repeat("b", 64) }),
			"is not a bucket name", ""},
		{"a gcp endpoint with a query", gcp(func(s secretMap) {
			s["cnvrg/cp-object-storage"]["CNVRG_STORAGE_ENDPOINT"] = "http://127.0.0.1:4443?x=y"
		}),
			"CNVRG_STORAGE_ENDPOINT: no path, query or fragment", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			secrets := sampleSecrets()
			c.edit(secrets)
			ps := testParser(secrets)
			ps.gcpKeyFile = filepath.Join(t.TempDir(), "absent.json")
			res := ps.app(context.Background(), sampleApp(t))
			var found *Problem
			for _, p := range res.problems {
				if p.Field == "spec.dbs.pg.backup.bucketRef" {
					found = &p
				}
			}
			if found == nil {
				t.Fatalf("no problem on spec.dbs.pg.backup.bucketRef: %v", res.problems)
			}
			if !strings.Contains(found.Message, `Secret "cp-object-storage": `+c.want) && !strings.Contains(found.Message, c.want) {
				t.Errorf("problem %q, want %q", found.Message, c.want)
			}
			if !strings.HasPrefix(found.Message, `Secret "cp-object-storage": `) {
				t.Errorf("problem %q does not name the bucketRef Secret", found.Message)
			}
			if c.avoid != "" && strings.Contains(found.Message, c.avoid) {
				t.Errorf("problem %q quotes a value it must not", found.Message)
			}
			for _, p := range res.plans {
				if p.Service == "pg" {
					t.Errorf("a pg plan despite the problem: %s", p.Bucket.URL())
				}
			}
		})
	}
}

// TestCloudBucketIdentity: two Secrets naming one bucket with different
// keys make two clients; the same key, one.
func TestCloudBucketIdentity(t *testing.T) {
	fp := newFingerprinter()
	keyA, keyB := azureKey(t), azureKey(t)
	gA, gB := testKeyJSON(t), testKeyJSON(t)
	keyOf := func(storage, keySecret map[string]string) string {
		secrets := sampleSecrets()
		secrets["cnvrg/cp-object-storage"] = storage
		if keySecret != nil {
			secrets["cnvrg/gcp-storage-secret"] = keySecret
		}
		ps := testParser(secrets)
		ps.fp = fp
		ps.gcpKeyFile = filepath.Join(t.TempDir(), "absent.json")
		p, problem := pgPlanOf(t, ps)
		if problem != nil {
			t.Fatal(problem)
		}
		return p.Bucket.Key()
	}
	a1, a2, b := keyOf(operatorAzure(keyA), nil), keyOf(operatorAzure(keyA), nil), keyOf(operatorAzure(keyB), nil)
	if a1 != a2 || a1 == b || strings.Contains(a1, keyA) {
		t.Errorf("azure keys: %s, %s (same account key) and %s (another)", a1, a2, b)
	}
	s1, k1 := operatorGCP(gA)
	s2, k2 := operatorGCP(gA)
	s3, k3 := operatorGCP(gB)
	g1, g2, g3 := keyOf(s1, k1), keyOf(s2, k2), keyOf(s3, k3)
	if g1 != g2 || g1 == g3 || !strings.HasPrefix(g1, "gs://cnvrg-backups/capsule/#keys-") {
		t.Errorf("gcp keys: %s, %s (same key) and %s (another)", g1, g2, g3)
	}
}

// TestCloudBucketsFromPVC: the drop-in's plans from the PostgreSQL PVC's
// annotations map azure and gcp Secrets the same way.
func TestCloudBucketsFromPVC(t *testing.T) {
	azKey, gcpKey := azureKey(t), testKeyJSON(t)
	secrets := operatorSecrets()
	secrets["cnvrg/cp-object-storage"] = operatorAzure(azKey)
	res := testParser(secrets).pvc(context.Background(), operatorPVC(nil, nil))
	if len(res.plans) != 1 || res.plans[0].Bucket.URL() != "azblob://backups/capsule/?account=cnvrgstore" {
		t.Errorf("azure: plans %v problems %v", res.plans, res.problems)
	}
	secrets["cnvrg/cp-object-storage"], secrets["cnvrg/gcp-storage-secret"] = operatorGCP(gcpKey)
	ps := testParser(secrets)
	ps.gcpKeyFile = filepath.Join(t.TempDir(), "absent.json")
	res = ps.pvc(context.Background(), operatorPVC(nil, nil))
	if len(res.plans) != 1 || res.plans[0].Bucket.URL() != "gs://cnvrg-backups/capsule/" || res.plans[0].Bucket.Credentials() != "static" {
		t.Errorf("gcp: plans %v problems %v", res.plans, res.problems)
	}
	delete(secrets, "cnvrg/gcp-storage-secret")
	res = ps.pvc(context.Background(), operatorPVC(nil, nil))
	if len(res.plans) != 0 || len(res.problems) != 1 || res.problems[0].Field != annotationPath(annBucketRef) ||
		!strings.Contains(res.problems[0].Message, `CNVRG_STORAGE_GCP_SECRET_REF: Secret "gcp-storage-secret" not found`) {
		t.Errorf("gcp without its key Secret: plans %v problems %v", res.plans, res.problems)
	}
}
