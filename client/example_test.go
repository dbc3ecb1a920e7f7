package client_test

import (
	"context"
	"fmt"
	"os"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
)

// Submit a backup request to a bucket and read its status. A worker
// ("capsule worker") would claim it; until one does, it is pending.
func Example() {
	dir, _ := os.MkdirTemp("", "capsule-example-")
	defer os.RemoveAll(dir)
	store, err := fs.New(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	b := bucket.Prefixed(store, "capsule/")
	ctx := context.Background()

	req := &requests.Request{Kind: requests.KindBackup, ID: "example-1", Source: "cnvrg/pg", Labels: map[string]string{"reason": "pre-upgrade"}}
	if err := client.Submit(ctx, b, req); err != nil {
		fmt.Println(err)
		return
	}
	st, err := client.GetStatus(ctx, b, "example-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.ID, st.Status, st.Request.Source)

	// Ids are never reused.
	fmt.Println(client.Submit(ctx, b, &requests.Request{Kind: requests.KindBackup, ID: "example-1", Source: "cnvrg/pg"}))

	// A request with a bad field is refused before it reaches the bucket.
	fmt.Println(client.Submit(ctx, b, &requests.Request{Kind: requests.KindBackup, Source: "../etc"}))
	// Output:
	// example-1 pending cnvrg/pg
	// request example-1 already exists: precondition failed
	// source: "../etc" is not a valid name: want segments of [A-Za-z0-9._-] separated by '/', at most 200 bytes
}
