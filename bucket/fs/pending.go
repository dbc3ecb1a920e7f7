package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cnvrg/capsule/bucket"
)

// tempPattern names the temporary file of every write (os.CreateTemp).
const tempPattern = "obj-*"

var _ bucket.UploadLister = (*Bucket)(nil)

// ListUploads lists the temporary files of writes in progress (or left by a
// crashed writer) whose key starts with prefix. UploadID is the file's name;
// Initiated is its last modification, so a writer that is still streaming
// keeps its upload young.
func (b *Bucket) ListUploads(ctx context.Context, prefix string) ([]bucket.PendingUpload, error) {
	entries, err := os.ReadDir(b.tmp)
	if err != nil {
		return nil, fmt.Errorf("list uploads %s: %w", prefix, err)
	}
	var ups []bucket.PendingUpload
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(e.Name(), strings.TrimSuffix(tempPattern, "*")) {
			continue
		}
		p := filepath.Join(b.tmp, e.Name())
		key, err := tempKey(p)
		if err != nil || !strings.HasPrefix(key, prefix) {
			continue // gone meanwhile, or written before files were labelled
		}
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		ups = append(ups, bucket.PendingUpload{Key: key, UploadID: e.Name(), Initiated: fi.ModTime()})
	}
	return ups, nil
}

// AbortUpload removes the temporary file uploadID when it belongs to key. A
// file that is gone is no error; the writer's Commit then fails.
func (b *Bucket) AbortUpload(ctx context.Context, key, uploadID string) error {
	if uploadID == "" || strings.ContainsAny(uploadID, `/\`) || !strings.HasPrefix(uploadID, strings.TrimSuffix(tempPattern, "*")) {
		return fmt.Errorf("abort upload %s: invalid upload id %q", key, uploadID)
	}
	p := filepath.Join(b.tmp, uploadID)
	got, err := tempKey(p)
	switch {
	case notExist(err):
		return nil
	case err != nil:
		return fmt.Errorf("abort upload %s: %w", key, err)
	case got != key:
		return fmt.Errorf("abort upload %s: upload %s is for key %s", key, uploadID, got)
	}
	if err := os.Remove(p); err != nil && !notExist(err) {
		return fmt.Errorf("abort upload %s: %w", key, err)
	}
	return nil
}

// tempKey reads the key label of a temporary file.
func tempKey(p string) (string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Getxattr(p, keyAttr, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < 1<<16 {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
