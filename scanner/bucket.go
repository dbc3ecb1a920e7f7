package scanner

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/azblob"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The keys of a bucketRef Secret (cp-object-storage).
const (
	keyStorageType     = "CNVRG_STORAGE_TYPE"
	keyStorageEndpoint = "CNVRG_STORAGE_ENDPOINT"
	keyStorageRegion   = "CNVRG_STORAGE_REGION"
	keyStorageBucket   = "CNVRG_STORAGE_BUCKET"
	keyStorageAccess   = "CNVRG_STORAGE_ACCESS_KEY"
	keyStorageSecret   = "CNVRG_STORAGE_SECRET_KEY"
	// azure
	keyAzureKey       = "CNVRG_STORAGE_AZURE_ACCESS_KEY"
	keyAzureAccount   = "CNVRG_STORAGE_AZURE_ACCOUNT_NAME"
	keyAzureContainer = "CNVRG_STORAGE_AZURE_CONTAINER"
	// gcp
	keyGCPKeyFile   = "CNVRG_STORAGE_KEYFILE"
	keyGCPSecretRef = "CNVRG_STORAGE_GCP_SECRET_REF"
	// gcpKeyJSON is the data key of the service account key in the
	// Secret CNVRG_STORAGE_GCP_SECRET_REF names.
	gcpKeyJSON = "key.json"
)

// The platform's conventions for gcp buckets.
const (
	// DefaultGCPSecretRef is the Secret that holds the service account key
	// (key.json) when CNVRG_STORAGE_GCP_SECRET_REF is empty.
	DefaultGCPSecretRef = "gcp-storage-secret"
	// DefaultGCPKeyFile is where the platform's pods mount that Secret,
	// and the only CNVRG_STORAGE_KEYFILE capsule accepts: a path a
	// tenant's Secret chose could name another file of capsule's pod.
	DefaultGCPKeyFile = "/opt/app-root/conf/gcp-keyfile/key.json"
)

// Where a gcp bucket's service account key came from (BucketSpec.keyFrom).
const (
	keyFromSecret  = "secret"
	keyFromKeyFile = "keyfile"
)

// BucketSpec is the destination a bucketRef Secret names. Its keys stay in
// memory: they are not printed, logged or written anywhere.
type BucketSpec struct {
	// Secret is the bucketRef Secret's name.
	Secret string
	// Type is CNVRG_STORAGE_TYPE: minio or aws (S3 APIs), azure (Azure
	// Blob Storage) or gcp (Google Cloud Storage).
	Type string
	// Endpoint is the CNVRG_STORAGE_ENDPOINT in use ("" for the cloud's
	// own).
	Endpoint string
	// Region is CNVRG_STORAGE_REGION (minio, aws).
	Region string
	// Bucket is the bucket, or for azure the container.
	Bucket string
	// Account is the Azure storage account (azure).
	Account string
	// GCPSecretRef names the Secret whose key.json is the service account
	// key (gcp).
	GCPSecretRef string
	// Prefix is where capsule's objects live in the bucket (capsule/).
	Prefix string

	// IgnoredEndpoint is a CNVRG_STORAGE_ENDPOINT that was not used: the
	// operator writes its in-cluster MinIO URL into every Secret that
	// configures no endpoint (see bucketSpec).
	IgnoredEndpoint string

	// The credentials: S3 keys, an Azure account key, or a service
	// account key's JSON and where it came from (keyFromSecret,
	// keyFromKeyFile; "" for Application Default Credentials).
	accessKey, secretKey string
	accountKey           string
	keyJSON              []byte
	keyFrom              string
	// identity names the credentials without revealing them: "role", or
	// "keys-" and an HMAC of the keys under the scanner's random key.
	identity string
}

// URL names the bucket in the form capsule's --bucket takes, without
// credentials: s3://BUCKET/PREFIX?endpoint=...&region=...,
// azblob://CONTAINER/PREFIX?account=NAME[&endpoint=SERVICE-URL] or
// gs://BUCKET/PREFIX[?endpoint=...]. It is the bucket's key in
// Scanner.Buckets.
func (s BucketSpec) URL() string {
	q := url.Values{}
	scheme := "s3"
	switch s.Type {
	case "azure":
		scheme = "azblob"
		q.Set("account", s.Account)
		if s.Endpoint != "" {
			q.Set("endpoint", s.serviceURL())
		}
	case "gcp":
		scheme = "gs"
		if s.Endpoint != "" {
			q.Set("endpoint", s.Endpoint)
		}
	default:
		if s.Endpoint != "" {
			q.Set("endpoint", s.Endpoint)
		}
		if s.Region != "" {
			q.Set("region", s.Region)
		}
	}
	u := url.URL{Scheme: scheme, Host: s.Bucket, Path: "/" + s.Prefix, RawQuery: q.Encode()}
	return u.String()
}

// serviceURL is an azure bucket's blob service: the account's on Azure,
// the endpoint when it is the account's own (https://ACCOUNT.blob.…, a
// sovereign cloud), or the endpoint and the account as its path when the
// endpoint's host is an IP address (an emulator such as Azurite, which
// serves accounts by path, as the Azure SDK reads such URLs).
func (s BucketSpec) serviceURL() string {
	if s.Endpoint == "" {
		return "https://" + s.Account + ".blob.core.windows.net/"
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil { // checked by bucketSpec
		return s.Endpoint
	}
	if net.ParseIP(u.Hostname()) != nil {
		u.Path = "/" + s.Account
		return u.String()
	}
	u.Path = "/"
	return u.String()
}

// Key names the bucket client: URL and the identity of its credentials,
// "URL#role" or "URL#keys-<fingerprint>", where the fingerprint is an HMAC
// of the keys under a random key of this process (so it reveals nothing
// about them, in a log or anywhere else). It is the bucket's key in
// Scanner.Buckets. Two Secrets that name one bucket with different keys
// make two keys, so they never share a client; with the same keys they do.
func (s BucketSpec) Key() string {
	return s.URL() + "#" + s.identity
}

// Credentials says where the keys come from: "static" (the Secrets),
// "keyfile" (gcp: the key file capsule's pod has at DefaultGCPKeyFile) or
// "role" (the worker's own identity: for aws with both keys empty the
// pod's IAM role or the AWS default chain; for azure without an account
// key the default Azure credential, workload identity; for gcp without a
// key Application Default Credentials, workload identity).
func (s BucketSpec) Credentials() string {
	switch s.Type {
	case "azure":
		if s.accountKey == "" {
			return "role"
		}
		return "static"
	case "gcp":
		switch s.keyFrom {
		case keyFromSecret:
			return "static"
		case keyFromKeyFile:
			return "keyfile"
		}
		return "role"
	}
	if s.accessKey == "" {
		return "role"
	}
	return "static"
}

// secrets are the credentials that identity fingerprints.
func (s BucketSpec) secrets() (string, string) {
	switch s.Type {
	case "azure":
		return s.accountKey, ""
	case "gcp":
		return string(s.keyJSON), ""
	}
	return s.accessKey, s.secretKey
}

func bucketSpec(secretName string, data map[string][]byte, prefix string) (BucketSpec, error) {
	get := func(k string) string { return strings.TrimSpace(string(data[k])) }
	s := BucketSpec{
		Secret: secretName, Type: strings.ToLower(get(keyStorageType)), Endpoint: get(keyStorageEndpoint),
		Region: get(keyStorageRegion), Bucket: get(keyStorageBucket), Prefix: prefix,
		accessKey: get(keyStorageAccess), secretKey: get(keyStorageSecret),
	}
	if s.Type == "" {
		s.Type = "aws"
		if s.Endpoint != "" {
			s.Type = "minio"
		}
	}
	switch s.Type {
	case "minio":
		if s.Endpoint == "" {
			return s, fmt.Errorf("%s: required for minio", keyStorageEndpoint)
		}
		if s.accessKey == "" || s.secretKey == "" {
			return s, fmt.Errorf("%s and %s: required for minio", keyStorageAccess, keyStorageSecret)
		}
		if s.Region == "" {
			s.Region = "us-east-1"
		}
	case "aws":
		if s.Endpoint != "" && operatorMinio(s.Endpoint) {
			// The operator writes its in-cluster MinIO URL into every
			// Secret, aws included, when no endpoint was configured; the
			// old capsule service ignored the endpoint for aws and went to
			// AWS. So does capsule, for that URL only: another endpoint
			// was set on purpose (a VPC or FIPS endpoint) and is used.
			s.IgnoredEndpoint, s.Endpoint = s.Endpoint, ""
		}
		if s.Region == "" {
			return s, fmt.Errorf("%s: required for aws", keyStorageRegion)
		}
		if (s.accessKey == "") != (s.secretKey == "") {
			return s, fmt.Errorf("%s and %s: give both, or neither to use the pod's IAM role", keyStorageAccess, keyStorageSecret)
		}
	case "azure":
		return azureSpec(s, get)
	case "gcp":
		return gcpSpec(s, get)
	default:
		return s, fmt.Errorf("%s: %q is not one of minio, aws, azure, gcp", keyStorageType, s.Type)
	}
	if s.Endpoint != "" {
		if err := checkEndpoint(s.Endpoint); err != nil {
			return s, fmt.Errorf("%s: %w", keyStorageEndpoint, err)
		}
	}
	if s.Region != "" && !regionRE.MatchString(s.Region) {
		return s, fmt.Errorf("%s: %q is not a region name (letters, digits and hyphens)", keyStorageRegion, s.Region)
	}
	if s.Bucket == "" {
		return s, errors.New(keyStorageBucket + ": required")
	}
	if !bucketRE.MatchString(s.Bucket) {
		return s, fmt.Errorf("%s: %q is not a bucket name (up to 63 letters, digits, dots, hyphens and underscores)", keyStorageBucket, s.Bucket)
	}
	return s, nil
}

// azureSpec reads an azure Secret: the account
// (CNVRG_STORAGE_AZURE_ACCOUNT_NAME), the container
// (CNVRG_STORAGE_AZURE_CONTAINER, else CNVRG_STORAGE_BUCKET) and the
// account key (CNVRG_STORAGE_AZURE_ACCESS_KEY; empty: the default Azure
// credential). The S3 keys and the region are not Azure's.
func azureSpec(s BucketSpec, get func(string) string) (BucketSpec, error) {
	s.Region, s.accessKey, s.secretKey = "", "", ""
	s.Account, s.accountKey = get(keyAzureAccount), get(keyAzureKey)
	containerKey := keyAzureContainer
	if s.Bucket = get(keyAzureContainer); s.Bucket == "" {
		s.Bucket, containerKey = get(keyStorageBucket), keyStorageBucket
	}
	switch {
	case s.Account == "":
		return s, fmt.Errorf("%s: required for azure (the storage account's name)", keyAzureAccount)
	case !azureAccountRE.MatchString(s.Account):
		return s, fmt.Errorf("%s: %q is not a storage account name (3 to 24 lowercase letters and digits)", keyAzureAccount, s.Account)
	case s.Bucket == "":
		return s, fmt.Errorf("%s: required for azure (the container)", keyAzureContainer)
	case !azureContainerRE.MatchString(s.Bucket) || len(s.Bucket) > 63:
		return s, fmt.Errorf("%s: %q is not a container name (3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit)", containerKey, s.Bucket)
	}
	if s.accountKey != "" {
		if _, err := base64.StdEncoding.DecodeString(s.accountKey); err != nil {
			// Not the decoder's message: it would point into the key.
			return s, fmt.Errorf("%s: not an account key (base64); leave it empty to use the default Azure credential", keyAzureKey)
		}
	}
	return useEndpoint(s, func(host string) bool {
		return strings.HasPrefix(host, s.Account+".blob.")
	})
}

// gcpSpec reads a gcp Secret: the bucket (CNVRG_STORAGE_BUCKET) and the
// Secret that holds the service account key (CNVRG_STORAGE_GCP_SECRET_REF,
// default gcp-storage-secret), which block.gcpKey reads.
// CNVRG_STORAGE_PROJECT is not needed to reach a bucket.
func gcpSpec(s BucketSpec, get func(string) string) (BucketSpec, error) {
	s.Region, s.accessKey, s.secretKey = "", "", ""
	if s.GCPSecretRef = get(keyGCPSecretRef); s.GCPSecretRef == "" {
		s.GCPSecretRef = DefaultGCPSecretRef
	}
	if errs := validation.IsDNS1123Subdomain(s.GCPSecretRef); len(errs) > 0 {
		return s, fmt.Errorf("%s: %q is not a Secret name: %s", keyGCPSecretRef, s.GCPSecretRef, errs[0])
	}
	if kf := get(keyGCPKeyFile); kf != "" && kf != DefaultGCPKeyFile {
		return s, fmt.Errorf("%s: capsule reads a key file only at %s (where the platform mounts the key), not %q", keyGCPKeyFile, DefaultGCPKeyFile, kf)
	}
	switch {
	case s.Bucket == "":
		return s, fmt.Errorf("%s: required for gcp", keyStorageBucket)
	case !gcsBucketName(s.Bucket):
		return s, fmt.Errorf("%s: %q is not a bucket name (3 to 63 lowercase letters, digits, hyphens and underscores, dots between parts of up to 63, starting and ending with a letter or digit)", keyStorageBucket, s.Bucket)
	}
	// Only an emulator: gcs sends no credentials to an endpoint.
	return useEndpoint(s, func(string) bool { return false })
}

// useEndpoint checks an azure or gcp Secret's CNVRG_STORAGE_ENDPOINT and
// decides whether it is used. The operator writes its in-cluster MinIO URL
// (or its NodePort URL) into every Secret that configures no endpoint, so
// an endpoint is used only when its host is an IP address (an emulator:
// Azurite, fake-gcs-server) or own(host) says it is the cloud's; any other is
// ignored (IgnoredEndpoint), and the bucket is the cloud's.
func useEndpoint(s BucketSpec, own func(host string) bool) (BucketSpec, error) {
	if s.Endpoint == "" {
		return s, nil
	}
	if err := checkEndpoint(s.Endpoint); err != nil {
		return s, fmt.Errorf("%s: %w", keyStorageEndpoint, err)
	}
	u, _ := url.Parse(s.Endpoint)
	host := strings.ToLower(u.Hostname())
	if net.ParseIP(host) == nil && !own(host) {
		s.IgnoredEndpoint, s.Endpoint = s.Endpoint, ""
	}
	return s, nil
}

// gcsBucketName is Google's rule: 3 to 63 lowercase letters, digits,
// hyphens and underscores, starting and ending with a letter or digit; with
// dots, up to 222 characters in dot-separated parts of at most 63.
func gcsBucketName(name string) bool {
	if !gcsBucketRE.MatchString(name) || len(name) > 222 || (len(name) > 63 && !strings.Contains(name, ".")) {
		return false
	}
	for _, part := range strings.Split(name, ".") {
		if part == "" || len(part) > 63 {
			return false
		}
	}
	return true
}

// operatorMinio reports whether endpoint is the URL of the operator's
// in-cluster MinIO, http(s)://minio<prefix>.<cluster domain>[:PORT]: its
// host's first label starts with "minio".
func operatorMinio(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	host := strings.ToLower(u.Hostname())
	first, _, _ := strings.Cut(host, ".")
	return strings.HasPrefix(first, "minio") && net.ParseIP(host) == nil
}

// The names the scanner puts into a bucket URL or a host name.
var (
	regionRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	bucketRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	// Azure's rules: an account is 3 to 24 lowercase letters and digits;
	// a container 3 to 63 lowercase letters, digits and single hyphens
	// (the length is checked apart).
	azureAccountRE   = regexp.MustCompile(`^[a-z0-9]{3,24}$`)
	azureContainerRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)
	gcsBucketRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$`)
)

// checkEndpoint accepts http(s)://HOST[:PORT] and nothing more: no user,
// path, query or fragment, and a numeric port in range.
func checkEndpoint(raw string) error {
	const want = "want http(s)://HOST[:PORT]"
	e, err := url.Parse(raw)
	if err != nil {
		// url's errors quote the whole value; say what is wrong instead.
		return errors.New(want)
	}
	switch {
	case e.Scheme != "http" && e.Scheme != "https", e.Opaque != "":
		return fmt.Errorf("scheme: %s", want)
	case e.User != nil:
		return fmt.Errorf("no user or password in the URL: %s", want)
	case e.Path != "" && e.Path != "/", e.RawQuery != "", e.ForceQuery, e.Fragment != "":
		return fmt.Errorf("no path, query or fragment: %s", want)
	case e.Hostname() == "":
		return fmt.Errorf("no host: %s", want)
	}
	if h := strings.ToLower(e.Hostname()); net.ParseIP(h) == nil && len(validation.IsDNS1123Subdomain(h)) > 0 {
		return fmt.Errorf("host %q is not a DNS name or an IP address", e.Hostname())
	}
	if p := e.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not a port number (1-65535)", p)
		}
	} else if strings.HasSuffix(e.Host, ":") {
		return fmt.Errorf("empty port: %s", want)
	}
	return nil
}

// fingerprinter names credentials without revealing them: an HMAC-SHA256
// of the keys under a key drawn at random when the scanner starts, so a
// fingerprint means something only inside one process and a weak key
// cannot be guessed from it.
type fingerprinter struct{ key []byte }

func newFingerprinter() *fingerprinter {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read does not fail (Go 1.24+)
	return &fingerprinter{key: k}
}

// identity names a bucket's credentials (BucketSpec.secrets): "role" when
// there are none.
func (f *fingerprinter) identity(accessKey, secretKey string) string {
	if accessKey == "" && secretKey == "" {
		return "role"
	}
	m := hmac.New(sha256.New, f.key)
	m.Write([]byte(accessKey))
	m.Write([]byte{0})
	m.Write([]byte(secretKey))
	return "keys-" + hex.EncodeToString(m.Sum(nil))[:16]
}

// open makes a client for the bucket, scoped to its prefix. It does not
// contact the server.
func (s BucketSpec) open(ctx context.Context, log logrus.FieldLogger) (bucket.Bucket, error) {
	var (
		b   bucket.Bucket
		err error
	)
	switch s.Type {
	case "azure":
		o := azblob.Options{Container: s.Bucket, ServiceURL: s.serviceURL(), Account: s.Account, AccountKey: s.accountKey, Log: log}
		if s.accountKey == "" {
			// Workload identity in a cluster (AZURE_CLIENT_ID,
			// AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE), a managed
			// identity, the Azure CLI.
			if o.TokenCredential, err = azidentity.NewDefaultAzureCredential(nil); err != nil {
				return nil, fmt.Errorf("azure account %s: no %s, and the default Azure credential: %w", s.Account, keyAzureKey, err)
			}
		}
		b, err = azblob.New(o)
	case "gcp":
		b, err = gcs.New(ctx, gcs.Options{Bucket: s.Bucket, Endpoint: s.Endpoint, CredentialsJSON: s.keyJSON, Log: log})
	default:
		b, err = s3.New(ctx, s3.Options{
			Bucket: s.Bucket, Endpoint: s.Endpoint, Region: s.Region,
			AccessKey: s.accessKey, SecretKey: s.secretKey, Log: log,
		})
	}
	if err != nil {
		return nil, err
	}
	return bucket.Prefixed(b, s.Prefix), nil
}

// gcpKey finds a gcp bucket's service account key: key.json of the Secret
// spec.GCPSecretRef names (read by name, like every Secret; one that does
// not exist is an error), else, when that Secret has no key.json, the key
// file capsule's own pod may have at parser.gcpKeyFile
// (DefaultGCPKeyFile), else none: Application Default Credentials.
func (b *block) gcpKey(s *BucketSpec, bucketRef string) error {
	ref := s.GCPSecretRef
	b.res.secrets = append(b.res.secrets, b.ref.Namespace+"/"+ref)
	data, err := b.ps.secret(b.ctx, b.ref.Namespace, ref)
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s: Secret %q not found in namespace %s", keyGCPSecretRef, ref, b.ref.Namespace)
	case err != nil:
		return fmt.Errorf("%s: Secret %q: %v", keyGCPSecretRef, ref, err)
	}
	if key := bytes.TrimSpace(data[gcpKeyJSON]); len(key) > 0 {
		if err := gcs.CheckCredentialsJSON(key); err != nil {
			return fmt.Errorf("%s: Secret %q: %s: %w", keyGCPSecretRef, ref, gcpKeyJSON, err)
		}
		s.keyJSON, s.keyFrom = key, keyFromSecret
		return nil
	}
	path := b.ps.gcpKeyFile
	if path == "" {
		path = DefaultGCPKeyFile
	}
	fields := logrus.Fields{"secret": b.ref.Namespace + "/" + bucketRef, "keySecret": b.ref.Namespace + "/" + ref, "bucket": s.Bucket}
	key, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		b.ps.note("gcp-adc/"+b.ref.Namespace+"/"+ref, fields,
			"the gcp Secret has no key.json and this pod no key file at "+path+": using Application Default Credentials (workload identity)")
		return nil
	case err != nil:
		return fmt.Errorf("%s: Secret %q has no %s, and the key file: %w", keyGCPSecretRef, ref, gcpKeyJSON, err)
	}
	if err := gcs.CheckCredentialsJSON(bytes.TrimSpace(key)); err != nil {
		return fmt.Errorf("%s: Secret %q has no %s, and the key file %s: %w", keyGCPSecretRef, ref, gcpKeyJSON, path, err)
	}
	fields["keyFile"] = path
	b.ps.note("gcp-keyfile/"+b.ref.Namespace+"/"+ref, fields, "the gcp Secret has no key.json: using this pod's key file")
	s.keyJSON, s.keyFrom = bytes.TrimSpace(key), keyFromKeyFile
	return nil
}
