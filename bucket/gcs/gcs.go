package gcs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"github.com/sirupsen/logrus"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/api/option/internaloption"
	htransport "google.golang.org/api/transport/http"

	"github.com/cnvrg/capsule/bucket"
)

const (
	// DefaultChunkSize is the size of the chunks of a resumable upload:
	// the Writer buffers one chunk, and a chunk is what a retry sends
	// again. 8 MiB is the size Google's documentation recommends at the
	// least, and keeps the worker within its memory budget (issue 20).
	DefaultChunkSize = 8 << 20
	// MinChunkSize is GCS's chunk granularity: chunk sizes are multiples
	// of it.
	MinChunkSize = 256 << 10
	// tokenKey is the custom metadata key of the random token that every
	// write carries, so that a write whose answer was lost can be
	// recognised as our own.
	tokenKey = "capsule-write"
	// maxPage is the most objects GCS returns in one listing page.
	maxPage = 1000
)

// Options configure a Bucket.
type Options struct {
	// Bucket is the bucket's name. Required.
	Bucket string
	// Endpoint is the base URL of a GCS JSON API other than Google's (an
	// emulator such as fake-gcs-server: http://127.0.0.1:4443). Requests
	// to it are not authenticated. Empty means Google's, with
	// CredentialsJSON or Application Default Credentials, or
	// $STORAGE_EMULATOR_HOST when that is set.
	Endpoint string
	// CredentialsJSON is a service account key (the JSON file Google
	// issues for a service account), used instead of Application Default
	// Credentials. It must pass CheckCredentialsJSON; with Endpoint it is
	// checked too, but not sent (emulators take no credentials).
	CredentialsJSON []byte
	// ChunkSize of resumable uploads; DefaultChunkSize when zero, rounded
	// up to a multiple of MinChunkSize.
	ChunkSize int
	// Log receives retries and own-write confirmations; nothing when nil.
	Log logrus.FieldLogger
}

// Bucket is a Google Cloud Storage bucket.
type Bucket struct {
	client   *storage.Client
	bkt      *storage.BucketHandle
	name     string
	endpoint string
	chunk    int
	log      logrus.FieldLogger
}

var _ bucket.Bucket = (*Bucket)(nil)

// New configures a client for o.Bucket. It does not contact the server;
// without an endpoint it finds Application Default Credentials
// (GOOGLE_APPLICATION_CREDENTIALS, gcloud's, or the metadata server of
// GCE and GKE workload identity) and fails when there are none.
func New(ctx context.Context, o Options) (*Bucket, error) {
	return newBucket(ctx, o, nil)
}

// newBucket is New with wrap, when set, put around the HTTP transport
// (tests inject network faults there).
func newBucket(ctx context.Context, o Options, wrap func(http.RoundTripper) http.RoundTripper) (*Bucket, error) {
	if o.Bucket == "" {
		return nil, errors.New("gcs bucket: no bucket name")
	}
	if o.ChunkSize < 0 {
		return nil, fmt.Errorf("gcs bucket %s: negative chunk size %d", o.Bucket, o.ChunkSize)
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	o.ChunkSize = roundUp(o.ChunkSize, MinChunkSize)
	if o.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		o.Log = l
	}
	if o.CredentialsJSON != nil {
		if err := CheckCredentialsJSON(o.CredentialsJSON); err != nil {
			return nil, fmt.Errorf("gcs bucket %s: credentials: %w", o.Bucket, err)
		}
	}
	endpoint := o.Endpoint
	if endpoint == "" {
		if h := os.Getenv("STORAGE_EMULATOR_HOST"); h != "" {
			endpoint = h
			if !strings.Contains(h, "://") {
				endpoint = "http://" + h
			}
		}
	}
	var copts []option.ClientOption
	if endpoint != "" {
		copts = []option.ClientOption{
			option.WithEndpoint(strings.TrimSuffix(endpoint, "/") + "/storage/v1/"),
			option.WithoutAuthentication(),
		}
	} else {
		// What storage.NewClient itself passes for Google's endpoint.
		copts = []option.ClientOption{
			option.WithScopes(storage.ScopeFullControl, "https://www.googleapis.com/auth/cloud-platform"),
			internaloption.WithDefaultEndpointTemplate("https://storage.UNIVERSE_DOMAIN/storage/v1/"),
			internaloption.WithDefaultMTLSEndpoint("https://storage.mtls.googleapis.com/storage/v1/"),
			internaloption.WithDefaultUniverseDomain("googleapis.com"),
			internaloption.EnableNewAuthLibrary(),
		}
		if o.CredentialsJSON != nil {
			// Only a service account key: the type is checked again
			// where the key is read (CheckCredentialsJSON did first).
			copts = append(copts, option.WithAuthCredentialsJSON(option.ServiceAccount, o.CredentialsJSON))
		}
	}
	// The client's own HTTP client (with the credentials), inside one
	// that records each response's Date: lease expiry is judged by the
	// store's clock, and the storage library does not return it.
	hc, _, err := htransport.NewClient(ctx, copts...)
	if err != nil {
		if endpoint == "" && o.CredentialsJSON != nil {
			// The key passed CheckCredentialsJSON; the library's messages
			// name fields, not values.
			return nil, fmt.Errorf("gcs bucket %s: service account key: %w", o.Bucket, err)
		}
		if endpoint == "" {
			return nil, fmt.Errorf("gcs bucket %s: no Google credentials (Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS naming a key file, gcloud auth application-default login, or workload identity): %w", o.Bucket, err)
		}
		return nil, fmt.Errorf("gcs bucket %s: http client: %w", o.Bucket, err)
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	if wrap != nil {
		rt = wrap(rt)
	}
	hc = &http.Client{Transport: &clockTransport{base: rt}, Jar: hc.Jar, Timeout: hc.Timeout}
	client, err := storage.NewClient(ctx, append(copts, option.WithHTTPClient(hc))...)
	if err != nil {
		return nil, fmt.Errorf("gcs bucket %s: %w", o.Bucket, err)
	}
	b := &Bucket{client: client, name: o.Bucket, endpoint: o.Endpoint, chunk: o.ChunkSize, log: o.Log.WithField("bucket", o.Bucket)}
	p := bucket.DefaultRetry()
	// Every call is retried: capsule's unconditional writes and deletes
	// are safe to repeat, and a conditional write that a repeat finds
	// lost is checked against its token (see conditional).
	client.SetRetry(
		storage.WithPolicy(storage.RetryAlways),
		storage.WithBackoff(gax.Backoff{Initial: p.Initial, Max: p.Max, Multiplier: 2}),
		storage.WithMaxAttempts(p.Retries+1),
		storage.WithMaxRetryDuration(p.MaxElapsed),
		storage.WithErrorFuncWithContext(b.shouldRetry),
	)
	// After SetRetry: a handle copies the client's retry configuration.
	b.bkt = client.Bucket(o.Bucket)
	return b, nil
}

// Client is the storage client, for what the bucket interface does not
// cover.
func (b *Bucket) Client() *storage.Client { return b.client }

func (b *Bucket) String() string {
	if b.endpoint != "" {
		return fmt.Sprintf("gs://%s (endpoint %s)", b.name, b.endpoint)
	}
	return "gs://" + b.name
}

// Close releases the client's resources.
func (b *Bucket) Close() error { return b.client.Close() }

func (b *Bucket) obj(key string) *storage.ObjectHandle {
	// Bytes as stored: an object someone wrote with Content-Encoding:
	// gzip is not decompressed, so sizes and checksums hold.
	return b.bkt.Object(key).ReadCompressed(true)
}

func (b *Bucket) shouldRetry(err error, rc *storage.RetryContext) bool {
	if !storage.ShouldRetry(err) {
		return false
	}
	l := b.log
	if rc != nil { // the client's uploads pass none
		l = l.WithFields(logrus.Fields{"op": rc.Operation, "key": rc.Object, "attempt": rc.Attempt})
	}
	l.WithError(err).Warn("retrying")
	return true
}

// Get opens an object. Its body resumes where a cut left it, from the same
// generation only (see the package doc).
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, bucket.ObjectInfo, error) {
	cctx, clk := withClock(ctx)
	r, err := b.obj(key).NewReader(cctx)
	if err != nil {
		return nil, bucket.ObjectInfo{ServerTime: clk.now()}, translate("get", key, err)
	}
	gen := r.Attrs.Generation
	if gen <= 0 {
		r.Close()
		return nil, bucket.ObjectInfo{ServerTime: clk.now()}, fmt.Errorf("get %s: the store named no generation of the object", key)
	}
	info := bucket.ObjectInfo{
		Key:          key,
		Size:         r.Attrs.Size,
		ETag:         strconv.FormatInt(gen, 10),
		LastModified: r.Attrs.LastModified,
		ServerTime:   clk.now(),
	}
	body := bucket.ResumableBody(ctx, r, info, func(ctx context.Context, off int64) (io.ReadCloser, error) {
		return b.getFrom(ctx, key, gen, off)
	}, bucket.ResumeOptions{OnResume: func(off int64, tries int, cause error) {
		b.log.WithFields(logrus.Fields{"op": "get", "key": key, "offset": off, "size": info.Size, "attempt": tries}).
			WithError(cause).Warn("resumed a cut read from the byte it reached")
	}})
	return body, info, nil
}

// getFrom reopens generation gen of key from byte off on. A generation
// that is gone (the object was replaced or deleted) is ErrNotFound; an
// answer of another generation or offset is not used.
func (b *Bucket) getFrom(ctx context.Context, key string, gen, off int64) (io.ReadCloser, error) {
	r, err := b.obj(key).Generation(gen).NewRangeReader(ctx, off, -1)
	if err != nil {
		return nil, translate("get", key, err)
	}
	if r.Attrs.Generation != gen || r.Attrs.StartOffset != off {
		r.Close()
		return nil, fmt.Errorf("get %s from byte %d of generation %d: the store answered generation %d from byte %d: not resuming from it",
			key, off, gen, r.Attrs.Generation, r.Attrs.StartOffset)
	}
	return r, nil
}

// Head reads an object's metadata.
func (b *Bucket) Head(ctx context.Context, key string) (bucket.ObjectInfo, error) {
	cctx, clk := withClock(ctx)
	a, err := b.obj(key).Attrs(cctx)
	if err != nil {
		return bucket.ObjectInfo{ServerTime: clk.now()}, translate("head", key, err)
	}
	info := objectInfo(a)
	info.ServerTime = clk.now()
	return info, nil
}

func objectInfo(a *storage.ObjectAttrs) bucket.ObjectInfo {
	return bucket.ObjectInfo{Key: a.Name, Size: a.Size, ETag: strconv.FormatInt(a.Generation, 10), LastModified: a.Updated}
}

// List lists one page. GCS lists names in byte order, as capsule wants;
// its StartOffset is inclusive, so StartAfter itself is skipped.
func (b *Bucket) List(ctx context.Context, prefix string, opts bucket.ListOptions) (bucket.ListPage, error) {
	limit := opts.Limit
	if limit <= 0 || limit > maxPage {
		limit = maxPage
	}
	q := &storage.Query{Prefix: prefix, StartOffset: opts.StartAfter}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Generation", "Updated"}); err != nil {
		return bucket.ListPage{}, fmt.Errorf("list %s: %w", prefix, err)
	}
	it := b.bkt.Objects(ctx, q)
	// One more than the page, and StartAfter itself: then one request
	// also says whether more follow.
	it.PageInfo().MaxSize = min(limit+2, maxPage)
	page := bucket.ListPage{Objects: make([]bucket.ObjectInfo, 0, min(limit, 64))}
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return page, nil
		}
		if err != nil {
			return bucket.ListPage{}, translate("list", prefix, err)
		}
		if opts.StartAfter != "" && a.Name <= opts.StartAfter {
			continue
		}
		if len(page.Objects) == limit {
			page.Truncated = true
			return page, nil
		}
		page.Objects = append(page.Objects, objectInfo(a))
	}
}

// Delete removes an object; a missing one is no error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	err := b.bkt.Object(key).Delete(ctx)
	switch {
	case err == nil || errors.Is(err, storage.ErrObjectNotExist):
		return nil
	case b.retained(ctx, key, err):
		return fmt.Errorf("delete %s: %w: %w", key, bucket.ErrRetained, err)
	}
	if err = translate("delete", key, err); errors.Is(err, bucket.ErrNotFound) {
		return nil
	}
	return err
}

// retained says whether a failed delete was refused because the object is
// retained: GCS answers 403 for an object under an object retention
// (retain-until) date, a bucket retention policy or a hold, with a message
// that names it. A 403 whose message does not (a missing permission) counts
// only when the object's metadata shows a retention after the server's
// time or a hold.
func (b *Bucket) retained(ctx context.Context, key string, err error) bool {
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != http.StatusForbidden {
		return false
	}
	msg := strings.ToLower(ge.Message)
	if strings.Contains(msg, "retention") || strings.Contains(msg, "hold") {
		return true
	}
	cctx, clk := withClock(ctx)
	a, aerr := b.obj(key).Attrs(cctx)
	if aerr != nil {
		return false
	}
	now := clk.now()
	if now.IsZero() {
		now = time.Now()
	}
	if a.TemporaryHold || a.EventBasedHold {
		return true
	}
	if a.Retention != nil && a.Retention.RetainUntil.After(now) {
		return true
	}
	return a.RetentionExpirationTime.After(now)
}

// Put writes an object through a Writer: one request when it is smaller
// than a chunk, else a resumable upload. See the package doc for
// conditions and retries.
func (b *Bucket) Put(ctx context.Context, key string, body io.Reader, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	if size < 0 {
		return bucket.ObjectInfo{}, fmt.Errorf("put %s: negative size %d (use Upload for data of unknown size)", key, size)
	}
	// A chunk one byte larger than the body: the Writer sees its end in
	// the first chunk and sends it in one request that it can repeat.
	chunk := b.chunk
	if size < int64(b.chunk) {
		chunk = roundUp(int(size)+1, MinChunkSize)
	}
	w, err := b.startWrite(ctx, "put", key, opts, chunk)
	if err != nil {
		return bucket.ObjectInfo{}, err
	}
	n, err := io.Copy(w.w, io.LimitReader(body, size))
	if err == nil && n < size {
		err = fmt.Errorf("body ended after %d of %d bytes", n, size)
	}
	if err != nil {
		w.abort(err)
		return bucket.ObjectInfo{ServerTime: w.clk.now()}, fmt.Errorf("put %s: %w", key, w.writeError(err))
	}
	return w.commit()
}

// write is one object being written through a storage.Writer.
type write struct {
	b      *Bucket
	op     string
	key    string
	opts   bucket.PutOptions
	token  string // this write's token, in the object's metadata
	ctx    context.Context
	cancel context.CancelCauseFunc
	clk    *clock
	w      *storage.Writer
}

// startWrite prepares a write of key: the condition goes on the object
// handle (GCS checks it when the object is finalized), a fresh token and
// the retention into the object's metadata. It sends nothing yet.
func (b *Bucket) startWrite(ctx context.Context, op, key string, opts bucket.PutOptions, chunk int) (*write, error) {
	var conds *storage.Conditions
	switch {
	case opts.IfNoneMatch && opts.IfMatch != "":
		return nil, fmt.Errorf("%s %s: IfNoneMatch and IfMatch are exclusive", op, key)
	case opts.IfNoneMatch:
		conds = &storage.Conditions{DoesNotExist: true}
	case opts.IfMatch != "":
		gen, err := strconv.ParseInt(opts.IfMatch, 10, 64)
		if err != nil || gen <= 0 {
			// No object of this store has it (and generation 0 would
			// mean "does not exist").
			return nil, fmt.Errorf("%s %s: %w: ETag %q is no generation of a GCS object", op, key, bucket.ErrPreconditionFailed, opts.IfMatch)
		}
		conds = &storage.Conditions{GenerationMatch: gen}
	}
	oh := b.bkt.Object(key)
	if conds != nil {
		oh = oh.If(*conds)
	}
	wctx, cancel := context.WithCancelCause(ctx)
	wctx, clk := withClock(wctx)
	w := &write{b: b, op: op, key: key, opts: opts, ctx: wctx, cancel: cancel, clk: clk, w: oh.NewWriter(wctx)}
	w.w.ChunkSize = chunk
	w.w.ChunkRetryDeadline = bucket.DefaultRetry().MaxElapsed
	w.w.ContentType = opts.ContentType
	w.w.ForceEmptyContentType = opts.ContentType == ""
	w.token = randomHex(16)
	w.w.Metadata = map[string]string{tokenKey: w.token}
	if !opts.RetainUntil.IsZero() {
		w.w.Retention = &storage.ObjectRetention{Mode: "Locked", RetainUntil: opts.RetainUntil}
	}
	return w, nil
}

// abort stops the write: nothing becomes visible. The resumable session,
// if one was opened, is left to expire (GCS drops it after a week).
func (w *write) abort(cause error) {
	w.cancel(cause)
	w.w.Close()
}

// writeError explains a failed Write: the writer's context's cause when
// it ended, else err translated.
func (w *write) writeError(err error) error {
	if cause := context.Cause(w.ctx); cause != nil {
		return cause
	}
	return translate(w.op, w.key, err)
}

// commit finalizes the object. A write that failed in a way a lost answer
// explains is checked against its token: when the object carries it, the
// write was applied and is ours.
func (w *write) commit() (bucket.ObjectInfo, error) {
	defer w.cancel(nil)
	if err := context.Cause(w.ctx); err != nil {
		w.abort(err)
		return bucket.ObjectInfo{}, fmt.Errorf("%s %s: %w", w.op, w.key, err)
	}
	if err := w.w.Close(); err != nil {
		if isPrecondition(err) || isNotFound(err) || storage.ShouldRetry(err) {
			// Perhaps applied before its answer was lost: a repeat
			// then fails its condition (412), finds the finalized
			// upload session gone (fake-gcs-server's 404), or the
			// retries ran out.
			if info, ok := w.own(err); ok {
				return info, nil
			}
		}
		return bucket.ObjectInfo{ServerTime: w.clk.now()}, translateWrite(w.op, w.key, w.opts, err)
	}
	a := w.w.Attrs()
	info := objectInfo(a)
	info.Key = w.key
	info.ServerTime = w.clk.now()
	if err := w.checkRetention(a); err != nil {
		return bucket.ObjectInfo{ServerTime: info.ServerTime}, err
	}
	return info, nil
}

// own reads the object and says whether it is the one this write made;
// cause is how the write failed.
func (w *write) own(cause error) (bucket.ObjectInfo, bool) {
	ctx, clk := withClock(context.WithoutCancel(w.ctx))
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	a, err := w.b.obj(w.key).Attrs(ctx)
	if err != nil || a.Metadata[tokenKey] != w.token {
		return bucket.ObjectInfo{}, false
	}
	w.b.log.WithFields(logrus.Fields{"op": w.op, "key": w.key}).WithError(cause).Info("write confirmed as our own after its answer was lost")
	info := objectInfo(a)
	info.ServerTime = clk.now()
	return info, true
}

// checkRetention fails a write that asked for a retain-until date the
// store did not keep (a bucket without object retention may drop it), and
// removes that generation: capsule must not believe it retained.
func (w *write) checkRetention(a *storage.ObjectAttrs) error {
	want := w.opts.RetainUntil
	if want.IsZero() {
		return nil
	}
	if r := a.Retention; r != nil && strings.EqualFold(r.Mode, "Locked") && !r.RetainUntil.Before(want.Add(-time.Second)) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), time.Minute)
	defer cancel()
	derr := w.b.bkt.Object(w.key).Generation(a.Generation).Delete(ctx)
	err := fmt.Errorf("%s %s: gcs bucket %s did not keep the retain-until date %s: enable object retention on the bucket (or write without a retain-until date)",
		w.op, w.key, w.b.name, want.UTC().Format(time.RFC3339))
	if derr != nil && !errors.Is(derr, storage.ErrObjectNotExist) {
		return fmt.Errorf("%w; removing the unretained object failed too: %v", err, derr)
	}
	return err
}

// isPrecondition says whether err is GCS's 412: a generation condition
// did not hold.
func isPrecondition(err error) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == http.StatusPreconditionFailed
}

func isNotFound(err error) bool {
	if errors.Is(err, storage.ErrObjectNotExist) {
		return true
	}
	if errors.Is(err, storage.ErrBucketNotExist) {
		return false // a configuration error
	}
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == http.StatusNotFound && !strings.Contains(strings.ToLower(ge.Message), "bucket")
}

// translate wraps err with op and key, and with bucket.ErrNotFound or
// bucket.ErrPreconditionFailed when it means that; an error that may go
// away (after the client's retries gave up) is marked
// bucket.ErrTransient.
func translate(op, key string, err error) error {
	switch {
	case err == nil:
		return nil
	case isNotFound(err):
		return fmt.Errorf("%s %s: %w: %w", op, key, bucket.ErrNotFound, err)
	case isPrecondition(err):
		return fmt.Errorf("%s %s: %w: %w", op, key, bucket.ErrPreconditionFailed, err)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s %s: %w", op, key, err)
	case storage.ShouldRetry(err):
		return bucket.Transient(fmt.Errorf("%s %s: %w", op, key, err))
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// translateWrite is translate for writes: an If-Match write on a missing
// key lost its condition, whatever the store answered.
func translateWrite(op, key string, opts bucket.PutOptions, err error) error {
	if opts.IfMatch != "" && isNotFound(err) {
		return fmt.Errorf("%s %s: %w: %w", op, key, bucket.ErrPreconditionFailed, err)
	}
	return translate(op, key, err)
}

// clock records the Date of the responses to one call's requests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

type clockKey struct{}

func withClock(ctx context.Context) (context.Context, *clock) {
	c := &clock{}
	return context.WithValue(ctx, clockKey{}, c), c
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// clockTransport hands the Date header of every response to the clock in
// its request's context, if any.
type clockTransport struct{ base http.RoundTripper }

func (t *clockTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if resp != nil {
		if c, ok := r.Context().Value(clockKey{}).(*clock); ok {
			if d, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil {
				c.mu.Lock()
				c.t = d
				c.mu.Unlock()
			}
		}
	}
	return resp, err
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
