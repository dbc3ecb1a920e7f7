package gcs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/internal/gcstest"
)

// serviceAccountKey is a service account key as Google issues it, with a
// fresh RSA key, after edit.
func serviceAccountKey(t *testing.T, edit func(m map[string]any)) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{
		"type":                        "service_account",
		"project_id":                  "capsule-test",
		"private_key_id":              "0123456789abcdef0123456789abcdef01234567",
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                "capsule@capsule-test.iam.gserviceaccount.com",
		"client_id":                   "123456789012345678901",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   "https://oauth2.googleapis.com/token",
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	}
	if edit != nil {
		edit(m)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// noADC leaves the process without Application Default Credentials: a
// key file that does not exist, no gcloud configuration, no emulator.
func noADC(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(dir, "absent.json"))
	t.Setenv("CLOUDSDK_CONFIG", dir)
	t.Setenv("HOME", dir)
	t.Setenv("STORAGE_EMULATOR_HOST", "")
}

// TestCredentialsJSON: a service account key is the client's credential,
// where Application Default Credentials cannot be found.
func TestCredentialsJSON(t *testing.T) {
	noADC(t)
	t.Run("without a key, no credentials", func(t *testing.T) {
		_, err := gcs.New(t.Context(), gcs.Options{Bucket: "capsule-creds"})
		if err == nil || !strings.Contains(err.Error(), "no Google credentials") {
			t.Fatalf("New without a key and without ADC: %v, want no Google credentials", err)
		}
	})
	t.Run("with a key", func(t *testing.T) {
		b, err := gcs.New(t.Context(), gcs.Options{Bucket: "capsule-creds", CredentialsJSON: serviceAccountKey(t, nil)})
		if err != nil {
			t.Fatalf("New with a service account key: %v", err)
		}
		b.Close()
	})
	t.Run("an EC key", func(t *testing.T) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := gcs.CheckCredentialsJSON(serviceAccountKey(t, func(m map[string]any) {
			m["private_key"] = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
		})); err != nil {
			t.Errorf("an EC key: %v", err)
		}
	})
}

// TestCredentialsJSONRefused: what is not a service account key, or one
// that would send its token request or API calls elsewhere than Google, is
// refused by New with an error naming the field and no value of the key,
// with or without an endpoint.
func TestCredentialsJSONRefused(t *testing.T) {
	noADC(t)
	const marker = "SECRET-MARKER-7f3a"
	for _, c := range []struct {
		name string
		key  []byte
		want string
	}{
		{"not JSON", []byte("{\"type\": \"service_account\", " + marker), "not JSON (syntax error at byte"},
		{"a JSON array", []byte(`["` + marker + `"]`), "not a JSON object"},
		{"a number for a string", serviceAccountKey(t, func(m map[string]any) { m["client_email"] = 42 }), "field client_email: want a string"},
		{"authorized user", serviceAccountKey(t, func(m map[string]any) {
			m["type"], m["refresh_token"], m["client_secret"] = "authorized_user", marker, marker
		}), `type: want "service_account"`},
		{"external account running a command", []byte(`{"type":"external_account","audience":"` + marker + `","subject_token_type":"urn:ietf:params:oauth:token-type:jwt",` +
			`"token_url":"http://127.0.0.1:1/token","credential_source":{"executable":{"command":"/bin/sh -c ` + marker + `"}}}`), `type: want "service_account"`},
		{"no private key", serviceAccountKey(t, func(m map[string]any) { delete(m, "private_key") }), "private_key: missing"},
		{"no client email", serviceAccountKey(t, func(m map[string]any) { delete(m, "client_email") }), "client_email: missing"},
		{"a private key that is not PEM", serviceAccountKey(t, func(m map[string]any) { m["private_key"] = marker }), "private_key: not PEM"},
		{"a PEM block that is no key", serviceAccountKey(t, func(m map[string]any) {
			m["private_key"] = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte(marker)}))
		}), "private_key: not a PKCS #8"},
		{"a foreign token endpoint", serviceAccountKey(t, func(m map[string]any) { m["token_uri"] = "http://169.254.169.254/" + marker }), "token_uri: not Google's"},
		{"a foreign universe", serviceAccountKey(t, func(m map[string]any) { m["universe_domain"] = marker + ".example.com" }), "universe_domain: want googleapis.com"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, endpoint := range []string{"", "http://127.0.0.1:1"} {
				b, err := gcs.New(t.Context(), gcs.Options{Bucket: "capsule-creds", Endpoint: endpoint, CredentialsJSON: c.key})
				if err == nil {
					b.Close()
					t.Fatalf("endpoint %q: New accepted the key", endpoint)
				}
				msg := err.Error()
				if !strings.Contains(msg, "gcs bucket capsule-creds: credentials: "+c.want) {
					t.Errorf("endpoint %q: %q, want %q", endpoint, msg, c.want)
				}
				if strings.Contains(msg, marker) || strings.Contains(msg, "PRIVATE KEY") || strings.Contains(msg, "gserviceaccount") {
					t.Errorf("endpoint %q: the error holds a value of the key: %q", endpoint, msg)
				}
			}
		})
	}
}

// TestCredentialsJSONWithEmulator: with an endpoint, the key is checked
// and the bucket works on the emulator, which takes no credentials.
func TestCredentialsJSONWithEmulator(t *testing.T) {
	srv := gcstest.Shared(t)
	b, err := gcs.New(t.Context(), gcs.Options{Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, CredentialsJSON: serviceAccountKey(t, nil), Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Put(t.Context(), "k", bytes.NewReader([]byte("v")), 1, bucket.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
	r, _, err := b.Get(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, _ := io.ReadAll(r); string(got) != "v" {
		t.Errorf("read %q", got)
	}
}
