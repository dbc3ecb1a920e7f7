package bucketurl_test

import (
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/azblob"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/internal/azuritetest"
)

// azureEnv clears every variable an azblob:// URL reads, then sets kv.
func azureEnv(t *testing.T, kv ...string) {
	for _, k := range []string{"AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ACCOUNT"} {
		t.Setenv(k, "")
	}
	for i := 0; i+1 < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

func TestAzblob(t *testing.T) {
	srv := azuritetest.Shared(t)
	name := srv.NewContainer(t)
	raw, err := azblob.New(azblob.Options{Container: name, ServiceURL: srv.ServiceURL, Account: srv.Account, AccountKey: srv.Key})
	if err != nil {
		t.Fatal(err)
	}
	sasURL, err := raw.Client().GetSASURL(sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}, time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, sasToken, _ := strings.Cut(sasURL, "?")
	noEndpoint := "azblob://" + name + "/cs/"
	for _, c := range []struct {
		what string
		env  []string
		url  string
		key  string // where key "k" lands
		desc string // in the description
	}{
		{"account key", []string{"AZURE_STORAGE_KEY", srv.Key}, srv.URL(name, ""), "capsule/k", "account key from AZURE_STORAGE_KEY"},
		{"account from the environment", []string{"AZURE_STORAGE_KEY", srv.Key, "AZURE_STORAGE_ACCOUNT", srv.Account}, strings.Replace(srv.URL(name, "team/a"), "account="+srv.Account+"&", "", 1), "team/a/k", "account key"},
		{"prefix parameter", []string{"AZURE_STORAGE_KEY", srv.Key}, srv.URL(name, "team/b/") + "&prefix=over", "over/k", "account key"},
		{"connection string", []string{"AZURE_STORAGE_CONNECTION_STRING", srv.ConnectionString()}, noEndpoint, "cs/k", "connection string from AZURE_STORAGE_CONNECTION_STRING"},
		{"sas", []string{"AZURE_STORAGE_SAS_TOKEN", sasToken}, srv.URL(name, "sas"), "sas/k", "SAS token from AZURE_STORAGE_SAS_TOKEN"},
	} {
		t.Run(c.what, func(t *testing.T) {
			azureEnv(t, c.env...)
			b, desc := open(t, c.url)
			if !strings.Contains(desc, name) || !strings.Contains(desc, c.desc) || !strings.Contains(desc, srv.Account) {
				t.Errorf("description %q, want the container, the account and %q", desc, c.desc)
			}
			if strings.Contains(desc, srv.Key) || strings.Contains(desc, "sig=") {
				t.Errorf("description %q holds a secret", desc)
			}
			if _, err := bucket.PutBytes(t.Context(), b, "k", []byte(c.url), bucket.PutOptions{IfNoneMatch: true}); err != nil {
				t.Fatalf("%s: %v", c.url, err)
			}
			data, _, err := bucket.GetBytes(t.Context(), raw, c.key)
			if err != nil || string(data) != c.url {
				t.Errorf("%s: %s holds %q, %v", c.url, c.key, data, err)
			}
			raw.Delete(t.Context(), c.key)
		})
	}
}

// TestAzblobDefaultCredential: without a key, connection string or SAS in
// the environment, the URL opens with azidentity's default chain (nothing
// is contacted before the first request).
func TestAzblobDefaultCredential(t *testing.T) {
	azureEnv(t)
	_, desc := open(t, "azblob://backups/capsule/?account=acme")
	if !strings.Contains(desc, "default Azure credential") || !strings.Contains(desc, "azblob://backups/capsule/ (account acme") {
		t.Errorf("description %q", desc)
	}
}

func TestAzblobBadURLs(t *testing.T) {
	const secret = "c2VjcmV0a2V5"
	for _, c := range []struct {
		url  string
		env  []string
		want string
	}{
		{"azblob://Backups/x?account=a", nil, "lowercase"},
		{"azblob://ab/x?account=a", nil, "3 to 63"},
		{"azblob://a--b/x?account=a", nil, "single hyphens"},
		{"azblob://acct:" + secret + "@backups/x?account=a", nil, "credentials do not belong"},
		{"azblob://backups/x?account=a&sig=" + secret, nil, "SAS token does not belong"},
		{"azblob://backups/x?account=a&key=" + secret, nil, "unknown parameter"},
		{"azblob://backups/x?account=a&region=eu", nil, "unknown parameter"},
		{"azblob://backups/x?account=a&endpoint=ftp://h", nil, "endpoint"},
		{"azblob://backups/x?account=a&endpoint=" + "http://u:" + secret + "@h", nil, "endpoint"},
		{"azblob://backups/x", []string{"AZURE_STORAGE_KEY", secret}, "no storage account"},
		{"azblob://backups/x?account=other", []string{"AZURE_STORAGE_CONNECTION_STRING", "AccountName=mine;AccountKey=" + secret + ";BlobEndpoint=http://127.0.0.1:1/mine"}, `is for account "mine"`},
		{"azblob://backups/x?endpoint=http://127.0.0.1:2/mine", []string{"AZURE_STORAGE_CONNECTION_STRING", "AccountName=mine;AccountKey=" + secret + ";BlobEndpoint=http://127.0.0.1:1/mine"}, "endpoint comes from"},
		{"azblob://backups/x?account=a", []string{"AZURE_STORAGE_KEY", "not base64!"}, "account key"},
	} {
		t.Run(c.url, func(t *testing.T) {
			azureEnv(t, c.env...)
			_, _, err := bucketurl.Open(t.Context(), c.url, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("open %q: %v, want an error about %q", c.url, err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("open %q: error shows the secret: %v", c.url, err)
			}
		})
	}
}
