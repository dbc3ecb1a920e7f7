package gcs

import (
	"context"
	"errors"
	"fmt"

	"github.com/cnvrg/capsule/bucket"
)

var errAborted = errors.New("upload aborted")

// Upload starts a streaming write: a resumable upload in chunks of
// Options.ChunkSize, whose condition GCS checks when the last chunk
// finalizes the object. See the package doc.
func (b *Bucket) Upload(ctx context.Context, key string, opts bucket.PutOptions) (bucket.Upload, error) {
	opts = bucket.PutOptions{IfNoneMatch: opts.IfNoneMatch, ContentType: opts.ContentType, RetainUntil: opts.RetainUntil}
	w, err := b.startWrite(ctx, "commit", key, opts, b.chunk)
	if err != nil {
		return nil, err
	}
	return &upload{w: w}, nil
}

type uploadState int

const (
	open uploadState = iota
	committed
	finished // aborted, or failed
)

type upload struct {
	w     *write
	size  int64
	state uploadState
}

func (u *upload) Write(p []byte) (int, error) {
	if u.state != open {
		return 0, fmt.Errorf("upload %s: write after commit or abort", u.w.key)
	}
	n, err := u.w.w.Write(p)
	u.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("upload %s: %w", u.w.key, u.w.writeError(err))
	}
	return n, nil
}

// Commit sends what is buffered and finalizes the object.
func (u *upload) Commit() (bucket.ObjectInfo, error) {
	if u.state != open {
		return bucket.ObjectInfo{}, fmt.Errorf("upload %s: commit after commit or abort", u.w.key)
	}
	u.state = committed
	info, err := u.w.commit()
	if err != nil {
		u.state = finished
		return info, err
	}
	if info.Size != u.size {
		return info, fmt.Errorf("commit %s: the store holds %d bytes, %d were written", u.w.key, info.Size, u.size)
	}
	return info, nil
}

// Abort discards what was written. A no-op after Commit, whether Commit
// succeeded or failed.
func (u *upload) Abort() error {
	if u.state != open {
		return nil
	}
	u.state = finished
	u.w.abort(errAborted)
	return nil
}
