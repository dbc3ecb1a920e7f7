package bucketurl_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "capsule-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	b, _, err := bucketurl.Open(ctx, "file://"+dir, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Create-only: the first writer wins, the second learns it lost.
	_, err = bucket.PutBytes(ctx, b, "leases/r1.json", []byte(`{"holder":"a"}`), bucket.PutOptions{IfNoneMatch: true})
	fmt.Println("first:", err)
	_, err = bucket.PutBytes(ctx, b, "leases/r1.json", []byte(`{"holder":"b"}`), bucket.PutOptions{IfNoneMatch: true})
	fmt.Println("second lost:", errors.Is(err, bucket.ErrPreconditionFailed))

	// The object is a plain file below the default prefix.
	data, _ := os.ReadFile(dir + "/capsule/leases/r1.json")
	fmt.Println(string(data))
	// Output:
	// first: <nil>
	// second lost: true
	// {"holder":"a"}
}
