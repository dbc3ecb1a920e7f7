package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/awslog"
)

const (
	// DefaultPartSize is the size of a multipart upload's first parts
	// (later ones grow: see partsPerSize): S3's smallest. With
	// DefaultConcurrency parts in flight and one filling, an upload holds
	// at most 10 MiB up to 7.8 GB.
	DefaultPartSize = MinPartSize
	// MinPartSize is S3's smallest part (but the last).
	MinPartSize = 5 << 20
	// DefaultConcurrency is how many parts are in flight at once. One
	// keeps a loopback or LAN server up with what a worker compresses (a
	// 5 MiB part uploads in a fraction of the time the next takes to
	// fill) and keeps the worker within its memory budget (issue 20:
	// 100 MiB of peak RSS); each more holds another part in memory. A
	// far, slow link may want more (Options.Concurrency).
	DefaultConcurrency = 1
	// maxParts is S3's limit of parts per upload.
	maxParts = 10000
	// maxPartSize is S3's largest part.
	maxPartSize = 5 << 30
	// defaultRegion is used with a custom Endpoint when no region is set.
	defaultRegion = "us-east-1"
)

// Options configure a Bucket.
type Options struct {
	// Bucket is the bucket's name. Required.
	Bucket string
	// Endpoint is the S3 API's base URL (http://127.0.0.1:7070 for a
	// versitygw); empty means AWS.
	Endpoint string
	// Region defaults to the AWS configuration's (AWS_REGION, ~/.aws), or
	// to us-east-1 with an Endpoint.
	Region string
	// PathStyle addresses the bucket in the path (http://host/bucket/key)
	// rather than the host name. An Endpoint implies it unless
	// VirtualHosted is set.
	PathStyle     bool
	VirtualHosted bool
	// AccessKey, SecretKey and SessionToken are static credentials. When
	// AccessKey is empty the AWS default chain is used (AWS_* environment
	// variables, ~/.aws, web identity, instance roles).
	AccessKey    string
	SecretKey    string
	SessionToken string
	// PartSize of multipart uploads; DefaultPartSize when zero, at least
	// MinPartSize.
	PartSize int64
	// Concurrency is the number of parts in flight; DefaultConcurrency
	// when zero.
	Concurrency int
	// Log receives retries and cleanup failures; nothing when nil.
	Log logrus.FieldLogger
}

// Bucket is an S3 bucket.
type Bucket struct {
	client *s3.Client
	name   string
	opts   Options
	log    logrus.FieldLogger
	// sums is when the client sends request checksums.
	sums aws.RequestChecksumCalculation
	// listAll is set once the server was seen to list open uploads only
	// for a whole key (see ListUploads). A pointer: copies of a Bucket
	// talk to the same server.
	listAll *atomic.Bool
	// noBatch is set once the server refused DeleteObjects for good
	// (see DeleteBatch); shared by copies like listAll.
	noBatch *atomic.Bool
}

var _ bucket.Bucket = (*Bucket)(nil)

// New configures a client for o.Bucket. It does not contact the server.
func New(ctx context.Context, o Options) (*Bucket, error) {
	if o.Bucket == "" {
		return nil, errors.New("s3 bucket: no bucket name")
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.PartSize < MinPartSize {
		return nil, fmt.Errorf("s3 bucket: part size %d is below S3's minimum of %d", o.PartSize, MinPartSize)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		o.Log = l
	}
	if o.Region == "" && o.Endpoint != "" {
		o.Region = defaultRegion
	}
	loaders := []func(*config.LoadOptions) error{
		config.WithLogger(awslog.Logger(o.Log)),
		config.WithRetryer(func() aws.Retryer {
			// No client-side retry quota: it would stop retries of
			// a flaky gateway for every later request too.
			return retry.NewStandard(func(so *retry.StandardOptions) { so.RateLimiter = ratelimit.None })
		}),
	}
	if o.Region != "" {
		loaders = append(loaders, config.WithRegion(o.Region))
	}
	if o.AccessKey != "" {
		loaders = append(loaders, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(o.AccessKey, o.SecretKey, o.SessionToken)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loaders...)
	if err != nil {
		return nil, fmt.Errorf("s3 bucket %s: aws configuration: %w", o.Bucket, err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("s3 bucket %s: no region: set one (AWS_REGION, or the URL's ?region=)", o.Bucket)
	}
	reqSums, respSums := checksumModes(o.Endpoint, cfg)
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle || (o.Endpoint != "" && !o.VirtualHosted)
		so.RequestChecksumCalculation, so.ResponseChecksumValidation = reqSums, respSums
	})
	return &Bucket{client: client, name: o.Bucket, opts: o, log: o.Log.WithField("bucket", o.Bucket), sums: reqSums, listAll: new(atomic.Bool), noBatch: new(atomic.Bool)}, nil
}

// Client is the SDK client, for what the bucket interface does not cover.
func (b *Bucket) Client() *s3.Client { return b.client }

func (b *Bucket) String() string {
	if b.opts.Endpoint != "" {
		return fmt.Sprintf("s3://%s (endpoint %s)", b.name, b.opts.Endpoint)
	}
	return "s3://" + b.name
}

// Get opens an object. Its body resumes where a cut left it (see the
// package doc, "Retries").
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	var out *s3.GetObjectOutput
	err := b.retry(ctx, "get", key, func() (err error) {
		out, err = b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.name, Key: &key})
		return err
	})
	if err != nil {
		return nil, bucket.ObjectInfo{ServerTime: errorTime(err)}, translate("get", key, err)
	}
	info := bucket.ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         unquote(out.ETag),
		LastModified: aws.ToTime(out.LastModified),
		ServerTime:   responseTime(out.ResultMetadata),
	}
	body := bucket.ResumableBody(ctx, out.Body, info, func(ctx context.Context, off int64) (io.ReadCloser, error) {
		return b.getFrom(ctx, key, info.ETag, off)
	}, bucket.ResumeOptions{OnResume: func(off int64, tries int, cause error) {
		b.log.WithFields(logrus.Fields{"op": "get", "key": key, "offset": off, "size": info.Size, "attempt": tries}).
			WithError(cause).Warn("resumed a cut read from the byte it reached")
	}})
	return body, info, nil
}

// getFrom reopens the version etag of key from byte off on: a GET with
// Range and If-Match. The answer must carry the same ETag and start at
// off, else nothing of it is used: a store that ignores If-Match or Range
// must not splice another version or repeat bytes.
func (b *Bucket) getFrom(ctx context.Context, key, etag string, off int64) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: &b.name, Key: &key, Range: aws.String(fmt.Sprintf("bytes=%d-", off)), IfMatch: aws.String(quote(etag))}
	var out *s3.GetObjectOutput
	err := b.retry(ctx, "get", key, func() (err error) {
		out, err = b.client.GetObject(ctx, in)
		return err
	})
	if err != nil {
		return nil, translate("get", key, err)
	}
	if got := unquote(out.ETag); got != etag {
		out.Body.Close()
		return nil, fmt.Errorf("get %s from byte %d: %w: the store answered ETag %s for If-Match %s", key, off, bucket.ErrPreconditionFailed, got, etag)
	}
	if cr := aws.ToString(out.ContentRange); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", off)) {
		out.Body.Close()
		return nil, fmt.Errorf("get %s from byte %d: the store answered Content-Range %q: not resuming from it", key, off, cr)
	}
	return out.Body, nil
}

// Head reads an object's metadata.
func (b *Bucket) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	var out *s3.HeadObjectOutput
	err := b.retry(ctx, "head", key, func() (err error) {
		out, err = b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.name, Key: &key})
		return err
	})
	if err != nil {
		return bucket.ObjectInfo{ServerTime: errorTime(err)}, translate("head", key, err)
	}
	return bucket.ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         unquote(out.ETag),
		LastModified: aws.ToTime(out.LastModified),
		ServerTime:   responseTime(out.ResultMetadata),
	}, nil
}

// List lists one page with ListObjectsV2.
func (b *Bucket) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	in := &s3.ListObjectsV2Input{Bucket: &b.name, Prefix: &prefix}
	if opts.StartAfter != "" {
		in.StartAfter = &opts.StartAfter
	}
	if opts.Limit > 0 {
		in.MaxKeys = aws.Int32(int32(min(opts.Limit, 1000)))
	}
	var out *s3.ListObjectsV2Output
	err := b.retry(ctx, "list", prefix, func() (err error) {
		out, err = b.client.ListObjectsV2(ctx, in)
		return err
	})
	if err != nil {
		return bucket.ListPage{}, translate("list", prefix, err)
	}
	page := bucket.ListPage{Truncated: aws.ToBool(out.IsTruncated), Objects: make([]bucket.ObjectInfo, 0, len(out.Contents))}
	for _, o := range out.Contents {
		page.Objects = append(page.Objects, bucket.ObjectInfo{
			Key:          aws.ToString(o.Key),
			Size:         aws.ToInt64(o.Size),
			ETag:         unquote(o.ETag),
			LastModified: aws.ToTime(o.LastModified),
		})
	}
	return page, nil
}

// Delete removes an object; a missing one is no error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	err := b.retry(ctx, "delete", key, func() error {
		_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.name, Key: &key})
		return err
	})
	if err != nil && b.retained(ctx, key, err) {
		return fmt.Errorf("delete %s: %w: %w", key, bucket.ErrRetained, err)
	}
	if err = translate("delete", key, err); err != nil && !errors.Is(err, bucket.ErrNotFound) {
		return err
	}
	return nil
}

// retained says whether a failed delete was refused by Object Lock. Servers
// answer 403 AccessDenied for a locked object (AWS for a locked version;
// versitygw, whose buckets need no versioning, for the object) and some
// answer ObjectLocked or InvalidRequest. AccessDenied also means a missing
// permission, so it counts only when the message names the lock, or when
// the object's headers show a retain-until date after the server's time or
// a legal hold.
func (b *Bucket) retained(ctx context.Context, key string, err error) bool {
	code, _ := errorCode(err)
	var msg string
	var ae smithy.APIError
	if errors.As(err, &ae) {
		msg = strings.ToLower(ae.ErrorMessage())
	}
	switch code {
	case "ObjectLocked":
		return true
	case "AccessDenied", "InvalidRequest":
		if strings.Contains(msg, "object lock") || strings.Contains(msg, "retention") || strings.Contains(msg, "legal hold") {
			return true
		}
	}
	if code != "AccessDenied" {
		return false
	}
	out, herr := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.name, Key: &key})
	if herr != nil {
		return false
	}
	if out.ObjectLockLegalHoldStatus == types.ObjectLockLegalHoldStatusOn {
		return true
	}
	until := aws.ToTime(out.ObjectLockRetainUntilDate)
	now := responseTime(out.ResultMetadata)
	if now.IsZero() {
		now = time.Now()
	}
	return until.After(now)
}

// Put writes an object with PutObject. See the package doc for retries.
func (b *Bucket) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: IfNoneMatch and IfMatch are exclusive", key)
	}
	if size < 0 {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: negative size %d (use Upload for data of unknown size)", key, size)
	}
	rs, seekable := body.(io.ReadSeeker)
	if !seekable && size <= b.opts.PartSize {
		// Small enough to hold: then it can be retried.
		buf := make([]byte, size)
		if _, err := io.ReadFull(body, buf); err != nil {
			return bucket.ObjectInfo{}, fmt.Errorf("put %s: read body: %w", key, err)
		}
		rs, seekable = bytes.NewReader(buf), true
	}
	in := &s3.PutObjectInput{Bucket: &b.name, Key: &key, ContentLength: aws.Int64(size)}
	if opts.ContentType != "" {
		in.ContentType = &opts.ContentType
	}
	if opts.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	if opts.IfMatch != "" {
		in.IfMatch = aws.String(quote(opts.IfMatch))
	}
	if !opts.RetainUntil.IsZero() {
		in.ObjectLockMode = types.ObjectLockModeCompliance
		in.ObjectLockRetainUntilDate = aws.Time(opts.RetainUntil)
	}
	if !seekable {
		// A stream larger than a part: one attempt, the SDK cannot
		// rewind it either.
		in.Body = body
		out, err := b.client.PutObject(ctx, in, noSDKRetries)
		return b.putResult("put", key, size, opts, out, err)
	}
	start, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	// The ETag S3 gives these bytes, to recognise our own write after an
	// ambiguous failure.
	ownETag := func() (string, error) {
		h := md5.New()
		if _, err := rs.Seek(start, io.SeekStart); err != nil {
			return "", err
		}
		if _, err := io.CopyN(h, rs, size); err != nil {
			return "", err
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	var out *s3.PutObjectOutput
	write := func(retries func(*s3.Options)) error {
		if _, err := rs.Seek(start, io.SeekStart); err != nil {
			return backoff.Permanent(err)
		}
		in.Body = &seekableLimit{rs: rs, start: start, size: size}
		out, err = b.client.PutObject(ctx, in, retries)
		return err
	}
	if opts.IfNoneMatch || opts.IfMatch != "" {
		err = b.conditional(ctx, "put", key, func() error { return write(noSDKRetries) }, ownETag)
	} else {
		err = b.retry(ctx, "put", key, func() error { return write(func(*s3.Options) {}) })
	}
	return b.putResult("put", key, size, opts, out, err)
}

// putResult turns a PutObject's answer into ObjectInfo or a translated
// error. out is nil when the write was confirmed through a Head.
func (b *Bucket) putResult(op, key string, size int64, opts bucket.PutOptions, out *s3.PutObjectOutput, err error) (bucket.ObjectInfo, error) {
	var own *ownWrite
	switch {
	case errors.As(err, &own):
		return own.info, nil
	case err != nil:
		return bucket.ObjectInfo{ServerTime: errorTime(err)}, translateWrite(op, key, opts, err)
	}
	now := responseTime(out.ResultMetadata)
	return bucket.ObjectInfo{Key: key, Size: size, ETag: unquote(out.ETag), LastModified: now, ServerTime: now}, nil
}

// seekableLimit gives the SDK exactly size bytes from start of rs, and lets
// it rewind to start for its own retries and checksums.
type seekableLimit struct {
	rs    io.ReadSeeker
	start int64
	size  int64
	off   int64
}

func (s *seekableLimit) Read(p []byte) (int, error) {
	if s.off >= s.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), s.size-s.off)]
	n, err := s.rs.Read(p)
	s.off += int64(n)
	if err == io.EOF && s.off < s.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (s *seekableLimit) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = s.off + offset
	case io.SeekEnd:
		abs = s.size + offset
	}
	if abs < 0 || abs > s.size {
		return 0, fmt.Errorf("seek to %d outside 0..%d", abs, s.size)
	}
	if _, err := s.rs.Seek(s.start+abs, io.SeekStart); err != nil {
		return 0, err
	}
	s.off = abs
	return abs, nil
}

// ownWrite is how conditional reports that a write which failed with 412
// after an ambiguous attempt was found to be its own.
type ownWrite struct{ info bucket.ObjectInfo }

func (*ownWrite) Error() string { return "the write was our own" }

// conditional runs a conditional write without SDK retries, retrying
// transient failures itself. After an ambiguous failure, a 412 (or a
// NoSuchUpload from a repeated Complete) is checked against the object's
// ETag: when it equals ownETag(), the earlier attempt won and the result is
// an *ownWrite error carrying the object's info.
func (b *Bucket) conditional(ctx context.Context, op, key string, write func() error, ownETag func() (string, error)) error {
	ambiguous := false
	attempt := 0
	return backoff.Retry(func() error {
		attempt++
		err := write()
		if err == nil {
			return nil
		}
		code, status := errorCode(err)
		lostOrGone := isPrecondition(code, status) || code == "NoSuchUpload"
		if ambiguous && lostOrGone {
			info, herr := b.Head(ctx, key)
			want, eerr := ownETag()
			if herr == nil && eerr == nil && info.ETag == want {
				b.log.WithFields(logrus.Fields{"op": op, "key": key, "attempt": attempt}).
					Info("conditional write confirmed as our own after an ambiguous failure")
				info.LastModified = info.ServerTime
				return backoff.Permanent(&ownWrite{info: info})
			}
			return backoff.Permanent(err)
		}
		if !transient(err) {
			return backoff.Permanent(err)
		}
		ambiguous = ambiguous || !throttled(code)
		b.log.WithFields(logrus.Fields{"op": op, "key": key, "attempt": attempt}).WithError(err).Warn("retrying conditional write")
		return err
	}, newBackoff(ctx))
}

// retry repeats an operation that is safe to repeat while it fails with a
// transient error.
func (b *Bucket) retry(ctx context.Context, op, key string, fn func() error) error {
	attempt := 0
	return backoff.Retry(func() error {
		attempt++
		err := fn()
		if err == nil || !transient(err) {
			return backoff.Permanent(err)
		}
		b.log.WithFields(logrus.Fields{"op": op, "key": key, "attempt": attempt}).WithError(err).Warn("retrying")
		return err
	}, newBackoff(ctx))
}

func newBackoff(ctx context.Context) backoff.BackOff { return bucket.DefaultRetry().BackOff(ctx) }

func noSDKRetries(o *s3.Options) { o.Retryer = aws.NopRetryer{} }

var retryables = retry.IsErrorRetryables(retry.DefaultRetryables)

// transient says whether err may go away on its own: network errors,
// timeouts, 5xx (but 501) and throttling, as the SDK classifies them, and an answer
// whose body ended before its Content-Length (a cut listing or error
// document the SDK could not parse).
func transient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var attempts *retry.MaxAttemptsError
	if errors.As(err, &attempts) {
		err = attempts.Err
	}
	if retryables.IsErrorRetryable(err) == aws.TrueTernary {
		return true
	}
	// 501 Not Implemented is a refusal for good (Backblaze B2 answers it
	// to a conditional write), not a passing fault.
	_, status := errorCode(err)
	return status >= 500 && status != http.StatusNotImplemented
}

// throttled says whether code means the server refused the request without
// applying it.
func throttled(code string) bool {
	_, ok := retry.DefaultThrottleErrorCodes[code]
	return ok
}

// errorCode returns the S3 error code and the HTTP status of err, when it
// carries them.
func errorCode(err error) (code string, status int) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}

func isPrecondition(code string, status int) bool {
	return status == http.StatusPreconditionFailed || code == "PreconditionFailed" || code == "ConditionalRequestConflict"
}

func isNotFound(code string, status int) bool {
	switch code {
	case "NoSuchKey", "NotFound":
		return true
	case "NoSuchBucket", "NoSuchUpload":
		return false // a configuration error, or a vanished upload
	}
	return status == http.StatusNotFound
}

// translate wraps err with op and key, and with bucket.ErrNotFound or
// bucket.ErrPreconditionFailed when it means that; an error that may go
// away (after the retries gave up) is marked bucket.ErrTransient.
func translate(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if x := explain(err); x != nil {
		err = x
	}
	code, status := errorCode(err)
	switch {
	case isNotFound(code, status):
		return fmt.Errorf("%s %s: %w: %w", op, key, bucket.ErrNotFound, err)
	case isPrecondition(code, status):
		return fmt.Errorf("%s %s: %w: %w", op, key, bucket.ErrPreconditionFailed, err)
	case transient(err):
		return bucket.Transient(fmt.Errorf("%s %s: %w", op, key, err))
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// translateWrite is translate for writes: a missing key fails an If-Match
// write's condition (AWS answers 404 for it).
func translateWrite(op, key string, opts bucket.PutOptions, err error) error {
	if code, status := errorCode(err); opts.IfMatch != "" && isNotFound(code, status) {
		return fmt.Errorf("%s %s: %w: %w", op, key, bucket.ErrPreconditionFailed, err)
	}
	return translate(op, key, err)
}

// responseTime is the Date header of a successful response.
func responseTime(md middleware.Metadata) time.Time {
	if r, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok {
		return dateHeader(r.Header)
	}
	return time.Time{}
}

// errorTime is the Date header of a failed request's response, if any.
func errorTime(err error) time.Time {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return dateHeader(re.Response.Header)
	}
	return time.Time{}
}

func dateHeader(h http.Header) time.Time {
	t, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return time.Time{}
	}
	return t
}

func unquote(etag *string) string { return strings.Trim(aws.ToString(etag), `"`) }

func quote(etag string) string { return `"` + strings.Trim(etag, `"`) + `"` }
