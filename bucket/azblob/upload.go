package azblob

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/cnvrg/capsule/bucket"
)

var errAborted = errors.New("upload aborted")

// abortGrace is how long Abort waits for the blocks in flight to land
// before it cancels them.
const abortGrace = 30 * time.Second

// Upload starts a streaming write; see the package doc.
func (b *Bucket) Upload(ctx context.Context, key string, opts bucket.PutOptions) (bucket.Upload, error) {
	return b.newUpload(ctx, key, bucket.PutOptions{IfNoneMatch: opts.IfNoneMatch, ContentType: opts.ContentType, RetainUntil: opts.RetainUntil}), nil
}

// newUpload is Upload with every condition of opts, If-Match included
// (Put stages large bodies through it).
func (b *Bucket) newUpload(ctx context.Context, key string, opts bucket.PutOptions) *upload {
	uctx, cancel := context.WithCancelCause(ctx)
	return &upload{
		b:      b,
		ctx:    uctx,
		cancel: cancel,
		key:    key,
		opts:   opts,
		id:     newToken()[:16],
		free:   make(chan []byte, b.opts.Concurrency+1),
		sem:    make(chan struct{}, b.opts.Concurrency),
	}
}

type uploadState int

const (
	open uploadState = iota
	committed
	finished // aborted, or failed and cleaned up
)

// upload fills one block at a time and stages full blocks in the
// background, at most Concurrency at once; Write blocks while all are in
// flight.
type upload struct {
	b      *Bucket
	ctx    context.Context
	cancel context.CancelCauseFunc
	key    string
	opts   bucket.PutOptions
	// id names this upload's blocks: "<id>.<number>", base64-encoded
	// (a blob's block IDs must all have the same length).
	id string

	buf  []byte        // the block being filled
	free chan []byte   // block buffers whose upload finished
	sem  chan struct{} // one token per block in flight
	wg   sync.WaitGroup

	blocks []string // IDs of the blocks sent, in order
	size   int64
	state  uploadState

	mu  sync.Mutex
	err error // the first failure of a block
}

// blockID is the base64 ID of block n of upload id.
func blockID(id string, n int) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%s.%06d", id, n))
}

// uploadIDOf returns the upload id of a block ID that this package made.
func uploadIDOf(blockID string) (string, bool) {
	raw, err := base64.StdEncoding.DecodeString(blockID)
	if err != nil || len(raw) != 23 || raw[16] != '.' {
		return "", false
	}
	return string(raw[:16]), true
}

func (u *upload) Write(p []byte) (int, error) {
	if u.state != open {
		return 0, fmt.Errorf("upload %s: write after commit or abort", u.key)
	}
	written := 0
	for len(p) > 0 {
		if err := u.failed(); err != nil {
			return written, err
		}
		if int64(len(u.buf)) == u.b.opts.BlockSize {
			// A full block with more data to come: stage it. (At the
			// end of the data, Commit decides.)
			if err := u.send(); err != nil {
				return written, err
			}
		}
		if u.buf == nil {
			u.buf = u.newBuffer()
		}
		n := min(int(u.b.opts.BlockSize)-len(u.buf), len(p))
		u.buf = append(u.buf, p[:n]...)
		p = p[n:]
		written += n
		u.size += int64(n)
	}
	return written, nil
}

// newBuffer returns an empty block buffer. The first block grows as
// written, so that small objects take little memory; later ones reuse the
// buffers of staged blocks.
func (u *upload) newBuffer() []byte {
	if len(u.blocks) == 0 {
		return make([]byte, 0, min(64<<10, u.b.opts.BlockSize))
	}
	select {
	case b := <-u.free:
		return b[:0]
	default:
		return make([]byte, 0, u.b.opts.BlockSize)
	}
}

func (u *upload) failed() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

func (u *upload) fail(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.mu.Unlock()
	u.cancel(err)
}

// send starts staging u.buf as the next block.
func (u *upload) send() error {
	if len(u.blocks) >= maxBlocks {
		err := fmt.Errorf("upload %s: more than %d blocks of %d bytes; raise the block size", u.key, maxBlocks, u.b.opts.BlockSize)
		u.fail(err)
		return err
	}
	select {
	case u.sem <- struct{}{}:
	case <-u.ctx.Done():
		err := fmt.Errorf("upload %s: %w", u.key, context.Cause(u.ctx))
		u.fail(err)
		return err
	}
	id, buf := blockID(u.id, len(u.blocks)), u.buf
	u.blocks = append(u.blocks, id)
	u.buf = nil
	if len(u.blocks) == 1 {
		// The first block is staged before Write returns, as S3 creates
		// its multipart upload: from then on the upload is pending
		// (ListUploads shows it), and a store that refuses the write
		// says so at once.
		err := u.stage(id, buf)
		u.free <- buf
		<-u.sem
		if err != nil {
			u.fail(err)
		}
		return err
	}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		err := u.stage(id, buf)
		u.free <- buf
		<-u.sem
		if err != nil {
			u.fail(err)
		}
	}()
	return nil
}

// stage uploads one block with its MD5, which the service checks.
// Staging a block again under its ID replaces it, so it is retried.
func (u *upload) stage(id string, buf []byte) error {
	sum := md5.Sum(buf)
	err := u.b.retry(u.ctx, "stage block", u.key, func() error {
		_, err := u.b.blockBlob(u.key).StageBlock(u.ctx, id, streaming.NopCloser(bytes.NewReader(buf)),
			&blockblob.StageBlockOptions{TransactionalValidation: blob.TransferValidationTypeMD5(sum[:])})
		return err
	})
	if err != nil {
		return translate("stage block of", u.key, err)
	}
	return nil
}

// Commit stages what is left and commits the block list with the upload's
// conditions; an upload that never filled a block is one Put Blob (with
// the same conditions).
func (u *upload) Commit() (bucket.ObjectInfo, error) {
	if u.state != open {
		return bucket.ObjectInfo{}, fmt.Errorf("upload %s: commit after commit or abort", u.key)
	}
	u.state = committed
	defer u.cancel(nil)
	if len(u.blocks) == 0 && int64(len(u.buf)) <= maxPutBlob {
		if err := context.Cause(u.ctx); err != nil {
			u.state = finished
			return bucket.ObjectInfo{}, fmt.Errorf("commit %s: %w", u.key, err)
		}
		info, err := u.b.Put(u.ctx, u.key, bytes.NewReader(u.buf), int64(len(u.buf)), u.opts)
		u.buf = nil
		if err != nil {
			u.state = finished
		}
		return info, err
	}
	if len(u.buf) > 0 {
		u.send() // on failure, sets what failed() reports below
	}
	u.wg.Wait()
	if err := u.failed(); err != nil {
		u.abort()
		return bucket.ObjectInfo{}, fmt.Errorf("commit %s: %w", u.key, err)
	}
	token := newToken()
	co := &blockblob.CommitBlockListOptions{
		Metadata:         map[string]*string{tokenKey: &token},
		HTTPHeaders:      headers(u.opts),
		AccessConditions: conditions(u.opts),
	}
	setRetention(&co.ImmutabilityPolicyMode, &co.ImmutabilityPolicyExpiryTime, u.opts)
	var out blockblob.CommitBlockListResponse
	write := func() (err error) {
		out, err = u.b.blockBlob(u.key).CommitBlockList(u.ctx, u.blocks, co)
		return err
	}
	var err error
	if u.opts.IfNoneMatch || u.opts.IfMatch != "" {
		err = u.b.conditional(u.ctx, "commit", u.key, write, token)
	} else {
		// A repeat of a commit that was applied finds the blocks
		// committed, and commits them again: harmless.
		err = u.b.retry(u.ctx, "commit", u.key, write)
	}
	var own *ownWrite
	switch {
	case errors.As(err, &own):
		own.info.Size = u.size
		return u.b.checkRetention(u.ctx, u.key, u.opts, own.info)
	case err != nil:
		u.abort()
		return bucket.ObjectInfo{ServerTime: errorTime(err)}, translateWrite("commit", u.key, u.opts, err)
	}
	info := bucket.ObjectInfo{Key: u.key, Size: u.size, ETag: unquote(out.ETag), LastModified: deref(out.LastModified), ServerTime: deref(out.Date)}
	return u.b.checkRetention(u.ctx, u.key, u.opts, info)
}

// Abort stops the blocks in flight and discards the staged ones. It is a
// no-op after Commit, whether Commit succeeded or failed (a failed Commit
// cleans up itself).
func (u *upload) Abort() error {
	if u.state != open {
		return nil
	}
	return u.abort()
}

func (u *upload) abort() error {
	u.state = finished
	// Let the blocks in flight land before discarding: a Put Block whose
	// request is canceled may still be applied by the service after the
	// discard, leaving the key pending (Azurite did, under load). Only
	// a block that takes longer than abortGrace is canceled.
	done := make(chan struct{})
	go func() { u.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(abortGrace):
		u.cancel(errAborted)
		<-done
	}
	u.cancel(errAborted)
	u.buf = nil
	if len(u.blocks) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), time.Minute)
	defer cancel()
	if err := u.b.discardUncommitted(ctx, u.key); err != nil {
		u.b.log.WithField("key", u.key).WithError(err).Warn("discarding the staged blocks of an aborted upload failed; Azure removes uncommitted blocks after 7 days")
		return err
	}
	return nil
}
