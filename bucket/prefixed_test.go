package bucket_test

import (
	"context"
	"testing"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/fs"
)

// TestUnprefixed: the whole bucket behind a view reads what lies beside
// the view's prefix, and a bucket that is no view is its own root.
func TestUnprefixed(t *testing.T) {
	ctx := context.Background()
	root, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.PutBytes(ctx, root, "cnvrg-smart-backups/ping", []byte("x"), bucket.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	view := bucket.Prefixed(root, "capsule/")
	if _, err := view.Head(ctx, "cnvrg-smart-backups/ping"); err == nil {
		t.Fatal("the view reads beside its prefix")
	}
	got, prefix := bucket.Unprefixed(view)
	if prefix != "capsule/" {
		t.Errorf("prefix = %q, want capsule/", prefix)
	}
	if _, err := got.Head(ctx, "cnvrg-smart-backups/ping"); err != nil {
		t.Errorf("the root does not read beside the prefix: %v", err)
	}
	if b, p := bucket.Unprefixed(root); b != bucket.Bucket(root) || p != "" {
		t.Errorf("Unprefixed(root) = %v, %q: want root itself", b, p)
	}
}
