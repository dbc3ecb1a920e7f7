package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// MinLength is the shortest lease: renewed every third of its length,
// judged with Last-Modified's one-second resolution.
const MinLength = 3 * time.Second

// DefaultRequestLength is the length of a worker's request lease unless
// configured, and the length a damaged request lease is judged by.
const DefaultRequestLength = 60 * time.Second

// ErrLost means the lease is no longer surely this holder's: another
// replica took it over, or it could not be renewed in time.
var ErrLost = errors.New("lease lost")

// Validate checks a lease length, naming the setting.
func Validate(setting string, length time.Duration) error {
	if p := Problem(length); p != "" {
		return fmt.Errorf("%s: %s", setting, p)
	}
	return nil
}

// Problem says what is wrong with a lease length, or "".
func Problem(length time.Duration) string {
	if length < MinLength {
		return fmt.Sprintf("must be at least %s (renewed every third; the bucket's clock has 1s resolution), got %s", MinLength, length)
	}
	return ""
}

// record is what the protocol reads back from any lease body.
type record struct {
	Holder         string `json:"holder"`
	Attempt        int    `json:"attempt"`
	Handbacks      int    `json:"handbacks"`
	DurationMillis int64  `json:"durationMillis"`
	Released       bool   `json:"released"`
}

// State is a lease as one read found it.
type State struct {
	Key string
	// Found is false when there is no lease object.
	Found bool
	// Damaged: not JSON, no positive length, or over the size limit.
	Damaged   bool
	Holder    string
	Attempt   int
	Handbacks int
	Released  bool
	// Length is the lease's own length, or the assumed one when damaged.
	Length time.Duration
	// Age is the bucket's time of the read minus the object's
	// Last-Modified; ServerTime is zero when the bucket gave none.
	Age        time.Duration
	ServerTime time.Time
	ETag       string
}

// Held says whether the lease protects its holder now: found, not
// released, and not older than its length by the bucket's clock. A lease
// read without a server time cannot be judged and counts as held.
func (s *State) Held() bool {
	return s.Found && !s.Released && (s.ServerTime.IsZero() || s.Age <= s.Length)
}

// Read reads the lease at key through the size limit. A lease over the
// limit or unreadable is Damaged and judged by the length damaged. A
// missing lease is a State with Found false.
func Read(ctx context.Context, b bucket.Reader, key string, limit int64, damaged time.Duration) (*State, error) {
	data, info, err := bucket.GetBytesLimit(ctx, b, key, limit)
	s := &State{Key: key}
	switch {
	case errors.Is(err, bucket.ErrNotFound):
		return s, nil
	case errors.Is(err, bucket.ErrTooLarge):
		data = nil
	case err != nil:
		return nil, fmt.Errorf("read lease %s: %w", key, err)
	}
	s.Found, s.ETag, s.ServerTime = true, info.ETag, info.ServerTime
	if !info.ServerTime.IsZero() {
		s.Age = info.ServerTime.Sub(info.LastModified)
	}
	var r record
	parsed := data != nil && json.Unmarshal(data, &r) == nil
	s.Holder, s.Attempt, s.Handbacks, s.Released = r.Holder, r.Attempt, r.Handbacks, r.Released
	s.Length = time.Duration(r.DurationMillis) * time.Millisecond
	if !parsed || s.Length <= 0 {
		s.Damaged, s.Length = true, damaged
	}
	return s, nil
}

// Write is what one write of a lease says; Claim.Encode makes its body.
type Write struct {
	Holder string
	// Token is fresh for every write, so every body (and ETag) differs.
	Token     string
	Attempt   int
	Handbacks int
	// Renewals counts this attempt's writes after the claim.
	Renewals   int
	Length     time.Duration
	AcquiredAt time.Time
	// At is the holder's clock at the write: informational only.
	At       time.Time
	Released bool
	// Data is what the caller passed to Renew or Release (progress, say).
	Data any
}

// lockBody is the body of a lock: a lease of a job rather than of a
// request (retention, garbage collection, maintenance).
type lockBody struct {
	APIVersion     string    `json:"apiVersion"`
	Kind           string    `json:"kind"` // "Lock"
	Purpose        string    `json:"purpose"`
	Holder         string    `json:"holder"`
	Token          string    `json:"token"`
	Attempt        int       `json:"attempt"`
	DurationMillis int64     `json:"durationMillis"`
	AcquiredAt     time.Time `json:"acquiredAt"`
	RenewedAt      time.Time `json:"renewedAt"`
	Released       bool      `json:"released,omitempty"`
}

// Lock is the Encode of a job's lock (kind "Lock"), naming its purpose.
func Lock(purpose string) func(Write) []byte {
	return func(w Write) []byte {
		data, _ := json.Marshal(lockBody{
			APIVersion: requests.APIVersion, Kind: "Lock", Purpose: purpose, Holder: w.Holder, Token: w.Token,
			Attempt: w.Attempt, DurationMillis: w.Length.Milliseconds(), AcquiredAt: w.AcquiredAt, RenewedAt: w.At,
			Released: w.Released,
		})
		return data
	}
}

// Claim says which lease to take and how to write it.
type Claim struct {
	Bucket bucket.Bucket
	Key    string
	// Holder names this replica in the lease.
	Holder string
	// Length is the lease's length; at least MinLength.
	Length time.Duration
	// Damaged is the length a damaged lease found here is judged by;
	// Length when zero.
	Damaged time.Duration
	// Limit is the size limit of the lease read; required.
	Limit int64
	// Encode makes the body of each write. Bodies must be JSON with the
	// fields holder, attempt, handbacks, durationMillis and released.
	Encode func(Write) []byte
	// Data is the first write's Data.
	Data any
	// Fresh says a listing just found no lease here: Acquire writes it
	// create-only at once without reading it first (one call, not two).
	// A 412 then means another replica created it since the listing: it
	// is held (Acquire returns a nil Lease and a nil State).
	Fresh bool
}

// Lease is a held lease.
type Lease struct {
	c         Claim
	attempt   int
	handbacks int
	acquired  time.Time

	mu        sync.Mutex
	renewals  int
	etag      string
	lastWrite time.Time // local (monotonic) time of the last confirmed write
	server    time.Time // the bucket's clock at that write
}

// Acquire takes the lease: creates it (attempt 1), or takes over one that
// is released or expired (attempt n+1). When another replica holds it, or
// won the race for it, Acquire returns a nil Lease and the State it read
// (nil after a lost race for a new lease).
func Acquire(ctx context.Context, c Claim) (*Lease, *State, error) {
	if c.Damaged == 0 {
		c.Damaged = c.Length
	}
	if err := Validate("lease", c.Length); err != nil {
		return nil, nil, err
	}
	if c.Fresh {
		l := &Lease{c: c, acquired: time.Now().UTC(), attempt: 1}
		err := l.put(ctx, bucket.PutOptions{IfNoneMatch: true}, false, c.Data, false)
		if errors.Is(err, bucket.ErrPreconditionFailed) {
			return nil, nil, nil // created since the listing: held
		}
		if err != nil {
			return nil, nil, fmt.Errorf("take lease %s: %w", c.Key, err)
		}
		return l, &State{Key: c.Key}, nil
	}
	st, err := Read(ctx, c.Bucket, c.Key, c.Limit, c.Damaged)
	if err != nil {
		return nil, nil, err
	}
	l := &Lease{c: c, acquired: time.Now().UTC(), attempt: 1}
	opts := bucket.PutOptions{IfNoneMatch: true}
	if st.Found {
		if st.ServerTime.IsZero() {
			return nil, st, fmt.Errorf("read lease %s: the bucket gave no server time", c.Key)
		}
		if st.Held() {
			return nil, st, nil
		}
		l.attempt, l.handbacks = st.Attempt+1, st.Handbacks
		if st.Released {
			l.handbacks++
		}
		opts = bucket.PutOptions{IfMatch: st.ETag}
	}
	err = l.put(ctx, opts, false, c.Data, false)
	if errors.Is(err, bucket.ErrPreconditionFailed) {
		if !st.Found {
			st = nil
		}
		return nil, st, nil // another replica was faster
	}
	if err != nil {
		return nil, st, fmt.Errorf("take lease %s: %w", c.Key, err)
	}
	return l, st, nil
}

// put writes the lease with opts, or with If-Match on the last write's
// ETag when opts has no condition.
func (l *Lease) put(ctx context.Context, opts bucket.PutOptions, released bool, data any, renewal bool) error {
	return l.putFor(ctx, opts, released, data, renewal, l.c.Length)
}

// putFor is put with the length the write states.
func (l *Lease) putFor(ctx context.Context, opts bucket.PutOptions, released bool, data any, renewal bool, length time.Duration) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !opts.IfNoneMatch && opts.IfMatch == "" {
		opts.IfMatch = l.etag
	}
	opts.ContentType = "application/json"
	renewals := l.renewals
	if renewal {
		renewals++
	}
	body := l.c.Encode(Write{
		Holder: l.c.Holder, Token: randomHex(16), Attempt: l.attempt, Handbacks: l.handbacks, Renewals: renewals,
		Length: length, AcquiredAt: l.acquired, At: time.Now().UTC(), Released: released, Data: data,
	})
	info, err := bucket.PutBytes(ctx, l.c.Bucket, l.c.Key, body, opts)
	if renewal {
		l.renewals = renewals // counted whether or not it landed
	}
	if err != nil {
		return err
	}
	if info.ServerTime.IsZero() {
		info.ServerTime = time.Now()
	}
	l.etag, l.lastWrite, l.server = info.ETag, time.Now(), info.ServerTime
	return nil
}

// Renew rewrites the lease with If-Match on the holder's last write,
// carrying data. It returns an error wrapping ErrLost when another
// replica took the lease over (a 412), and the bucket's error otherwise;
// then the lease is not confirmed. Renew is also the fence before a write
// that must not happen twice.
func (l *Lease) Renew(ctx context.Context, data any) error {
	err := l.put(ctx, bucket.PutOptions{}, false, data, true)
	if errors.Is(err, bucket.ErrPreconditionFailed) {
		return fmt.Errorf("%w: %s was taken over", ErrLost, l.c.Key)
	}
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l.c.Key, err)
	}
	return nil
}

// Release hands the lease back (marks it released) so that the next
// claim takes it at once. A lease lost meanwhile is left to its new
// holder: that is no error.
func (l *Lease) Release(ctx context.Context, data any) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.Length)
	defer cancel()
	err := l.put(ctx, bucket.PutOptions{}, true, data, true)
	if err != nil && !errors.Is(err, bucket.ErrPreconditionFailed) {
		return fmt.Errorf("release lease %s: %w", l.c.Key, err)
	}
	if err != nil {
		return fmt.Errorf("%w: %s was taken over", ErrLost, l.c.Key)
	}
	return nil
}

// Rest ends a periodic job's turn: it rewrites the lease (If-Match, not
// released) with length d, so that no replica takes it before d has passed
// by the bucket's clock, and nobody renews it meanwhile. The next claim
// after that is attempt n+1. A lease lost meanwhile is left alone (an
// error wrapping ErrLost).
func (l *Lease) Rest(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.c.Length)
	defer cancel()
	err := l.putFor(ctx, bucket.PutOptions{}, false, nil, true, d)
	if errors.Is(err, bucket.ErrPreconditionFailed) {
		return fmt.Errorf("%w: %s was taken over", ErrLost, l.c.Key)
	}
	if err != nil {
		return fmt.Errorf("rest lease %s: %w", l.c.Key, err)
	}
	return nil
}

// SinceWrite is how long ago (local monotonic time) the last write was
// confirmed.
func (l *Lease) SinceWrite() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.lastWrite)
}

// Valid says whether the lease is surely still this holder's: its last
// confirmed write is less than 5/6 of its length ago, so no other replica
// can judge it expired yet.
func (l *Lease) Valid() bool { return l.SinceWrite() < l.c.Length*5/6 }

// Now is the bucket's clock: its time at the last write plus the time
// passed here since.
func (l *Lease) Now() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.server.Add(time.Since(l.lastWrite))
}

// Attempt is this holder's attempt number: 1 for a new lease, n+1 for a
// takeover of attempt n.
func (l *Lease) Attempt() int { return l.attempt }

// Handbacks counts the earlier attempts that handed the lease back.
func (l *Lease) Handbacks() int { return l.handbacks }

// Length is the lease's length.
func (l *Lease) Length() time.Duration { return l.c.Length }

// Key is the lease object's key.
func (l *Lease) Key() string { return l.c.Key }

// Keeping tells Keep what to do around each renewal; every field is
// optional.
type Keeping struct {
	// Stop ends Keep (returning nil) when closed.
	Stop <-chan struct{}
	// Before runs before each renewal and gives the write's data; an
	// error ends Keep with that error, the lease left as it is.
	Before func(ctx context.Context) (any, error)
	// Renewed is told of each confirmed renewal.
	Renewed func()
	// Failed is told of a renewal that failed but may still be retried,
	// with the time since the last confirmed write.
	Failed func(err error, since time.Duration)
}

// Keep renews the lease every third of its length until ctx ends or
// k.Stop is closed (it returns nil), Before fails (its error), or the
// lease is lost (an error wrapping ErrLost): taken over, or not renewed
// for 5/6 of its length.
func (l *Lease) Keep(ctx context.Context, k Keeping) error {
	t := time.NewTicker(l.c.Length / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.Stop:
			return nil
		case <-t.C:
		}
		var data any
		if k.Before != nil {
			d, err := k.Before(ctx)
			if err != nil {
				return err
			}
			data = d
		}
		err := l.Renew(ctx, data)
		switch {
		case err == nil:
			if k.Renewed != nil {
				k.Renewed()
			}
		case errors.Is(err, ErrLost):
			return err
		case ctx.Err() != nil:
			return nil
		default:
			since := l.SinceWrite()
			if k.Failed != nil {
				k.Failed(err, since)
			}
			if since >= l.c.Length*5/6 {
				return fmt.Errorf("%w: could not renew %s for %s: %w", ErrLost, l.c.Key, since.Round(time.Millisecond), err)
			}
		}
	}
}

// Hold runs Keep for fn's duration: fn's context is canceled with the
// loss (an error wrapping ErrLost) when the lease is lost. Hold returns
// fn's error, with the loss added when fn's error does not say it
// already. The caller releases the lease.
func (l *Lease) Hold(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := l.Keep(ctx, Keeping{Stop: stop}); err != nil {
			cancel(err)
		}
	}()
	err := fn(ctx)
	close(stop)
	<-done
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(err, cause) {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
