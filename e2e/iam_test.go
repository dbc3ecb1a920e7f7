package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The AWS IAM policies of deploy/aws grant exactly the S3 actions that
// capsule's S3 client (bucket/s3) needs for the calls it makes: every
// call's action is granted, and every action granted is one a call needs.

// s3CallActions maps each S3 API operation to the IAM action that AWS
// authorizes it with. A call bucket/s3 makes that is missing here fails
// TestIAMPolicyMatchesTheS3Calls: add its action here and to the policies.
var s3CallActions = map[string]string{
	"GetObject":               "s3:GetObject",
	"HeadObject":              "s3:GetObject",
	"ListObjectsV2":           "s3:ListBucket",
	"PutObject":               "s3:PutObject",
	"CreateMultipartUpload":   "s3:PutObject",
	"UploadPart":              "s3:PutObject",
	"CompleteMultipartUpload": "s3:PutObject",
	"DeleteObject":            "s3:DeleteObject",
	"DeleteObjects":           "s3:DeleteObject", // AWS authorizes each key of the batch as a DeleteObject
	"AbortMultipartUpload":    "s3:AbortMultipartUpload",
	"ListMultipartUploads":    "s3:ListBucketMultipartUploads",
}

// s3LockActions are the Object Lock actions, by the SDK field whose use
// needs them: writing a retention with an object (PutObject,
// CreateMultipartUpload) needs s3:PutObjectRetention; HeadObject returns
// the retain-until date and the legal hold (read to tell a locked object
// from a missing permission) only with s3:GetObjectRetention and
// s3:GetObjectLegalHold.
var s3LockActions = []struct {
	use    *regexp.Regexp
	action string
}{
	{regexp.MustCompile(`\bin\.ObjectLockMode\s*=`), "s3:PutObjectRetention"},
	{regexp.MustCompile(`\bin\.ObjectLockRetainUntilDate\s*=`), "s3:PutObjectRetention"},
	{regexp.MustCompile(`out\.ObjectLockRetainUntilDate\b`), "s3:GetObjectRetention"},
	{regexp.MustCompile(`out\.ObjectLockLegalHoldStatus\b`), "s3:GetObjectLegalHold"},
}

type iamPolicy struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Action    []string
		Resource  string
		Condition map[string]map[string][]string
	}
}

func TestIAMPolicyMatchesTheS3Calls(t *testing.T) {
	srcs, err := filepath.Glob("../bucket/s3/*.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`\.client\.([A-Z]\w*)\(`)
	base, lock := map[string]bool{}, map[string]bool{}
	calls := 0
	for _, f := range srcs {
		// create.go is `capsule bucket create`, which an administrator
		// runs once with their own credentials: the policies are the
		// workers', which deliberately lack s3:CreateBucket.
		if strings.HasSuffix(f, "_test.go") || filepath.Base(f) == "create.go" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(data), -1) {
			calls++
			a, ok := s3CallActions[m[1]]
			if !ok {
				t.Errorf("%s calls %s, whose IAM action is unknown to this test: add it to s3CallActions and to deploy/aws/*.json", f, m[1])
				continue
			}
			base[a] = true
		}
		for _, l := range s3LockActions {
			if l.use.Match(data) {
				lock[l.action] = true
			}
		}
	}
	if calls < 8 {
		t.Fatalf("found %d S3 calls in bucket/s3: the pattern no longer matches how it calls the SDK", calls)
	}
	// No other package of capsule's binary talks to S3 directly.
	err = filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".tools" || d.Name() == ".git" || p == "../bench" || p == "../internal/s3test") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || filepath.Dir(p) == "../bucket/s3" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(data), `"github.com/aws/aws-sdk-go-v2/service/s3"`) {
			t.Errorf("%s imports the S3 SDK: its calls are not checked against deploy/aws/iam-policy.json", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lock) == 0 {
		t.Fatalf("no Object Lock fields found in bucket/s3: the patterns no longer match")
	}
	withLock := map[string]bool{}
	for a := range base {
		withLock[a] = true
	}
	for a := range lock {
		withLock[a] = true
	}

	for file, want := range map[string]map[string]bool{
		"iam-policy.json":             base,
		"iam-policy-object-lock.json": withLock,
	} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "deploy", "aws", file))
			if err != nil {
				t.Fatal(err)
			}
			var p iamPolicy
			if err := json.Unmarshal(data, &p); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if p.Version != "2012-10-17" {
				t.Errorf("Version %q, want 2012-10-17", p.Version)
			}
			granted := map[string]bool{}
			for _, s := range p.Statement {
				if s.Effect != "Allow" {
					t.Errorf("statement %s: effect %s", s.Sid, s.Effect)
				}
				bucketLevel := s.Resource == "arn:aws:s3:::BUCKET"
				if !bucketLevel && s.Resource != "arn:aws:s3:::BUCKET/capsule/*" {
					t.Errorf("statement %s: resource %s is neither the bucket nor its capsule/ prefix", s.Sid, s.Resource)
				}
				for _, a := range s.Action {
					if strings.Contains(a, "*") {
						t.Errorf("statement %s grants %s: name each action", s.Sid, a)
					}
					if bucketLevel != (a == "s3:ListBucket" || a == "s3:ListBucketMultipartUploads") {
						t.Errorf("statement %s: %s on %s (bucket actions on the bucket, object actions on the prefix)", s.Sid, a, s.Resource)
					}
					if a == "s3:ListBucket" && !slices.Equal(s.Condition["StringLike"]["s3:prefix"], []string{"capsule/*"}) {
						t.Errorf("statement %s: s3:ListBucket without the condition s3:prefix capsule/*", s.Sid)
					}
					granted[a] = true
				}
			}
			if g, w := keysOf(granted), keysOf(want); !slices.Equal(g, w) {
				t.Errorf("%s grants %v; capsule's S3 calls need %v", file, g, w)
			}
		})
	}
}

func keysOf(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
