package faultproxy_test

import (
	"bytes"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cnvrg/capsule/internal/faultproxy"
	"github.com/cnvrg/capsule/internal/s3test"
)

// TestIgnoreConditions: with the quirks on, a create-only PutObject and a
// stale If-Match one pass through the proxy as unconditional writes, signed
// again so that the server takes them, and overwrite; straight to the
// server the same writes fail with 412. With the quirks off, the proxy
// passes the conditions on.
func TestIgnoreConditions(t *testing.T) {
	srv := s3test.Shared(t)
	w := newWorld(t, 1)
	ctx := t.Context()
	key := "quirk/object"
	if err := w.put(t, w.direct, key, []byte("first")); err != nil {
		t.Fatal(err)
	}
	head, err := w.direct.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &w.bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	put := func(c *s3.Client, data string, in s3.PutObjectInput) error {
		in.Bucket, in.Key, in.Body = &w.bucket, &key, bytes.NewReader([]byte(data))
		_, err := c.PutObject(ctx, &in)
		return err
	}
	createOnly := s3.PutObjectInput{IfNoneMatch: aws.String("*")}
	stale := s3.PutObjectInput{IfMatch: head.ETag}
	if err := put(w.direct, "x", createOnly); err == nil {
		t.Fatal("create-only write over an object succeeded at the server")
	}
	creds := faultproxy.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: srv.Region}

	w.proxy.SetQuirks(creds, faultproxy.IgnoreIfNoneMatch, faultproxy.IgnoreIfMatch)
	if err := put(w.via, "second", createOnly); err != nil {
		t.Fatalf("create-only write through a proxy that drops If-None-Match: %v", err)
	}
	if got := w.stored(t, key); string(got) != "second" {
		t.Fatalf("stored %q after the create-only write, want it overwritten", got)
	}
	if err := put(w.via, "third", stale); err != nil {
		t.Fatalf("stale If-Match write through a proxy that drops If-Match: %v", err)
	}
	if got := w.stored(t, key); string(got) != "third" {
		t.Fatalf("stored %q after the stale If-Match write, want it overwritten", got)
	}
	if q := w.proxy.Stats().Quirks; q[faultproxy.IgnoreIfNoneMatch] != 1 || q[faultproxy.IgnoreIfMatch] != 1 {
		t.Errorf("quirk counts %v, want one of each", q)
	}

	w.proxy.SetQuirks(creds)
	if err := put(w.via, "fourth", createOnly); err == nil {
		t.Errorf("create-only write over an object succeeded with the quirks off")
	} else if code, status := apiError(err); status != 412 {
		t.Errorf("create-only write with the quirks off: %s %d, want 412", code, status)
	}
	if got := w.stored(t, key); string(got) != "third" {
		t.Errorf("stored %q, want the last write that was let through", got)
	}
}
