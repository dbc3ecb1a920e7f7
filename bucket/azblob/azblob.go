package azblob

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
)

const (
	// DefaultBlockSize is the size of the blocks a streaming upload
	// stages: with Azure's 50,000 blocks, blobs up to 390 GiB.
	DefaultBlockSize = 8 << 20
	// DefaultConcurrency is how many blocks are in flight at once: one,
	// while the next fills, so an upload holds at most two blocks
	// (16 MiB), within the worker's memory budget (issue 20) as S3's two
	// 5 MiB parts are.
	DefaultConcurrency = 1
	// maxBlocks is Azure's limit of committed blocks per blob.
	maxBlocks = 50000
	// maxBlockSize is Azure's largest block.
	maxBlockSize = 4000 << 20
	// maxPutBlob is the largest body Put sends in one Put Blob; larger
	// ones are staged in blocks (Azure takes up to 5000 MiB in one
	// request, but a failed try would send it all again).
	maxPutBlob = 256 << 20
	// tokenKey is the metadata key of a conditional write's random token,
	// by which a write whose answer was lost is recognised as our own.
	tokenKey = "capsulewrite"
)

// Options configure a Bucket. Exactly one credential is used: the
// connection string, else the account key, else the SAS token, else
// TokenCredential.
type Options struct {
	// Container is the container's name. Required.
	Container string
	// ServiceURL is the blob service's base URL:
	// https://ACCOUNT.blob.core.windows.net/ on Azure,
	// http://127.0.0.1:10000/ACCOUNT on Azurite. Required unless a
	// ConnectionString names it.
	ServiceURL string
	// Account is the storage account's name, for AccountKey.
	Account string
	// ConnectionString is a storage connection string
	// (AccountName=…;AccountKey=…;BlobEndpoint=…, or with a
	// SharedAccessSignature).
	ConnectionString string
	// AccountKey is the account's shared key (base64), with Account.
	AccountKey string
	// SASToken is a shared access signature (the query string, with or
	// without its leading "?") that grants access to the container.
	SASToken string
	// TokenCredential is a Microsoft Entra credential, such as
	// azidentity's DefaultAzureCredential (workload identity in a
	// cluster).
	TokenCredential azcore.TokenCredential
	// BlockSize of streaming uploads; DefaultBlockSize when zero.
	BlockSize int64
	// Concurrency is the number of blocks in flight; DefaultConcurrency
	// when zero.
	Concurrency int
	// Log receives retries and cleanup failures; nothing when nil.
	Log logrus.FieldLogger
	// Transport sends the HTTP requests; http.DefaultClient's when nil.
	// Tests put faults between the bucket and the server with it.
	Transport policy.Transporter
}

// Bucket is an Azure Blob Storage container.
type Bucket struct {
	c    *container.Client
	opts Options
	log  logrus.FieldLogger
	// cred names the credential in use, for String.
	cred string
}

var _ bucket.Bucket = (*Bucket)(nil)

// New configures a client for o.Container. It does not contact the
// service.
func New(o Options) (*Bucket, error) {
	if o.Container == "" {
		return nil, errors.New("azblob bucket: no container name")
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < 1 || o.BlockSize > maxBlockSize {
		return nil, fmt.Errorf("azblob bucket %s: block size %d is outside 1..%d", o.Container, o.BlockSize, int64(maxBlockSize))
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		o.Log = l
	}
	co := &container.ClientOptions{ClientOptions: policy.ClientOptions{
		// No SDK retries: the bucket repeats what is safe to repeat
		// itself (see the package doc), with bucket.DefaultRetry.
		Retry:     policy.RetryOptions{MaxRetries: -1},
		Transport: o.Transport,
	}}
	b := &Bucket{opts: o}
	var err error
	switch {
	case o.ConnectionString != "":
		b.cred = "connection string"
		b.c, err = container.NewClientFromConnectionString(o.ConnectionString, o.Container, co)
	case o.AccountKey != "":
		if o.Account == "" {
			return nil, fmt.Errorf("azblob bucket %s: an account key needs the account's name", o.Container)
		}
		var cred *container.SharedKeyCredential
		if cred, err = container.NewSharedKeyCredential(o.Account, o.AccountKey); err != nil {
			// The SDK's message does not quote the key.
			return nil, fmt.Errorf("azblob bucket %s: account key of %s: %w", o.Container, o.Account, err)
		}
		b.cred = "account key"
		var u string
		if u, err = containerURL(o); err == nil {
			b.c, err = container.NewClientWithSharedKeyCredential(u, cred, co)
		}
	case o.SASToken != "":
		b.cred = "SAS token"
		var u string
		if u, err = containerURL(o); err == nil {
			b.c, err = container.NewClientWithNoCredential(u+"?"+strings.TrimPrefix(o.SASToken, "?"), co)
		}
	case o.TokenCredential != nil:
		b.cred = "Microsoft Entra token"
		var u string
		if u, err = containerURL(o); err == nil {
			b.c, err = container.NewClient(u, o.TokenCredential, co)
		}
	default:
		return nil, fmt.Errorf("azblob bucket %s: no credential", o.Container)
	}
	if err != nil {
		return nil, fmt.Errorf("azblob bucket %s: %w", o.Container, redactErr(err))
	}
	b.log = o.Log.WithField("bucket", b.String())
	return b, nil
}

// containerURL is o.ServiceURL with the container appended.
func containerURL(o Options) (string, error) {
	u, err := url.Parse(o.ServiceURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("service url %q: want http(s)://HOST[/ACCOUNT]", o.ServiceURL)
	}
	if u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("service url %s: credentials and queries do not belong in it", u.Redacted())
	}
	return strings.TrimSuffix(u.String(), "/") + "/" + url.PathEscape(o.Container), nil
}

// Client is the SDK's container client, for what the bucket interface
// does not cover.
func (b *Bucket) Client() *container.Client { return b.c }

// String names the container, its service and the kind of credential,
// never a secret.
func (b *Bucket) String() string {
	u, err := url.Parse(b.c.URL())
	if err != nil {
		return "azblob container " + b.opts.Container
	}
	u.RawQuery = "" // a SAS
	return fmt.Sprintf("azblob container %s (%s)", u.String(), b.cred)
}

func (b *Bucket) blob(key string) *blob.Client           { return b.c.NewBlobClient(key) }
func (b *Bucket) blockBlob(key string) *blockblob.Client { return b.c.NewBlockBlobClient(key) }

// Get opens an object. Its body resumes where a cut left it (see the
// package doc, "Retries").
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	var out blob.DownloadStreamResponse
	err := b.retry(ctx, "get", key, func() (err error) {
		out, err = b.blob(key).DownloadStream(ctx, nil)
		return err
	})
	if err != nil {
		return nil, bucket.ObjectInfo{ServerTime: errorTime(err)}, translate("get", key, err)
	}
	info := bucket.ObjectInfo{
		Key:          key,
		Size:         deref(out.ContentLength),
		ETag:         unquote(out.ETag),
		LastModified: deref(out.LastModified),
		ServerTime:   deref(out.Date),
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
// x-ms-range and If-Match. The answer must carry the same ETag and start at
// off, else nothing of it is used.
func (b *Bucket) getFrom(ctx context.Context, key, etag string, off int64) (io.ReadCloser, error) {
	opts := &blob.DownloadStreamOptions{
		Range:            blob.HTTPRange{Offset: off},
		AccessConditions: ifMatch(etag),
	}
	var out blob.DownloadStreamResponse
	err := b.retry(ctx, "get", key, func() (err error) {
		out, err = b.blob(key).DownloadStream(ctx, opts)
		return err
	})
	if err != nil {
		return nil, translateWrite("get", key, bucket.PutOptions{IfMatch: etag}, err)
	}
	if got := unquote(out.ETag); got != etag {
		out.Body.Close()
		return nil, fmt.Errorf("get %s from byte %d: %w: the store answered ETag %s for If-Match %s", key, off, bucket.ErrPreconditionFailed, got, etag)
	}
	if cr := deref(out.ContentRange); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", off)) {
		out.Body.Close()
		return nil, fmt.Errorf("get %s from byte %d: the store answered Content-Range %q: not resuming from it", key, off, cr)
	}
	return out.Body, nil
}

// Head reads an object's metadata.
func (b *Bucket) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	info, _, err := b.head(ctx, key)
	return info, err
}

// head is Head that also returns the blob's properties.
func (b *Bucket) head(ctx context.Context, key string) (bucket.ObjectInfo, blob.GetPropertiesResponse, error) {
	var out blob.GetPropertiesResponse
	err := b.retry(ctx, "head", key, func() (err error) {
		out, err = b.blob(key).GetProperties(ctx, nil)
		return err
	})
	if err != nil {
		return bucket.ObjectInfo{ServerTime: errorTime(err)}, out, translate("head", key, err)
	}
	return bucket.ObjectInfo{
		Key:          key,
		Size:         deref(out.ContentLength),
		ETag:         unquote(out.ETag),
		LastModified: deref(out.LastModified),
		ServerTime:   deref(out.Date),
	}, out, nil
}

// Delete removes an object; a missing one is no error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	err := b.retry(ctx, "delete", key, func() error {
		_, err := b.blob(key).Delete(ctx, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
		return err
	})
	if retained(err) {
		return fmt.Errorf("delete %s: %w: %w", key, bucket.ErrRetained, redactErr(err))
	}
	if err = translate("delete", key, err); err != nil && !errors.Is(err, bucket.ErrNotFound) {
		return err
	}
	return nil
}

// retained says whether a failed delete was refused by an immutability
// policy or a legal hold (409 BlobImmutableDueToPolicy, or a code of that
// family).
func retained(err error) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	c := strings.ToLower(re.ErrorCode)
	return strings.Contains(c, "immutab") || strings.Contains(c, "legalhold")
}

// Put writes an object: one Put Blob when it is small enough, staged
// blocks otherwise. See the package doc for retries and conditions.
func (b *Bucket) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: IfNoneMatch and IfMatch are exclusive", key)
	}
	if size < 0 {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: negative size %d (use Upload for data of unknown size)", key, size)
	}
	rs, seekable := body.(io.ReadSeeker)
	if !seekable && size <= b.opts.BlockSize {
		// Small enough to hold: then it can be retried.
		buf := make([]byte, size)
		if _, err := io.ReadFull(body, buf); err != nil {
			return bucket.ObjectInfo{}, fmt.Errorf("put %s: read body: %w", key, err)
		}
		rs, seekable = bytes.NewReader(buf), true
	}
	if !seekable || size > maxPutBlob {
		// Too large for one request: staged blocks, committed with the
		// same conditions.
		u := b.newUpload(ctx, key, opts)
		n, err := io.Copy(u, io.LimitReader(body, size))
		if err == nil && n != size {
			err = fmt.Errorf("put %s: body ended after %d of %d bytes", key, n, size)
		}
		if err != nil {
			u.Abort()
			return bucket.ObjectInfo{}, err
		}
		return u.Commit()
	}
	start, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	sec := &section{rs: rs, start: start, size: size}
	h := md5.New()
	if _, err := io.Copy(h, sec); err != nil {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: read body: %w", key, err)
	}
	uo := &blockblob.UploadOptions{
		TransactionalValidation: blob.TransferValidationTypeMD5(h.Sum(nil)),
		AccessConditions:        conditions(opts),
		HTTPHeaders:             headers(opts),
	}
	setRetention(&uo.ImmutabilityPolicyMode, &uo.ImmutabilityPolicyExpiryTime, opts)
	var token string
	if opts.IfNoneMatch || opts.IfMatch != "" {
		token = newToken()
		uo.Metadata = map[string]*string{tokenKey: &token}
	}
	var out blockblob.UploadResponse
	write := func() error {
		if _, err := sec.Seek(0, io.SeekStart); err != nil {
			return backoff.Permanent(err)
		}
		out, err = b.blockBlob(key).Upload(ctx, sec, uo)
		return err
	}
	if token != "" {
		err = b.conditional(ctx, "put", key, write, token)
	} else {
		err = b.retry(ctx, "put", key, write)
	}
	var own *ownWrite
	switch {
	case errors.As(err, &own):
		return b.checkRetention(ctx, key, opts, own.info)
	case err != nil:
		return bucket.ObjectInfo{ServerTime: errorTime(err)}, translateWrite("put", key, opts, err)
	}
	now := deref(out.Date)
	info := bucket.ObjectInfo{Key: key, Size: size, ETag: unquote(out.ETag), LastModified: deref(out.LastModified), ServerTime: now}
	return b.checkRetention(ctx, key, opts, info)
}

// checkRetention makes sure a write that asked for RetainUntil got an
// immutability policy that lasts at least as long: a store that ignored the
// request (Azurite does; so does Azure on a container without version-level
// immutability support, should it accept the headers) would otherwise leave
// the object unprotected in silence. Such a write is undone (deleted, on
// its own ETag) and fails.
func (b *Bucket) checkRetention(ctx context.Context, key string, opts bucket.PutOptions, info bucket.ObjectInfo) (bucket.ObjectInfo, error) {
	if opts.RetainUntil.IsZero() {
		return info, nil
	}
	_, props, err := b.head(ctx, key)
	if err != nil {
		return info, fmt.Errorf("put %s: check its retention: %w", key, err)
	}
	until := deref(props.ImmutabilityPolicyExpiresOn)
	if !until.IsZero() && !until.Before(opts.RetainUntil.Truncate(time.Second)) && unquote(props.ETag) == info.ETag {
		return info, nil
	}
	_, derr := b.blob(key).Delete(ctx, &blob.DeleteOptions{AccessConditions: ifMatch(info.ETag)})
	if derr != nil && !bloberror.HasCode(derr, bloberror.BlobNotFound, bloberror.ConditionNotMet) {
		b.log.WithField("key", key).WithError(redactErr(derr)).Warn("could not remove a blob written without its retention")
	}
	return bucket.ObjectInfo{}, fmt.Errorf("put %s: the store did not keep it immutable until %s (its immutability policy ends %v): "+
		"Azure needs a container with version-level immutability support for retainFor, and Azurite has none; the blob was removed",
		key, opts.RetainUntil.UTC().Format(time.RFC3339), nilTime(props.ImmutabilityPolicyExpiresOn))
}

func nilTime(t *time.Time) string {
	if t == nil {
		return "never: it has none"
	}
	return t.UTC().Format(time.RFC3339)
}

// setRetention asks for a locked immutability policy until
// opts.RetainUntil (the equivalent of S3 Object Lock's compliance mode:
// it can be extended, never shortened or removed).
func setRetention(mode **blob.ImmutabilityPolicySetting, until **time.Time, opts bucket.PutOptions) {
	if opts.RetainUntil.IsZero() {
		return
	}
	*mode = to.Ptr(blob.ImmutabilityPolicySettingLocked)
	*until = to.Ptr(opts.RetainUntil.UTC())
}

func headers(opts bucket.PutOptions) *blob.HTTPHeaders {
	if opts.ContentType == "" {
		return nil
	}
	return &blob.HTTPHeaders{BlobContentType: &opts.ContentType}
}

// conditions are the access conditions of a write: If-None-Match: * for
// create-only, If-Match: "<etag>" otherwise.
func conditions(opts bucket.PutOptions) *blob.AccessConditions {
	switch {
	case opts.IfNoneMatch:
		return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
	case opts.IfMatch != "":
		return ifMatch(opts.IfMatch)
	}
	return nil
}

func ifMatch(etag string) *blob.AccessConditions {
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: to.Ptr(azcore.ETag(quote(etag)))}}
}

// section gives the SDK exactly size bytes from start of rs, seekable
// (the SDK measures a body by seeking it) and with a Close that does
// not close rs.
type section struct {
	rs    io.ReadSeeker
	start int64
	size  int64
	off   int64
}

func (s *section) Read(p []byte) (int, error) {
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

func (s *section) Seek(offset int64, whence int) (int64, error) {
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

func (s *section) Close() error { return nil }

// ownWrite is how conditional reports that a write which lost its
// condition after an ambiguous attempt was found to be its own.
type ownWrite struct{ info bucket.ObjectInfo }

func (*ownWrite) Error() string { return "the write was our own" }

// conditional runs a conditional write, retrying transient failures. After
// an ambiguous failure (the request may have been applied), a lost
// condition is checked against the blob's metadata: when it carries this
// write's token, the earlier attempt won, and the result is an *ownWrite
// error carrying the blob's info.
func (b *Bucket) conditional(ctx context.Context, op, key string, write func() error, token string) error {
	ambiguous := false
	attempt := 0
	return backoff.Retry(func() error {
		attempt++
		err := write()
		if err == nil {
			return nil
		}
		if ambiguous && lostCondition(err) {
			info, props, herr := b.head(ctx, key)
			if herr == nil && metadata(props.Metadata, tokenKey) == token {
				b.log.WithFields(logrus.Fields{"op": op, "key": key, "attempt": attempt}).
					Info("conditional write confirmed as our own after an ambiguous failure")
				return backoff.Permanent(&ownWrite{info: info})
			}
			return backoff.Permanent(err)
		}
		if !transient(err) {
			return backoff.Permanent(err)
		}
		ambiguous = ambiguous || !throttled(err)
		b.log.WithFields(logrus.Fields{"op": op, "key": key, "attempt": attempt}).WithError(redactErr(err)).Warn("retrying conditional write")
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
		b.log.WithFields(logrus.Fields{"op": op, "key": key, "attempt": attempt}).WithError(redactErr(err)).Warn("retrying")
		return err
	}, newBackoff(ctx))
}

func newBackoff(ctx context.Context) backoff.BackOff { return bucket.DefaultRetry().BackOff(ctx) }

func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// metadata looks a metadata value up by key, whatever case the service
// and the HTTP stack gave the key.
func metadata(md map[string]*string, key string) string {
	for k, v := range md {
		if strings.EqualFold(k, key) {
			return deref(v)
		}
	}
	return ""
}

// status is the HTTP status of an error answer, 0 for other errors.
func status(err error) (int, string) {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode, re.ErrorCode
	}
	return 0, ""
}

// transient says whether err may go away on its own: a failure of the
// connection (no answer, or an answer cut short), a timeout, throttling or
// a 5xx answer.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if st, _ := status(err); st != 0 {
		return st == http.StatusRequestTimeout || st == http.StatusTooManyRequests || st >= 500
	}
	var ue *url.Error
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.As(err, &ue) || errors.As(err, &ne)
}

// throttled says whether the service refused the request without applying
// it.
func throttled(err error) bool {
	st, code := status(err)
	return st == http.StatusTooManyRequests || code == string(bloberror.ServerBusy)
}

// lostCondition says whether err is a write's condition failing: 412
// ConditionNotMet for If-Match (and, on Azure, for If-None-Match in some
// operations), 409 BlobAlreadyExists for If-None-Match: *.
func lostCondition(err error) bool {
	st, code := status(err)
	return st == http.StatusPreconditionFailed || code == string(bloberror.BlobAlreadyExists)
}

func isNotFound(err error) bool {
	st, code := status(err)
	switch code {
	case string(bloberror.ContainerNotFound):
		return false // a configuration error
	case string(bloberror.BlobNotFound):
		return true
	}
	return st == http.StatusNotFound
}

// translate wraps err with op and key, and with bucket.ErrNotFound or
// bucket.ErrPreconditionFailed when it means that; an error that may go
// away (after the retries gave up) is marked bucket.ErrTransient. URLs in
// transport errors lose their query (a SAS).
func translate(op, key string, err error) error {
	if err == nil {
		return nil
	}
	red := redactErr(err)
	switch {
	case isNotFound(err):
		return fmt.Errorf("%s %s: %w: %w", op, key, bucket.ErrNotFound, red)
	case lostCondition(err):
		return fmt.Errorf("%s %s: %w: %w", op, key, bucket.ErrPreconditionFailed, red)
	case transient(err):
		return bucket.Transient(fmt.Errorf("%s %s: %w", op, key, red))
	}
	return fmt.Errorf("%s %s: %w", op, key, red)
}

// translateWrite is translate for writes: a missing blob fails an If-Match
// write's condition.
func translateWrite(op, key string, opts bucket.PutOptions, err error) error {
	if opts.IfMatch != "" && isNotFound(err) {
		return fmt.Errorf("%s %s: %w: %w", op, key, bucket.ErrPreconditionFailed, redactErr(err))
	}
	return translate(op, key, err)
}

// redactErr drops the query (a SAS token's signature) from the URL of a
// transport error; the SDK's answer errors name no query already.
func redactErr(err error) error {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) {
		return err
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil || u.RawQuery == "" {
		return err
	}
	u.RawQuery = ""
	return &redactedError{msg: strings.ReplaceAll(err.Error(), ue.URL, u.String()), err: ue.Err}
}

// redactedError keeps the chain below a url.Error (for errors.Is) but
// not its URL.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// errorTime is the Date header of a failed request's answer, if any.
func errorTime(err error) time.Time {
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.RawResponse != nil {
		t, err := http.ParseTime(re.RawResponse.Header.Get("Date"))
		if err == nil {
			return t
		}
	}
	return time.Time{}
}

func unquote(etag *azcore.ETag) string {
	if etag == nil {
		return ""
	}
	return strings.Trim(string(*etag), `"`)
}

func quote(etag string) string { return `"` + strings.Trim(etag, `"`) + `"` }

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
