package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/internal/s3test"
)

// TestJSONLogsStayJSONWhenTheSDKWarns runs a worker that logs JSON
// against an S3 gateway whose answers to deletions carry a Date header the AWS SDK
// cannot parse: the SDK warns about it, and that warning must come out as
// one more JSON line (component aws-sdk), never as the SDK's own
// "SDK 2026/… WARN …" text on stderr.
func TestJSONLogsStayJSONWhenTheSDKWarns(t *testing.T) {
	bin := binary(t)
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	up, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(up)
	rp.ModifyResponse = func(res *http.Response) error {
		if op, _ := faultproxy.Classify(res.Request); op == faultproxy.DeleteObject {
			res.Header.Set("Date", "yesterday at noon")
		}
		return nil
	}
	// The Host header passes unchanged: the server checks SigV4 against
	// the gateway's address, which the client signed.
	gw := httptest.NewServer(rp)
	t.Cleanup(gw.Close)
	bucketURL := strings.Replace(srv.URL(name, "sdklog/"), srv.Endpoint, gw.URL, 1)
	config := writeConfig(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	b := openTestBucket(t, srv.URL(name, "sdklog/"))
	id := submitBackup(t, b)

	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config", config, "--bucket", bucketURL, "--log-format", "json", "worker", "--once", "--name", "w1")
	cmd.Env = append(os.Environ(), srv.Env()...)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("worker: %v\n%s", err, stderr.String())
	}
	waitSucceeded(t, b, id)
	sdkLines := 0
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		var entry map[string]any
		if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
			t.Errorf("a line of a JSON log is not JSON: %q", sc.Text())
			continue
		}
		if entry["component"] == "aws-sdk" {
			sdkLines++
			if entry["level"] != "warning" || !strings.Contains(entry["msg"].(string), "Date header") {
				t.Errorf("SDK line: %v", entry)
			}
		}
	}
	if sdkLines == 0 {
		t.Error("the SDK's warning about the Date header is not in the log")
	}
}
