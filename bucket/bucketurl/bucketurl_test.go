package bucketurl_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/bucket/gcs"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/internal/gcstest"
	"github.com/cnvrg/capsule/internal/s3test"
)

func open(t *testing.T, raw string) (bucket.Bucket, string) {
	t.Helper()
	b, desc, err := bucketurl.Open(t.Context(), raw, logrus.New())
	if err != nil {
		t.Fatalf("open %s: %v", raw, err)
	}
	return b, desc
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	fileURL := (&url.URL{Scheme: "file", Path: dir}).String()
	for _, c := range []struct {
		raw  string
		file string // where key "k" lands
	}{
		{fileURL, "capsule/k"},
		{dir + "/plain", "plain/capsule/k"},
		{fileURL + "?prefix=other", "other/k"},
		{fileURL + "?prefix=", "k"},
		{"file://localhost" + dir + "/local", "local/capsule/k"},
	} {
		b, desc := open(t, c.raw)
		if _, err := bucket.PutBytes(t.Context(), b, "k", []byte(c.raw), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil || string(data) != c.raw {
			t.Errorf("%s (%s): %s holds %q, %v", c.raw, desc, c.file, data, err)
		}
		os.Remove(filepath.Join(dir, c.file))
	}
}

func TestBadURLs(t *testing.T) {
	for raw, want := range map[string]string{
		"":                               "empty",
		"ftp://bucket/x":                 "unknown scheme",
		"gs:///prefix":                   "no bucket name",
		"gs://key:secret@bucket/":        "credentials do not belong",
		"gs://bucket/?endpoint=foo":      "endpoint",
		"gs://bucket/?region=eu":         "unknown parameter",
		"file://host/tmp/x":              "local path",
		"file:relative/x":                "absolute path",
		"file:///tmp/x?region=eu":        "unknown parameter",
		"s3:///prefix":                   "no bucket name",
		"s3://key:secret@bucket/":        "credentials do not belong",
		"s3://bucket/?pathStyle=maybe":   "pathStyle",
		"s3://bucket/?endpoint=foo":      "endpoint",
		"s3://bucket/?color=blue":        "unknown parameter",
		"s3://bucket/?prefix=a&prefix=b": "2 times",
		"s3://b/%zz":                     "invalid URL escape",
	} {
		_, _, err := bucketurl.Open(t.Context(), raw, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("open %q: %v, want an error about %q", raw, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("open %q: error shows the secret: %v", raw, err)
		}
	}
}

func TestS3(t *testing.T) {
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	raw, err := s3.New(t.Context(), s3.Options{Bucket: name, Endpoint: srv.Endpoint, Region: srv.Region})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		url string
		key string // where key "k" lands
	}{
		{srv.URL(name, ""), "capsule/k"},
		{srv.URL(name, "team/a"), "team/a/k"},
		{srv.URL(name, "team/b/") + "&prefix=over", "over/k"},
	} {
		b, desc := open(t, c.url)
		if !strings.Contains(desc, name) || strings.Contains(desc, srv.SecretKey) {
			t.Errorf("description %q", desc)
		}
		if _, err := bucket.PutBytes(t.Context(), b, "k", []byte(c.url), bucket.PutOptions{IfNoneMatch: true}); err != nil {
			t.Fatalf("%s: %v", c.url, err)
		}
		data, _, err := bucket.GetBytes(t.Context(), raw, c.key)
		if err != nil || string(data) != c.url {
			t.Errorf("%s: %s holds %q, %v", c.url, c.key, data, err)
		}
	}
}

func TestGCS(t *testing.T) {
	srv := gcstest.Shared(t)
	name := srv.NewBucket(t)
	raw, err := gcs.New(t.Context(), gcs.Options{Bucket: name, Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		url string
		key string // where key "k" lands
	}{
		{srv.URL(name, ""), "capsule/k"},
		{srv.URL(name, "team/a"), "team/a/k"},
		{srv.URL(name, "team/b/") + "&prefix=over", "over/k"},
	} {
		b, desc := open(t, c.url)
		if !strings.HasPrefix(desc, "gs://"+name+"/") || !strings.Contains(desc, srv.Endpoint) {
			t.Errorf("description %q", desc)
		}
		if _, err := bucket.PutBytes(t.Context(), b, "k", []byte(c.url), bucket.PutOptions{IfNoneMatch: true}); err != nil {
			t.Fatalf("%s: %v", c.url, err)
		}
		data, _, err := bucket.GetBytes(t.Context(), raw, c.key)
		if err != nil || string(data) != c.url {
			t.Errorf("%s: %s holds %q, %v", c.url, c.key, data, err)
		}
	}
}

// TestGCSWithoutCredentials: without an endpoint a gs:// URL needs
// Application Default Credentials, and says so when they are unusable. (A
// key file that does not exist fails before any network access.)
func TestGCSWithoutCredentials(t *testing.T) {
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "missing-key.json"))
	_, _, err := bucketurl.Open(t.Context(), "gs://backups/capsule/", nil)
	if err == nil || !strings.Contains(err.Error(), "Application Default Credentials") || !strings.Contains(err.Error(), "missing-key.json") {
		t.Fatalf("open without credentials: %v; want an error about Application Default Credentials naming the key file", err)
	}
}

func TestDefaultURL(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "/data home")
	if got, want := bucketurl.DefaultURL(), "file:///data%20home/capsule/bucket"; got != want {
		t.Errorf("with XDG_DATA_HOME: %s, want %s", got, want)
	}
	t.Setenv("XDG_DATA_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got, want := bucketurl.DefaultURL(), "file:///home/u/.local/share/capsule/bucket"; got != want {
		t.Errorf("without XDG_DATA_HOME: %s, want %s", got, want)
	}
	u, _ := url.Parse(bucketurl.DefaultURL())
	if u.Path != "/home/u/.local/share/capsule/bucket" {
		t.Errorf("path %q", u.Path)
	}
}
