package bucketurl

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/azblob"
)

// The environment variables an azblob:// URL takes its credential from, in
// this order; without any of them, azidentity's DefaultAzureCredential
// (workload identity in a cluster: AZURE_CLIENT_ID, AZURE_TENANT_ID,
// AZURE_FEDERATED_TOKEN_FILE; a managed identity; the Azure CLI).
const (
	envAzureConnectionString = "AZURE_STORAGE_CONNECTION_STRING"
	envAzureKey              = "AZURE_STORAGE_KEY"
	envAzureSAS              = "AZURE_STORAGE_SAS_TOKEN"
	// envAzureAccount names the account when the URL does not.
	envAzureAccount = "AZURE_STORAGE_ACCOUNT"
)

// containerName is Azure's rule: 3 to 63 lowercase letters, digits and
// single hyphens, starting and ending with a letter or digit.
var containerName = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)

// openAzblob opens azblob://CONTAINER/PREFIX?account=NAME[&endpoint=URL]:
// a container of an Azure storage account, at
// https://NAME.blob.core.windows.net/ unless endpoint names another service
// URL (Azurite: http://127.0.0.1:10000/NAME). The credential comes from the
// environment, never from the URL: a connection string, else the account
// key, else a SAS token, else DefaultAzureCredential.
func openAzblob(u *url.URL, log logrus.FieldLogger) (bucket.Bucket, string, error) {
	// Errors name the URL without its user or query: a key or a SAS
	// token pasted into it must not reach a log.
	safe := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if u.User != nil {
		return nil, "", fmt.Errorf("bucket url %s: credentials do not belong in the URL: set %s (or %s, %s, or use workload identity)", safe, envAzureKey, envAzureConnectionString, envAzureSAS)
	}
	if !containerName.MatchString(u.Host) || len(u.Host) > 63 {
		return nil, "", fmt.Errorf("bucket url %s: container %q: want azblob://CONTAINER/PREFIX, with 3 to 63 lowercase letters, digits and single hyphens", safe, u.Host)
	}
	known := []string{"account", "endpoint", "prefix"}
	for k := range u.Query() {
		if k == "sig" || k == "sv" || k == "se" {
			return nil, "", fmt.Errorf("bucket url %s: a SAS token does not belong in the URL: set %s", safe, envAzureSAS)
		}
		if !slices.Contains(known, k) {
			return nil, "", fmt.Errorf("bucket url %s: unknown parameter %q (known: %s)", safe, k, strings.Join(known, ", "))
		}
	}
	pathPrefix := strings.TrimPrefix(u.Path, "/")
	if pathPrefix == "" {
		pathPrefix = DefaultPrefix
	}
	q, prefix, err := query(u, pathPrefix, known...)
	if err != nil {
		return nil, "", err
	}
	o := azblob.Options{Container: u.Host, Account: q.Get("account"), Log: log}
	if o.Account == "" {
		o.Account = os.Getenv(envAzureAccount)
	}
	endpoint := q.Get("endpoint")
	if endpoint != "" {
		e, err := url.Parse(endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || e.RawQuery != "" || e.User != nil {
			return nil, "", fmt.Errorf("bucket url %s: endpoint: want http(s)://HOST[:PORT][/ACCOUNT], without credentials or a query", safe)
		}
	}
	var cred string
	switch {
	case os.Getenv(envAzureConnectionString) != "":
		o.ConnectionString = os.Getenv(envAzureConnectionString)
		cs := connectionAccount(o.ConnectionString)
		if o.Account != "" && cs != "" && cs != o.Account {
			return nil, "", fmt.Errorf("bucket url %s: account %q, but %s is for account %q", safe, o.Account, envAzureConnectionString, cs)
		}
		if endpoint != "" {
			return nil, "", fmt.Errorf("bucket url %s: endpoint comes from %s (BlobEndpoint=) when it is set", safe, envAzureConnectionString)
		}
		o.Account = cs
		cred = "connection string from " + envAzureConnectionString
	case os.Getenv(envAzureKey) != "":
		o.AccountKey = os.Getenv(envAzureKey)
		cred = "account key from " + envAzureKey
	case os.Getenv(envAzureSAS) != "":
		o.SASToken = os.Getenv(envAzureSAS)
		cred = "SAS token from " + envAzureSAS
	default:
		tc, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, "", fmt.Errorf("bucket url %s: no %s, %s or %s, and the default Azure credential: %w", safe, envAzureConnectionString, envAzureKey, envAzureSAS, err)
		}
		o.TokenCredential = tc
		cred = "default Azure credential (workload identity, managed identity or Azure CLI)"
	}
	if o.ConnectionString == "" {
		if o.Account == "" {
			return nil, "", fmt.Errorf("bucket url %s: no storage account: add ?account=NAME (or set %s)", safe, envAzureAccount)
		}
		o.ServiceURL = endpoint
		if o.ServiceURL == "" {
			o.ServiceURL = "https://" + o.Account + ".blob.core.windows.net/"
		}
	}
	b, err := azblob.New(o)
	if err != nil {
		return nil, "", err
	}
	desc := fmt.Sprintf("azblob://%s/%s (account %s, %s)", o.Container, prefix, o.Account, cred)
	if endpoint != "" {
		desc += " at " + endpoint
	}
	return bucket.Prefixed(b, prefix), desc, nil
}

// connectionAccount is the AccountName of a connection string.
func connectionAccount(cs string) string {
	for _, part := range strings.Split(cs, ";") {
		if k, v, ok := strings.Cut(part, "="); ok && strings.EqualFold(strings.TrimSpace(k), "AccountName") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
