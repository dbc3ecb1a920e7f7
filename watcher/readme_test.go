package watcher_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/cnvrg/capsule/bucket/s3"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/watcher"
)

// readmeRequests returns the README's example requests by name (the
// JSON block after each <!-- readme-request: NAME --> mark) and the
// aws s3 cp command shown after the backup.
func readmeRequests(t *testing.T) (map[string]string, string) {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)<!-- readme-request: ([a-z]+) -->\n```json\n(.*?)```").FindAllStringSubmatch(string(data), -1)
	out := map[string]string{}
	for _, b := range blocks {
		out[b[1]] = b[2]
	}
	cp := regexp.MustCompile(`(?m)^aws s3 cp \S+ \S+$`).FindString(string(data))
	return out, cp
}

// Every example request in the README is valid as written.
func TestReadmeExamplesAreValid(t *testing.T) {
	examples, cp := readmeRequests(t)
	for _, name := range []string{"backup", "restore", "verify", "cancel"} {
		doc, ok := examples[name]
		if !ok {
			t.Errorf("the README has no example %s request", name)
			continue
		}
		if !strings.Contains(doc, `"apiVersion": "capsule/v1"`) {
			t.Errorf("the README's %s example does not show apiVersion", name)
		}
		if name == "cancel" {
			if err := validator.Validate("cancel", []byte(doc)); err != nil {
				t.Errorf("the README's cancel example: %v", err)
			}
			continue
		}
		if _, err := requests.Parse([]byte(doc)); err != nil {
			t.Errorf("the README's %s example: %v", name, err)
		}
		if err := validator.Validate("request", []byte(doc)); err != nil {
			t.Errorf("the README's %s example does not match the schema: %v", name, err)
		}
	}
	if cp == "" {
		t.Error("the README shows no aws s3 cp command")
	}
}

// The README's backup example, uploaded as the README says (aws s3 cp,
// or the same plain PUT through the AWS SDK where the aws CLI is not
// installed) to versitygw, succeeds through a worker.
func TestReadmeBackupExampleSucceeds(t *testing.T) {
	examples, cp := readmeRequests(t)
	doc := examples["backup"]
	var req requests.Request
	if err := json.Unmarshal([]byte(doc), &req); err != nil {
		t.Fatal(err)
	}
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	sb, err := s3.New(context.Background(), s3.Options{Bucket: name, Endpoint: srv.Endpoint, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, sb)
	e.srcs[req.Source] = engines.Source{Name: req.Source, Engine: "files", Config: e.srcs["data"].Config}

	// The command as the README shows it, pointed at this bucket.
	f := strings.Fields(cp) // aws s3 cp FILE s3://my-bucket/capsule/requests/<id>.json
	file := filepath.Join(t.TempDir(), f[3])
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := strings.Replace(f[4], "s3://my-bucket/", "s3://"+name+"/", 1)
	if !strings.HasSuffix(dest, "/capsule/"+requests.RequestKey(req.ID)) {
		t.Fatalf("the README's command writes %s, not capsule/%s", f[4], requests.RequestKey(req.ID))
	}
	if bin, err := exec.LookPath("aws"); err == nil {
		cmd := exec.Command(bin, "--endpoint-url", srv.Endpoint, "s3", "cp", file, dest)
		cmd.Env = append(os.Environ(), srv.Env()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
		}
	} else {
		t.Logf("no aws CLI: uploading with the AWS SDK's PutObject")
		c := awss3.New(awss3.Options{Region: srv.Region, BaseEndpoint: aws.String(srv.Endpoint), UsePathStyle: true,
			Credentials: credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, "")})
		body, _ := os.Open(file)
		defer body.Close()
		key := strings.TrimPrefix(dest, "s3://"+name+"/")
		if _, err := c.PutObject(context.Background(), &awss3.PutObjectInput{Bucket: aws.String(name), Key: aws.String(key), Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	w := e.watcher("w1", func(c *watcher.Config) { c.Cluster = "cnvrg/app" })
	ctx := context.Background()
	r := e.waitResult(req.ID, 60*time.Second, func() { w.RunOnce(ctx); w.Wait() })
	if r.Status != requests.StatusSucceeded {
		t.Fatalf("the README's backup: %s %s", r.Status, r.Error)
	}
	if r.Cluster != "cnvrg/app" {
		t.Fatalf("the README's backup went to cluster %q, want the worker's", r.Cluster)
	}
}
