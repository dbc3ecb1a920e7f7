package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cnvrg/capsule/bucket"
)

var errAborted = errors.New("upload aborted")

// Upload starts a streaming write; see the package doc.
func (b *Bucket) Upload(ctx context.Context, key string, opts bucket.PutOptions) (bucket.Upload, error) {
	opts = bucket.PutOptions{IfNoneMatch: opts.IfNoneMatch, ContentType: opts.ContentType, RetainUntil: opts.RetainUntil}
	uctx, cancel := context.WithCancelCause(ctx)
	return &upload{
		b:      b,
		ctx:    uctx,
		cancel: cancel,
		key:    key,
		opts:   opts,
		free:   make(chan []byte, b.opts.Concurrency+1),
		sem:    make(chan struct{}, b.opts.Concurrency),
		next:   1,
	}, nil
}

type uploadState int

const (
	open uploadState = iota
	committed
	finished // aborted, or failed and cleaned up
)

// upload fills one part at a time and sends full parts in the background,
// at most Concurrency at once; Write blocks while all are in flight.
type upload struct {
	b      *Bucket
	ctx    context.Context
	cancel context.CancelCauseFunc
	key    string
	opts   bucket.PutOptions

	buf  []byte        // the part being filled
	free chan []byte   // part buffers whose upload finished
	sem  chan struct{} // one token per part in flight
	wg   sync.WaitGroup

	uploadID string // empty until the first part is sent
	next     int32  // number of the next part
	size     int64
	state    uploadState

	mu    sync.Mutex
	parts []types.CompletedPart
	err   error // the first failure of a part
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
		if int64(len(u.buf)) == u.partSize() {
			// A full part with more data to come: send it. (At the
			// end of the data, Commit decides.)
			if err := u.send(); err != nil {
				return written, err
			}
		}
		if u.buf == nil {
			u.buf = u.newBuffer()
		}
		n := min(int(u.partSize())-len(u.buf), len(p))
		if len(u.buf)+n > cap(u.buf) {
			// The first part's small buffer is full: take a whole
			// part's at once rather than growing by append, which
			// overshoots the part size and leaves a trail of garbage.
			u.buf = append(make([]byte, 0, u.partSize()), u.buf...)
		}
		u.buf = append(u.buf, p[:n]...)
		p = p[n:]
		written += n
		u.size += int64(n)
	}
	return written, nil
}

// newBuffer returns an empty part buffer. The first part grows as written,
// so that small objects take little memory; later ones reuse the buffers
// of finished parts.
func (u *upload) newBuffer() []byte {
	if u.uploadID == "" {
		return make([]byte, 0, 64<<10)
	}
	size := u.partSize()
	for {
		select {
		case b := <-u.free:
			if int64(cap(b)) < size {
				continue // a smaller part's: the parts grew
			}
			return b[:0]
		default:
			return make([]byte, 0, size)
		}
	}
}

// partsPerSize is how many parts an upload sends of each size: parts
// 1–1500 are PartSize, the next 1500 twice that, and so on, so that a
// small part size (little memory) still allows a large object: at the
// default 5 MiB, 10,000 parts hold 831 GB (7.8 GB before the parts first
// grow).
const partsPerSize = 1500

// partSize is the size of the part being filled (number u.next).
func (u *upload) partSize() int64 {
	return min(u.b.opts.PartSize<<((u.next-1)/partsPerSize), maxPartSize)
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

// send starts the upload of u.buf as the next part, creating the multipart
// upload for the first one.
func (u *upload) send() error {
	if u.uploadID == "" {
		in := &s3.CreateMultipartUploadInput{
			Bucket:            &u.b.name,
			Key:               &u.key,
			ChecksumAlgorithm: u.b.partChecksum(),
		}
		if u.opts.ContentType != "" {
			in.ContentType = &u.opts.ContentType
		}
		if !u.opts.RetainUntil.IsZero() {
			in.ObjectLockMode = types.ObjectLockModeCompliance
			in.ObjectLockRetainUntilDate = aws.Time(u.opts.RetainUntil)
		}
		var out *s3.CreateMultipartUploadOutput
		// A repeat after a lost answer leaves an unused upload
		// behind, for the bucket's lifecycle rule to remove.
		err := u.b.retry(u.ctx, "create upload", u.key, func() (err error) {
			out, err = u.b.client.CreateMultipartUpload(u.ctx, in)
			return err
		})
		if err != nil {
			err = translate("create upload", u.key, err)
			u.fail(err)
			return err
		}
		u.uploadID = aws.ToString(out.UploadId)
	}
	if u.next > maxParts {
		err := fmt.Errorf("upload %s: more than %d parts (%d bytes); raise the part size", u.key, maxParts, u.size)
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
	num, buf := u.next, u.buf
	u.next++
	u.buf = nil
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		err := u.uploadPart(num, buf)
		u.free <- buf
		<-u.sem
		if err != nil {
			u.fail(err)
		}
	}()
	return nil
}

func (u *upload) uploadPart(num int32, buf []byte) error {
	var out *s3.UploadPartOutput
	err := u.b.retry(u.ctx, "upload part", u.key, func() (err error) {
		out, err = u.b.client.UploadPart(u.ctx, &s3.UploadPartInput{
			Bucket:            &u.b.name,
			Key:               &u.key,
			UploadId:          &u.uploadID,
			PartNumber:        aws.Int32(num),
			Body:              bytes.NewReader(buf),
			ContentLength:     aws.Int64(int64(len(buf))),
			ChecksumAlgorithm: u.b.partChecksum(),
		})
		return err
	})
	if err != nil {
		return translate(fmt.Sprintf("upload part %d of", num), u.key, err)
	}
	u.mu.Lock()
	u.parts = append(u.parts, types.CompletedPart{
		PartNumber:    aws.Int32(num),
		ETag:          out.ETag,
		ChecksumCRC32: out.ChecksumCRC32,
	})
	u.mu.Unlock()
	return nil
}

// Commit sends what is left and completes the object: with one PutObject
// when it never filled a part, else with CompleteMultipartUpload.
func (u *upload) Commit() (bucket.ObjectInfo, error) {
	if u.state != open {
		return bucket.ObjectInfo{}, fmt.Errorf("upload %s: commit after commit or abort", u.key)
	}
	u.state = committed
	defer u.cancel(nil)
	if u.uploadID == "" {
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
	slices.SortFunc(u.parts, func(a, b types.CompletedPart) int { return int(*a.PartNumber - *b.PartNumber) })
	in := &s3.CompleteMultipartUploadInput{
		Bucket:          &u.b.name,
		Key:             &u.key,
		UploadId:        &u.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: u.parts},
	}
	if u.opts.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	var out *s3.CompleteMultipartUploadOutput
	err := u.b.conditional(u.ctx, "commit", u.key, func() (err error) {
		out, err = u.b.client.CompleteMultipartUpload(u.ctx, in, noSDKRetries)
		return err
	}, u.ownETag)
	var own *ownWrite
	switch {
	case errors.As(err, &own):
		own.info.Size = u.size
		return own.info, nil
	case err != nil:
		u.abort()
		return bucket.ObjectInfo{ServerTime: errorTime(err)}, translateWrite("commit", u.key, u.opts, err)
	}
	now := responseTime(out.ResultMetadata)
	return bucket.ObjectInfo{Key: u.key, Size: u.size, ETag: unquote(out.ETag), LastModified: now, ServerTime: now}, nil
}

// ownETag is the ETag S3 gives the completed object: the MD5 of the parts'
// MD5s, then "-" and the number of parts.
func (u *upload) ownETag() (string, error) {
	h := md5.New()
	for _, p := range u.parts {
		sum, err := hex.DecodeString(unquote(p.ETag))
		if err != nil {
			return "", fmt.Errorf("part etag %s is no md5", aws.ToString(p.ETag))
		}
		h.Write(sum)
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), len(u.parts)), nil
}

// Abort stops the parts in flight and aborts the multipart upload. It is a
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
	u.cancel(errAborted)
	u.wg.Wait()
	u.buf = nil
	if u.uploadID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), time.Minute)
	defer cancel()
	err := u.b.retry(ctx, "abort upload", u.key, func() error {
		_, err := u.b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: &u.b.name, Key: &u.key, UploadId: &u.uploadID,
		})
		return err
	})
	if err = translate("abort upload", u.key, err); err != nil {
		u.b.log.WithField("key", u.key).WithError(err).Warn("abort multipart upload failed; the bucket's lifecycle rule must remove it")
		return err
	}
	return nil
}
