// Package bucketurl opens a bucket.Bucket from a URL: s3://BUCKET/PREFIX for
// any S3 API, gs://BUCKET/PREFIX for Google Cloud Storage, file:///PATH (or a
// plain path) for a local directory. Each scheme is one case of a switch;
// backends do not register themselves.
//
//	s3://backups/capsule/?endpoint=http://127.0.0.1:7070&region=us-east-1&pathStyle=true
//	gs://backups/capsule/   (?endpoint=http://127.0.0.1:4443 for an emulator)
//	file:///var/lib/capsule/bucket
//	/var/lib/capsule/bucket?prefix=   (a plain path is taken literally: no query)
//
// Everything capsule writes lives below a prefix: the URL's path for s3
// (capsule/ when empty), capsule/ for a directory, so that the directory's
// layout is that of a bucket synced to it. The query parameter prefix
// overrides both; prefix= (empty) means none. S3 credentials never come from
// the URL, only from the AWS default chain (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, profiles, web identity, instance
// roles), so URLs can be logged. GCS credentials likewise come only from
// Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
// application-default login, workload identity on GKE).
package bucketurl

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/bucket/s3"
)

// DefaultPrefix is the prefix when the URL names none.
const DefaultPrefix = "capsule/"

// Open opens the bucket rawURL names, scoped to its prefix, and describes it
// in words fit for a log (no secrets). A local directory is created when
// missing.
func Open(ctx context.Context, rawURL string, log logrus.FieldLogger) (bucket.Bucket, string, error) {
	return open(ctx, rawURL, log, false)
}

// ErrNoBucket is wrapped by OpenExisting's error for a local directory
// that does not exist.
var ErrNoBucket = errors.New("no such bucket")

// OpenExisting is Open for commands that only read: a local directory
// that does not exist is an error wrapping ErrNoBucket, never a new empty
// bucket (a mistyped path would otherwise list nothing, silently). Object
// stores are opened as by Open: they never create a bucket.
func OpenExisting(ctx context.Context, rawURL string, log logrus.FieldLogger) (bucket.Bucket, string, error) {
	return open(ctx, rawURL, log, true)
}

func open(ctx context.Context, rawURL string, log logrus.FieldLogger, existing bool) (bucket.Bucket, string, error) {
	if rawURL == "" {
		return nil, "", errors.New("bucket url: empty")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", fmt.Errorf("bucket url %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "s3":
		return openS3(ctx, u, log)
	case "gs":
		return openGCS(ctx, u, log)
	case "azblob":
		return openAzblob(u, log)
	case "file":
		return openFile(u, existing)
	case "":
		return openDir(rawURL, DefaultPrefix, existing)
	default:
		return nil, "", fmt.Errorf("bucket url %q: unknown scheme %q: want s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or file:///PATH", rawURL, u.Scheme)
	}
}

// DefaultURL is where capsule keeps its bucket when none is configured:
// $XDG_DATA_HOME/capsule/bucket, else ~/.local/share/capsule/bucket, else
// (no home directory, as for some service accounts) /var/lib/capsule/bucket.
func DefaultURL() string {
	dir := os.Getenv("XDG_DATA_HOME")
	if !filepath.IsAbs(dir) { // the spec says to ignore a relative one
		dir = ""
		if home, err := os.UserHomeDir(); err == nil && filepath.IsAbs(home) {
			dir = filepath.Join(home, ".local", "share")
		}
	}
	if dir == "" {
		return (&url.URL{Scheme: "file", Path: "/var/lib/capsule/bucket"}).String()
	}
	return (&url.URL{Scheme: "file", Path: filepath.Join(dir, "capsule", "bucket")}).String()
}

// query checks that q holds only the known keys and returns its prefix
// (def when absent).
func query(u *url.URL, def string, known ...string) (url.Values, string, error) {
	q := u.Query()
	for k := range q {
		if !slices.Contains(known, k) {
			return nil, "", fmt.Errorf("bucket url %s: unknown parameter %q (known: %s)", redacted(u), k, strings.Join(known, ", "))
		}
		if len(q[k]) > 1 {
			return nil, "", fmt.Errorf("bucket url %s: parameter %q given %d times", redacted(u), k, len(q[k]))
		}
	}
	prefix := def
	if q.Has("prefix") {
		prefix = q.Get("prefix")
	}
	return q, normalPrefix(prefix), nil
}

// normalPrefix drops leading slashes and ends a non-empty prefix in "/".
func normalPrefix(p string) string {
	p = strings.TrimLeft(p, "/")
	if p != "" && !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

func redacted(u *url.URL) string { return u.Redacted() }

func openS3(ctx context.Context, u *url.URL, log logrus.FieldLogger) (bucket.Bucket, string, error) {
	if u.User != nil {
		return nil, "", fmt.Errorf("bucket url %s: credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or use a profile or role)", redacted(u))
	}
	if u.Host == "" {
		return nil, "", fmt.Errorf("bucket url %s: no bucket name: want s3://BUCKET/PREFIX", u)
	}
	pathPrefix := strings.TrimPrefix(u.Path, "/")
	if pathPrefix == "" {
		pathPrefix = DefaultPrefix
	}
	q, prefix, err := query(u, pathPrefix, "endpoint", "region", "pathStyle", "prefix")
	if err != nil {
		return nil, "", err
	}
	o := s3.Options{Bucket: u.Host, Endpoint: q.Get("endpoint"), Region: q.Get("region"), Log: log}
	if o.Endpoint != "" {
		if e, err := url.Parse(o.Endpoint); err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return nil, "", fmt.Errorf("bucket url %s: endpoint %q: want http(s)://HOST[:PORT]", u, o.Endpoint)
		}
	}
	if q.Has("pathStyle") {
		v, err := strconv.ParseBool(q.Get("pathStyle"))
		if err != nil {
			return nil, "", fmt.Errorf("bucket url %s: pathStyle %q: want true or false", u, q.Get("pathStyle"))
		}
		o.PathStyle, o.VirtualHosted = v, !v
	}
	b, err := s3.New(ctx, o)
	if err != nil {
		return nil, "", err
	}
	desc := fmt.Sprintf("s3://%s/%s", o.Bucket, prefix)
	if o.Endpoint != "" {
		desc += " at " + o.Endpoint
	}
	return bucket.Prefixed(b, prefix), desc, nil
}

func openGCS(ctx context.Context, u *url.URL, log logrus.FieldLogger) (bucket.Bucket, string, error) {
	if u.User != nil {
		return nil, "", fmt.Errorf("bucket url %s: credentials do not belong in the URL: use Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS naming a key file, or workload identity)", redacted(u))
	}
	if u.Host == "" {
		return nil, "", fmt.Errorf("bucket url %s: no bucket name: want gs://BUCKET/PREFIX", u)
	}
	pathPrefix := strings.TrimPrefix(u.Path, "/")
	if pathPrefix == "" {
		pathPrefix = DefaultPrefix
	}
	q, prefix, err := query(u, pathPrefix, "endpoint", "prefix")
	if err != nil {
		return nil, "", err
	}
	o := gcs.Options{Bucket: u.Host, Endpoint: q.Get("endpoint"), Log: log}
	if o.Endpoint != "" {
		if e, err := url.Parse(o.Endpoint); err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return nil, "", fmt.Errorf("bucket url %s: endpoint %q: want http(s)://HOST[:PORT]", u, o.Endpoint)
		}
	}
	b, err := gcs.New(ctx, o)
	if err != nil {
		return nil, "", err
	}
	desc := fmt.Sprintf("gs://%s/%s", o.Bucket, prefix)
	if o.Endpoint != "" {
		desc += " at " + o.Endpoint
	}
	return bucket.Prefixed(b, prefix), desc, nil
}

func openFile(u *url.URL, existing bool) (bucket.Bucket, string, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, "", fmt.Errorf("bucket url %s: file URLs name a local path (file:///PATH), not host %q", u, u.Host)
	}
	if u.Opaque != "" || !filepath.IsAbs(u.Path) {
		return nil, "", fmt.Errorf("bucket url %s: want an absolute path, file:///PATH", u)
	}
	_, prefix, err := query(u, DefaultPrefix, "prefix")
	if err != nil {
		return nil, "", err
	}
	return openDir(u.Path, prefix, existing)
}

func openDir(path, prefix string, existing bool) (bucket.Bucket, string, error) {
	if existing {
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, "", fmt.Errorf("bucket directory %s does not exist (a mistyped path?): %w", path, ErrNoBucket)
		case err != nil:
			return nil, "", fmt.Errorf("bucket directory %s: %w", path, err)
		case !fi.IsDir():
			return nil, "", fmt.Errorf("bucket directory %s is not a directory: %w", path, ErrNoBucket)
		}
	}
	b, err := fs.New(path)
	if err != nil {
		return nil, "", err
	}
	desc := (&url.URL{Scheme: "file", Path: b.Dir()}).String()
	if prefix != "" {
		desc += " (prefix " + prefix + ")"
	}
	return bucket.Prefixed(b, prefix), desc, nil
}
