package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/internal/s3test"
	"github.com/cnvrg/capsule/internal/sqstest"
	"github.com/cnvrg/capsule/requests"
	"github.com/sirupsen/logrus"
)

// startWorker runs `capsule worker` with args until the test ends and
// returns the address its --listen serves on.
func startWorker(t *testing.T, args ...string) string {
	t.Helper()
	pr, pw := io.Pipe()
	a := newApp(io.Discard, pw, func(string) string { return "" })
	cmd := a.root()
	cmd.SetArgs(append([]string{"worker", "--listen", "127.0.0.1:0", "--log-level", "error", "--log-format", "text"}, args...))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- cmd.ExecuteContext(ctx)
		pw.Close()
	}()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker after its context ended: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("worker did not stop 20s after its context ended")
		}
	})
	lines := bufio.NewScanner(pr)
	re := regexp.MustCompile(`serving the API and the page on (http://[0-9.:]+)/`)
	for lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			go io.Copy(io.Discard, pr) // keep draining the log
			return m[1]
		}
	}
	t.Fatalf("the worker never said where it listens: %v", <-done)
	return ""
}

func get(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, res.Status, body)
	}
	return string(body)
}

func openTestBucket(t *testing.T, url string) bucket.Bucket {
	t.Helper()
	b, _, err := bucketurl.Open(t.Context(), url, logrus.New())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "f.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "capsule.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "sources:\n  data:\n    engine: files\n    path: %s\n", data), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func submitBackup(t *testing.T, b bucket.Bucket) string {
	t.Helper()
	req := &requests.Request{Kind: requests.KindBackup, Source: "data"}
	if err := client.Submit(t.Context(), b, req); err != nil {
		t.Fatal(err)
	}
	return req.ID
}

func waitSucceeded(t *testing.T, b bucket.Bucket, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := client.Wait(ctx, b, id, 50*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Result == nil || st.Result.Status != requests.StatusSucceeded {
		t.Fatalf("request %s: %+v", id, st.Result)
	}
}

func TestWorkerServesMetricsAndHealth(t *testing.T) {
	url := "file://" + filepath.Join(t.TempDir(), "bucket")
	b := openTestBucket(t, url)
	id := submitBackup(t, b)
	addr := startWorker(t, "--bucket", url, "--config", writeConfig(t), "--poll", "100ms")
	waitSucceeded(t, b, id)
	get(t, addr+"/healthz")
	// The worker counts a request once it cleaned up after its result,
	// a moment after the result is visible.
	body := waitMetric(t, addr, `capsule_requests_finished_total{engine="files",kind="Backup",status="succeeded"} 1`)
	for _, want := range []string{
		`capsule_requests_claimed_total{engine="files",kind="Backup"} 1`,
		`capsule_requests_finished_total{engine="files",kind="Backup",status="succeeded"} 1`,
		`capsule_request_duration_seconds_count{engine="files",kind="Backup"} 1`,
		`capsule_bucket_operations_total{operation="put",outcome="ok"}`,
		`capsule_last_backup_success_timestamp_seconds{cluster="default",source="data"}`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	// The API is there too.
	if st := get(t, addr+"/v1/requests/"+id); !strings.Contains(st, `"succeeded"`) {
		t.Errorf("GET /v1/requests/%s: %s", id, st)
	}
}

// A request is claimed on its notification long before the backstop LIST
// (an hour away) would find it.
func TestWorkerClaimsOnNotification(t *testing.T) {
	s3 := s3test.Shared(t)
	q := sqstest.Start(t)
	name := s3.NewBucket(t)
	queue := q.NewQueue(t)
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	url := s3.URL(name, "capsule/")
	b := openTestBucket(t, url)
	addr := startWorker(t, "--bucket", url, "--config", writeConfig(t), "--sqs-queue", queue, "--backstop", "1h")
	// The worker's first pass (at start) is done once it listed requests/
	// and leases/: from then on only a notification gets a claim.
	deadline := time.Now().Add(20 * time.Second)
	listed := regexp.MustCompile(`capsule_bucket_operations_total\{operation="list",outcome="ok"\} ([0-9]+)`)
	for {
		if m := listed.FindStringSubmatch(get(t, addr+"/metrics")); m != nil {
			if n, _ := strconv.Atoi(m[1]); n >= 2 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker's first pass did not happen")
		}
		time.Sleep(20 * time.Millisecond) // nothing else to wait on in another command
	}
	id := submitBackup(t, b)
	if err := q.Send(t.Context(), queue, sqstest.S3Event(sqstest.MinIO, name, "capsule/"+requests.RequestKey(id), "etag")); err != nil {
		t.Fatal(err)
	}
	waitSucceeded(t, b, id)
	waitMetric(t, addr, `capsule_sqs_messages_total{outcome="claimed"} 1`)
}

// waitMetric scrapes the worker until its /metrics has line, and returns
// that scrape.
func waitMetric(t *testing.T, addr, line string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		body := get(t, addr+"/metrics")
		if strings.Contains(body, line) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics has no %s:\n%s", line, body)
		}
		time.Sleep(20 * time.Millisecond) // another command's state: nothing to wait on
	}
}

func TestWorkerRefusesFlagsThatDoNotGoTogether(t *testing.T) {
	file := "file://" + t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--once", "--listen", "127.0.0.1:0"}, "--listen"},
		{[]string{"--once", "--sqs-queue", "http://127.0.0.1:1/1/q"}, "--sqs-queue"},
		{[]string{"--backstop", "10s"}, "--backstop"},
		{[]string{"--sqs-queue", "http://127.0.0.1:1/1/q", "--backstop", "1ms"}, "--backstop"},
		{[]string{"--sqs-queue", "http://127.0.0.1:1/1/q"}, "s3://"},
		{[]string{"--listen", "256.0.0.1:99999"}, "--listen"},
	} {
		a := newApp(io.Discard, io.Discard, func(string) string { return "" })
		cmd := a.root()
		cmd.SetArgs(append([]string{"worker", "--bucket", file}, c.args...))
		err := cmd.ExecuteContext(t.Context())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("worker %v: %v, want an error naming %s", c.args, err, c.want)
		}
	}
}
