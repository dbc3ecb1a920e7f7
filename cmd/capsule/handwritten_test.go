package main

import (
	"context"
	"strings"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// A request written by hand without a cluster lands in the worker's
// cluster, so capsule ls (with the same configuration) shows it; an
// object whose name is not an id is answered once, and tail shows it.
func TestHandWrittenRequestsThroughTheCLI(t *testing.T) {
	e := newCLIEnv(t)
	e.extraEnv = map[string]string{"CAPSULE_CLUSTER": "cnvrg/prod"}
	b := e.bucket()
	ctx := context.Background()
	put := func(key, body string) {
		if _, err := bucket.PutBytes(ctx, b, key, []byte(body), bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put(requests.RequestKey("byhand1"), "\xef\xbb\xbf"+`{"apiVersion": "capsule/v1", "kind": "Backup", "id": "byhand1", "source": "data"}`)
	put("requests/By Hand.json", `{"apiVersion": "capsule/v1", "kind": "Backup", "id": "byhand2", "source": "data"}`)
	e.work("w1")
	e.work("w2")
	if out := e.must("ls"); !strings.Contains(out, "byhand1") {
		t.Fatalf("capsule ls in the worker's cluster does not show the backup:\n%s", out)
	}
	out := e.must("tail")
	id := requests.MisnamedID("requests/By Hand.json")
	if n := strings.Count(out, id); n != 1 {
		t.Fatalf("capsule tail shows the answer to the misnamed object %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(e.must("status", id), "requests/By Hand.json") {
		t.Fatalf("the answer does not name the object")
	}
}
