package scanner

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/sirupsen/logrus"
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

	accessKey, secretKey string
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
		if e, err := url.Parse(s.Endpoint); err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || e.User != nil {
			return s, fmt.Errorf("%s: want http(s)://HOST[:PORT]", keyStorageEndpoint)
		}
	}
	if s.Bucket == "" {
		return s, errors.New(keyStorageBucket + ": required")
	}
	return s, nil
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
