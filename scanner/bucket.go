package scanner

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/sirupsen/logrus"
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
)

// BucketSpec is the destination a bucketRef Secret names. Its keys stay in
// memory: they are not printed, logged or written anywhere.
type BucketSpec struct {
	// Secret is the bucketRef Secret's name.
	Secret string
	// Type is CNVRG_STORAGE_TYPE: minio or aws (the S3 APIs capsule
	// speaks).
	Type     string
	Endpoint string
	Region   string
	Bucket   string
	// Prefix is where capsule's objects live in the bucket (capsule/).
	Prefix string

	// IgnoredEndpoint is a CNVRG_STORAGE_ENDPOINT that was not used: the
	// operator's in-cluster MinIO URL in an aws Secret (see bucketSpec).
	IgnoredEndpoint string

	accessKey, secretKey string
	// identity names the credentials without revealing them: "role", or
	// "keys-" and an HMAC of the keys under the scanner's random key.
	identity string
}

// URL names the bucket in the form capsule's --bucket takes
// (s3://BUCKET/PREFIX?endpoint=...&region=...), without credentials. It
// is the bucket's key in Scanner.Buckets.
func (s BucketSpec) URL() string {
	q := url.Values{}
	if s.Endpoint != "" {
		q.Set("endpoint", s.Endpoint)
	}
	if s.Region != "" {
		q.Set("region", s.Region)
	}
	u := url.URL{Scheme: "s3", Host: s.Bucket, Path: "/" + s.Prefix, RawQuery: q.Encode()}
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

// Credentials says where the keys come from: "static" (the Secret) or
// "role" (AWS with both keys empty: the pod's IAM role or the AWS default
// chain).
func (s BucketSpec) Credentials() string {
	if s.accessKey == "" {
		return "role"
	}
	return "static"
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
	case "azure", "gcp":
		return s, fmt.Errorf("%s: %q is not supported: capsule writes to S3 APIs (minio, aws)", keyStorageType, s.Type)
	default:
		return s, fmt.Errorf("%s: %q is not one of minio, aws", keyStorageType, s.Type)
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
	b, err := s3.New(ctx, s3.Options{
		Bucket: s.Bucket, Endpoint: s.Endpoint, Region: s.Region,
		AccessKey: s.accessKey, SecretKey: s.secretKey, Log: log,
	})
	if err != nil {
		return nil, err
	}
	return bucket.Prefixed(b, s.Prefix), nil
}
