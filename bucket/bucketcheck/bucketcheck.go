package bucketcheck

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
)

// Folder is where checks write, below the bucket view's prefix: each run
// in a folder of its own, Folder + <random> + "/".
const Folder = "check/"

// The clock-skew thresholds (see the package doc).
const (
	WarnSkew = 10 * time.Second
	MaxSkew  = time.Minute
)

// staleAfter is the age (by the bucket's clock) after which a check's
// folder is taken for the leftovers of a check that crashed.
const staleAfter = time.Hour

// The properties, in the order of a report.
const (
	CreateOnly        = "create-only"
	IfMatch           = "if-match"
	ConditionalUpload = "conditional-upload"
	PendingUploads    = "pending-uploads"
	ClockSkew         = "clock-skew"
	Checksums         = "checksums"
	Cleanup           = "cleanup"
)

// Status is a property's outcome.
type Status string

const (
	Pass Status = "pass"
	// Fail is a broken property; when the property is critical the
	// bucket is unsafe.
	Fail Status = "fail"
	// Warn is a problem capsule lives with (a leak, a skew below
	// MaxSkew), or a property that is not critical failing.
	Warn Status = "warn"
	// Skip is a property the store cannot be asked about.
	Skip Status = "skip"
	// Info is a finding that is neither good nor bad (checksums).
	Info Status = "info"
)

// Result is one property's outcome.
type Result struct {
	Property string `json:"property"`
	Status   Status `json:"status"`
	// Critical properties are those capsule's correctness rests on: when
	// one fails, the bucket is unsafe.
	Critical bool   `json:"critical"`
	Detail   string `json:"detail"`
}

// Report is the outcome of a check.
type Report struct {
	// Prefix is the folder the check wrote in (and removed), relative to
	// the bucket view it was given.
	Prefix string `json:"prefix"`
	// Safe is true when the check finished and no critical property
	// failed.
	Safe    bool     `json:"safe"`
	Results []Result `json:"results"`
	// ClockSkewSeconds is the bucket's clock minus this machine's, as
	// measured (positive: the bucket is ahead); absent when the store
	// reports no time.
	ClockSkewSeconds *float64 `json:"clockSkewSeconds,omitempty"`
	Seconds          float64  `json:"seconds"`
}

// Result returns the result of property p, if the check got to it.
func (r *Report) Result(p string) (Result, bool) {
	for _, res := range r.Results {
		if res.Property == p {
			return res, true
		}
	}
	return Result{}, false
}

// ErrUnsafe is what an *UnsafeError matches with errors.Is.
var ErrUnsafe = errors.New("unsafe bucket")

// UnsafeError names the critical properties a bucket failed.
type UnsafeError struct {
	Failed []Result
}

func (e *UnsafeError) Error() string {
	parts := make([]string, len(e.Failed))
	for i, r := range e.Failed {
		parts[i] = r.Detail
	}
	return "the bucket failed capsule's safety check: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrUnsafe) true.
func (e *UnsafeError) Is(target error) bool { return target == ErrUnsafe }

// Err is nil when no critical property failed, else an *UnsafeError that
// names each one.
func (r *Report) Err() error {
	var failed []Result
	for _, res := range r.Results {
		if res.Critical && res.Status == Fail {
			failed = append(failed, res)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &UnsafeError{Failed: failed}
}

// Options choose what a check does.
type Options struct {
	// Rounds of create-only races, of Writers writers each.
	Rounds, Writers int
	// UploadSize is the bytes written in each streaming upload. Beyond
	// one part (5 MiB by default on S3) the uploads are multipart, and
	// the check covers CompleteMultipartUpload's condition.
	UploadSize int64
	// PendingUploads adds the open-upload listing (with UploadSize
	// beyond one part on S3, else S3 has no upload open yet).
	PendingUploads bool
	// Checksums, when set, probes the store's checksum handling with an
	// object at key (under the check's folder) and removes it. An error
	// that is not transient becomes a warning.
	Checksums func(ctx context.Context, key string) (Result, error)
	// Now is this machine's clock; time.Now when nil.
	Now func() time.Time
}

// Startup is the safety-critical part, cheap enough for every worker's
// start: two rounds of eight create-only writers, the If-Match checks, two
// small create-only uploads and the clock.
func Startup() Options {
	return Options{Rounds: 2, Writers: 8, UploadSize: 4 << 10}
}

// Full is what "capsule bucket check" runs: ten rounds of races, uploads of
// 17 MiB (multipart on S3, whose first parts are 5 MiB), the open-upload
// listing.
func Full() Options {
	return Options{Rounds: 10, Writers: 8, UploadSize: 17 << 20, PendingUploads: true}
}

type checker struct {
	b   bucket.Bucket
	o   Options
	dir string

	mu      sync.Mutex
	written map[string]bool
	seq     int
	skew    skewMeter
}

// Run checks b (see the package doc) and returns what it found. The
// error is non-nil when the check could not finish; the report then holds
// the properties it got to. Whatever happens, Run removes what it wrote
// before it returns.
func Run(ctx context.Context, b bucket.Bucket, o Options) (*Report, error) {
	if o.Rounds <= 0 {
		o.Rounds = 1
	}
	if o.Writers < 2 {
		o.Writers = 2
	}
	if o.UploadSize <= 0 {
		o.UploadSize = 4 << 10
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	start := o.Now()
	c := &checker{b: b, o: o, dir: Folder + randomHex(8) + "/", written: map[string]bool{}}
	rep := &Report{Prefix: c.dir}
	err := c.run(ctx, rep)
	rep.Results = append(rep.Results, c.cleanup(ctx))
	if s, ok := c.skew.estimate(); ok {
		secs := s.Seconds()
		rep.ClockSkewSeconds = &secs
	}
	rep.Safe = err == nil && rep.Err() == nil
	rep.Seconds = o.Now().Sub(start).Seconds()
	return rep, err
}

func (c *checker) run(ctx context.Context, rep *Report) error {
	// Can we write at all? An error here is no finding about conditions.
	if _, err := c.put(ctx, c.dir+"probe", []byte("capsule bucket check\n"), bucket.PutOptions{}); err != nil {
		return fmt.Errorf("bucket check: write %s: %w", c.dir+"probe", err)
	}
	steps := []func(context.Context) (Result, error){c.createOnly, c.ifMatch, c.conditionalUpload}
	if c.o.PendingUploads {
		steps = append(steps, c.pendingUploads)
	}
	steps = append(steps, c.clockSkew)
	if c.o.Checksums != nil {
		steps = append(steps, c.checksums)
	}
	for _, step := range steps {
		r, err := step(ctx)
		if err != nil && r.Status == "" {
			r.Status, r.Detail = Skip, fmt.Sprintf("not finished: %v", err)
		}
		if r.Property != "" {
			rep.Results = append(rep.Results, r)
		}
		if err != nil {
			return fmt.Errorf("bucket check: %w", err)
		}
	}
	return nil
}

// abortive says whether err stops the check (the store is unreachable or
// flaky, or the caller gave up) rather than being a finding.
func abortive(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, bucket.ErrTransient) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// key returns a fresh key in the check's folder.
func (c *checker) key(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	k := fmt.Sprintf("%s%s-%d", c.dir, name, c.seq)
	c.written[k] = true
	return k
}

// put writes key and takes a clock sample from the answer.
func (c *checker) put(ctx context.Context, key string, data []byte, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	c.mu.Lock()
	c.written[key] = true
	c.mu.Unlock()
	before := c.o.Now()
	info, err := bucket.PutBytes(ctx, c.b, key, data, opts)
	if err == nil {
		c.skew.add(before, c.o.Now(), info.ServerTime)
	}
	return info, err
}

func body(what string, n int) []byte {
	return []byte(fmt.Sprintf(`{"check":%q,"n":%d,"token":%q}`, what, n, randomHex(8)))
}

func (c *checker) createOnly(ctx context.Context) (Result, error) {
	r := Result{Property: CreateOnly, Critical: true}
	fail := func(format string, args ...any) (Result, error) {
		r.Status, r.Detail = Fail, fmt.Sprintf(format, args...)
		return r, nil
	}
	n := c.o.Writers
	var last string
	inconclusive := 0
	for round := 1; round <= c.o.Rounds; round++ {
		key := c.key("race")
		bodies := make([][]byte, n)
		for i := range bodies {
			bodies[i] = body(key, i)
		}
		winners, errs := race(n, func(i int) error {
			_, err := bucket.PutBytes(ctx, c.b, key, bodies[i], bucket.PutOptions{IfNoneMatch: true})
			return err
		})
		for _, err := range errs {
			if abortive(ctx, err) {
				return r, fmt.Errorf("create-only race: %w", err)
			}
		}
		if len(errs) > 0 {
			return fail("create-only writes are refused (%d of %d writers in round %d): %v", len(errs), n, round, errs[0])
		}
		switch len(winners) {
		case 1:
		case 0:
			// Every writer was told it lost: after an ambiguous
			// failure the one that won may not have recognised its
			// write. Safe, but this round proves nothing.
			data, _, err := bucket.GetBytes(ctx, c.b, key)
			switch {
			case errors.Is(err, bucket.ErrNotFound):
				return fail("create-only writes fail on a new key (none of %d writers won in round %d, and nothing was written)", n, round)
			case err != nil:
				return r, fmt.Errorf("create-only race: read %s: %w", key, err)
			case !containsBody(bodies, data):
				return fail("a create-only key holds bytes none of its writers wrote (round %d)", round)
			}
			if inconclusive++; inconclusive > 3 {
				return r, fmt.Errorf("create-only race: in %d rounds no writer recognised its write as the winner", inconclusive)
			}
			round--
			continue
		default:
			return fail("create-only writes are not exclusive (%d of %d writers won in round %d)", len(winners), n, round)
		}
		data, _, err := bucket.GetBytes(ctx, c.b, key)
		if err != nil {
			return r, fmt.Errorf("create-only race: read %s: %w", key, err)
		}
		if !bytes.Equal(data, bodies[winners[0]]) {
			return fail("a create-only key holds other bytes than its one winner wrote (round %d)", round)
		}
		last = key
	}
	_, err := c.put(ctx, last, body(last, -1), bucket.PutOptions{IfNoneMatch: true})
	switch {
	case err == nil:
		return fail("a create-only write over an existing object succeeded")
	case errors.Is(err, bucket.ErrPreconditionFailed):
	case abortive(ctx, err):
		return r, err
	default:
		return fail("a create-only write over an existing object failed with %v, not a failed precondition", err)
	}
	r.Status = Pass
	r.Detail = fmt.Sprintf("%d rounds of %d writers: exactly one won each round; a create-only write over an existing object failed", c.o.Rounds, n)
	return r, nil
}

// race runs n writers that start together; write(i) returns nil when
// writer i won. It returns the winners and the errors other than a failed
// precondition.
func race(n int, write func(i int) error) ([]int, []error) {
	var (
		start   = make(chan struct{})
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []int
		errs    []error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := write(i)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, i)
			case !errors.Is(err, bucket.ErrPreconditionFailed):
				errs = append(errs, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return winners, errs
}

func containsBody(bodies [][]byte, data []byte) bool {
	for _, b := range bodies {
		if bytes.Equal(b, data) {
			return true
		}
	}
	return false
}

func (c *checker) ifMatch(ctx context.Context) (Result, error) {
	r := Result{Property: IfMatch, Critical: true}
	fail := func(format string, args ...any) (Result, error) {
		r.Status, r.Detail = Fail, fmt.Sprintf(format, args...)
		return r, nil
	}
	key := c.key("cas")
	first, err := c.put(ctx, key, body(key, 1), bucket.PutOptions{})
	if err != nil {
		return r, fmt.Errorf("if-match: write %s: %w", key, err)
	}
	want := body(key, 2)
	second, err := c.put(ctx, key, want, bucket.PutOptions{IfMatch: first.ETag})
	switch {
	case err == nil:
	case abortive(ctx, err):
		return r, err
	case errors.Is(err, bucket.ErrPreconditionFailed):
		return fail("an If-Match write with the current ETag failed its precondition")
	default:
		return fail("If-Match writes are refused: %v", err)
	}
	if second.ETag == first.ETag {
		return fail("two writes of different bytes got the same ETag %q: lease renewals could not be told apart", first.ETag)
	}
	_, err = c.put(ctx, key, body(key, 3), bucket.PutOptions{IfMatch: first.ETag})
	switch {
	case err == nil:
		return fail("an If-Match write with a stale ETag succeeded (compare-and-swap is not atomic: a worker would not notice it lost its lease)")
	case abortive(ctx, err):
		return r, err
	case !errors.Is(err, bucket.ErrPreconditionFailed):
		return fail("an If-Match write with a stale ETag failed with %v, not a failed precondition", err)
	}
	data, _, err := bucket.GetBytes(ctx, c.b, key)
	if err != nil {
		return r, fmt.Errorf("if-match: read %s: %w", key, err)
	}
	if !bytes.Equal(data, want) {
		return fail("after a failed If-Match write the object does not hold the bytes of the write that won")
	}
	missing := c.key("cas-missing")
	_, err = c.put(ctx, missing, body(missing, 1), bucket.PutOptions{IfMatch: first.ETag})
	switch {
	case err == nil:
		return fail("an If-Match write on a missing key succeeded")
	case abortive(ctx, err):
		return r, err
	case !errors.Is(err, bucket.ErrPreconditionFailed):
		return fail("an If-Match write on a missing key failed with %v, not a failed precondition", err)
	}
	r.Status = Pass
	r.Detail = "an If-Match write with the current ETag won; with a stale ETag, and on a missing key, it failed"
	return r, nil
}

// upload writes size random bytes through a streaming upload and commits
// it.
func (c *checker) upload(ctx context.Context, key string, size int64, opts bucket.PutOptions) (bucket.ObjectInfo, error) {
	u, err := c.b.Upload(ctx, key, opts)
	if err != nil {
		return bucket.ObjectInfo{}, err
	}
	if err := writeRandom(u, size); err != nil {
		_ = u.Abort()
		return bucket.ObjectInfo{}, err
	}
	before := c.o.Now()
	info, err := u.Commit()
	if err != nil {
		_ = u.Abort()
		return info, err
	}
	c.skew.add(before, c.o.Now(), info.ServerTime)
	return info, nil
}

func writeRandom(u bucket.Upload, size int64) error {
	buf := make([]byte, min(size, 1<<20))
	for size > 0 {
		chunk := buf[:min(int64(len(buf)), size)]
		rand.Read(chunk)
		if _, err := u.Write(chunk); err != nil {
			return err
		}
		size -= int64(len(chunk))
	}
	return nil
}

func (c *checker) conditionalUpload(ctx context.Context) (Result, error) {
	r := Result{Property: ConditionalUpload, Critical: true}
	fail := func(format string, args ...any) (Result, error) {
		r.Status, r.Detail = Fail, fmt.Sprintf(format, args...)
		return r, nil
	}
	size := c.o.UploadSize
	key := c.key("upload")
	first, err := c.upload(ctx, key, size, bucket.PutOptions{IfNoneMatch: true})
	switch {
	case err == nil:
	case abortive(ctx, err):
		return r, fmt.Errorf("conditional upload: %w", err)
	case errors.Is(err, bucket.ErrPreconditionFailed):
		return fail("a create-only streaming upload of a new key failed its precondition")
	default:
		return fail("create-only streaming uploads are refused: %v", err)
	}
	_, err = c.upload(ctx, key, size, bucket.PutOptions{IfNoneMatch: true})
	switch {
	case err == nil:
		return fail("a create-only streaming upload over an existing object succeeded (%s)", bucket.FormatSize(size))
	case abortive(ctx, err):
		return r, fmt.Errorf("conditional upload: %w", err)
	case !errors.Is(err, bucket.ErrPreconditionFailed):
		return fail("a create-only streaming upload over an existing object failed with %v, not a failed precondition", err)
	}
	info, err := c.b.Head(ctx, key)
	if err != nil {
		return r, fmt.Errorf("conditional upload: head %s: %w", key, err)
	}
	if info.ETag != first.ETag || info.Size != size {
		return fail("a create-only streaming upload that failed changed the existing object (ETag %s, %d bytes; was %s, %d bytes)", info.ETag, info.Size, first.ETag, size)
	}
	r.Status = Pass
	r.Detail = fmt.Sprintf("a create-only streaming upload of %s committed on a new key and failed on an existing one", bucket.FormatSize(size))
	return r, nil
}

func (c *checker) pendingUploads(ctx context.Context) (Result, error) {
	r := Result{Property: PendingUploads}
	ul, ok := c.b.(bucket.UploadLister)
	if !ok {
		r.Status, r.Detail = Skip, "the store keeps no open uploads to list (not a bucket.UploadLister)"
		return r, nil
	}
	folder := c.dir + "pending/"
	key := folder + "open"
	c.mu.Lock()
	c.written[key] = true
	c.mu.Unlock()
	u, err := c.b.Upload(ctx, key, bucket.PutOptions{})
	if err != nil {
		return r, fmt.Errorf("pending uploads: %w", err)
	}
	aborted := false
	defer func() {
		if !aborted {
			_ = u.Abort()
		}
	}()
	if err := writeRandom(u, c.o.UploadSize); err != nil {
		return r, fmt.Errorf("pending uploads: write %s: %w", key, err)
	}
	listed := func() (bool, int, error) {
		ups, err := ul.ListUploads(ctx, folder)
		found := false
		for _, up := range ups {
			found = found || up.Key == key
		}
		return found, len(ups), err
	}
	found, n, err := listed()
	if err != nil {
		if abortive(ctx, err) {
			return r, fmt.Errorf("pending uploads: %w", err)
		}
		r.Status, r.Detail = Warn, fmt.Sprintf("listing open uploads fails: %v: garbage collection cannot discard the uploads a crashed worker left open", err)
		return r, nil
	}
	if !found {
		r.Status = Warn
		r.Detail = fmt.Sprintf("an open upload (%s written) is not listed under its folder (%d listed): garbage collection cannot discard the uploads a crashed worker left open; expire them with a lifecycle rule", bucket.FormatSize(c.o.UploadSize), n)
		return r, nil
	}
	aborted = true
	if err := u.Abort(); err != nil {
		return r, fmt.Errorf("pending uploads: abort %s: %w", key, err)
	}
	if found, _, err = listed(); err != nil {
		return r, fmt.Errorf("pending uploads: %w", err)
	}
	if found {
		r.Status, r.Detail = Warn, "an aborted upload is still listed as open"
		return r, nil
	}
	r.Status = Pass
	r.Detail = fmt.Sprintf("an open upload (%s written) is listed under its folder, and no longer once aborted", bucket.FormatSize(c.o.UploadSize))
	return r, nil
}

func (c *checker) clockSkew(ctx context.Context) (Result, error) {
	r := Result{Property: ClockSkew, Critical: true}
	s, ok := c.skew.estimate()
	if !ok {
		r.Status, r.Detail = Skip, "the store reports no time"
		return r, nil
	}
	least := c.skew.least()
	var how string
	switch {
	case round(s) == 0:
		how = "the bucket's clock agrees with this machine's"
	case s > 0:
		how = fmt.Sprintf("the bucket's clock is %s ahead of this machine's", round(s))
	case s < 0:
		how = fmt.Sprintf("the bucket's clock is %s behind this machine's", round(-s))
	}
	how += fmt.Sprintf(" (±%s)", round(c.skew.uncertainty()))
	switch {
	case least > MaxSkew:
		r.Status = Fail
		r.Detail = how + fmt.Sprintf(": more than %s; fix this machine's time sync (NTP): leases follow the bucket's clock, but a backup whose times run more than 5m0s ahead of it is judged damaged", MaxSkew)
	case least > WarnSkew:
		r.Status = Warn
		r.Detail = how + fmt.Sprintf(": more than %s; leases follow the bucket's clock, but check this machine's time sync (NTP)", WarnSkew)
	default:
		r.Status, r.Detail = Pass, how
	}
	return r, nil
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

func (c *checker) checksums(ctx context.Context) (Result, error) {
	key := c.key("checksum")
	r, err := c.o.Checksums(ctx, key)
	r.Property = Checksums
	if err != nil {
		if abortive(ctx, err) {
			return r, fmt.Errorf("checksums: %w", err)
		}
		r.Status, r.Detail = Warn, fmt.Sprintf("the checksum probe failed: %v", err)
	}
	return r, nil
}

// cleanup removes what the check wrote, and the folders of earlier checks
// that crashed, with a context of its own: it runs also when ctx ended.
func (c *checker) cleanup(ctx context.Context) Result {
	r := Result{Property: Cleanup}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var errs []error
	c.mu.Lock()
	keys := make([]string, 0, len(c.written))
	for k := range c.written {
		keys = append(keys, k)
	}
	c.mu.Unlock()
	for _, k := range keys {
		if err := c.b.Delete(ctx, k); err != nil {
			errs = append(errs, err)
		}
	}
	// Whatever else is there (a write repeated under another key would
	// be a bug, but the folder is ours).
	errs = append(errs, bucket.Walk(ctx, c.b, c.dir, func(o bucket.ObjectInfo) error {
		return c.b.Delete(ctx, o.Key)
	}))
	if ul, ok := c.b.(bucket.UploadLister); ok {
		ups, err := ul.ListUploads(ctx, c.dir)
		errs = append(errs, err)
		for _, up := range ups {
			errs = append(errs, ul.AbortUpload(ctx, up.Key, up.UploadID))
		}
	}
	stale, err := c.sweep(ctx)
	errs = append(errs, err)
	page, err := c.b.List(ctx, c.dir, bucket.ListOptions{Limit: 10})
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil || len(page.Objects) > 0 {
		left := make([]string, len(page.Objects))
		for i, o := range page.Objects {
			left[i] = o.Key
		}
		r.Status = Warn
		r.Detail = fmt.Sprintf("could not remove everything under %s (left: %s): %v", c.dir, strings.Join(left, ", "), err)
		return r
	}
	r.Status = Pass
	r.Detail = fmt.Sprintf("removed the %d objects it wrote", len(keys))
	if stale > 0 {
		r.Detail += fmt.Sprintf(", and %d left by earlier checks", stale)
	}
	return r
}

// sweep removes what earlier checks left under Folder (a check that
// crashed): objects and open uploads older than staleAfter by the
// bucket's clock. It looks at no more than 1000 objects a time.
func (c *checker) sweep(ctx context.Context) (int, error) {
	now, ok := c.skew.serverNow(c.o.Now())
	if !ok {
		now = c.o.Now()
	}
	n, seen := 0, 0
	errStop := errors.New("enough")
	err := bucket.Walk(ctx, c.b, Folder, func(o bucket.ObjectInfo) error {
		if seen++; seen > 1000 {
			return errStop
		}
		if strings.HasPrefix(o.Key, c.dir) || now.Sub(o.LastModified) < staleAfter {
			return nil
		}
		if err := c.b.Delete(ctx, o.Key); err != nil {
			return err
		}
		n++
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	if ul, ok := c.b.(bucket.UploadLister); ok && err == nil {
		ups, lerr := ul.ListUploads(ctx, Folder)
		err = lerr
		for _, up := range ups {
			if strings.HasPrefix(up.Key, c.dir) || now.Sub(up.Initiated) < staleAfter {
				continue
			}
			if aerr := ul.AbortUpload(ctx, up.Key, up.UploadID); aerr != nil {
				err = aerr
				continue
			}
			n++
		}
	}
	return n, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
