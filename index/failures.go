package index

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/requests"
)

// Failure is a backup request that ended without a backup (failed,
// canceled or rejected), as its result records it. A failed backup has
// no index: its result is the only trace it leaves.
type Failure struct {
	// ID is the request's id (a backup's id is its request's).
	ID      string          `json:"id"`
	Cluster string          `json:"cluster"`
	Source  string          `json:"source"`
	Status  requests.Status `json:"status"`
	// Error is the first line of the result's error, clipped to
	// MaxFailureError bytes.
	Error     string    `json:"error"`
	Attempts  int       `json:"attempts,omitempty"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	// FinishedAt is when it ended: the result's finishedAt, or the
	// bucket's clock when the result was written if that is earlier.
	FinishedAt time.Time `json:"finishedAt"`
}

// DefaultResultWindow is how many of the newest results a failure listing
// reads when FailureReader.Window is zero.
const DefaultResultWindow = 1000

// MaxFailureError bounds a Failure's Error.
const MaxFailureError = 300

// FailureReader lists the failed, canceled and rejected backups among
// the newest results in the bucket.
//
// Results are never listed per cluster or source (they live flat under
// results/, one per request ever made), so the cost is bounded by a
// window: each List lists the keys under results/ (one LIST call per
// 1,000 results), takes the Window newest by the bucket's clock (their
// LastModified), and reads those it has not read before: a result is
// written once, so what a reader read is remembered by key and ETag, for
// the keys of the last window only. A failure older than the window is
// not listed. Each result is read through MaxObject, the control-object
// limit; a larger one, one that cannot be parsed, or one whose id is not
// its key's is skipped.
//
// A FailureReader is safe for concurrent use.
type FailureReader struct {
	// Window is how many of the newest results are read
	// (DefaultResultWindow when zero).
	Window int
	// MaxObject is the size limit of a result
	// (requests.DefaultMaxControlObject when zero).
	MaxObject int64

	mu   sync.Mutex
	seen map[string]seenResult // by key
}

type seenResult struct {
	etag    string
	failure *Failure // nil: not a failed backup
}

// FailureFilter narrows a failure listing. Empty fields match
// everything; Statuses empty means failed, canceled and rejected.
type FailureFilter struct {
	Cluster  string
	Source   string
	Statuses []requests.Status
}

func (f FailureFilter) match(x *Failure) bool {
	return (f.Cluster == "" || x.Cluster == f.Cluster) &&
		(f.Source == "" || x.Source == f.Source) &&
		(len(f.Statuses) == 0 || slices.Contains(f.Statuses, x.Status))
}

// IsFailure reports whether s is a status a Failure can have.
func IsFailure(s requests.Status) bool {
	return s == requests.StatusFailed || s == requests.StatusCanceled || s == requests.StatusRejected
}

// Failures lists, with a reader of its own (no memory across calls), the
// failures that match f among the newest DefaultResultWindow results.
func Failures(ctx context.Context, b bucket.Reader, f FailureFilter, maxObject int64) ([]Failure, error) {
	r := &FailureReader{MaxObject: maxObject}
	return r.List(ctx, b, f)
}

// List returns the failures that match f among the window's results,
// newest first (by FinishedAt, then id). Errors are the bucket's own
// from listing results/; a result that cannot be read is skipped.
func (r *FailureReader) List(ctx context.Context, b bucket.Reader, f FailureFilter) ([]Failure, error) {
	window := r.Window
	if window <= 0 {
		window = DefaultResultWindow
	}
	limit := r.MaxObject
	if limit <= 0 {
		limit = requests.DefaultMaxControlObject
	}
	var objs []bucket.ObjectInfo
	err := bucket.Walk(ctx, b, requests.ResultsPrefix, func(o bucket.ObjectInfo) error {
		if _, ok := requests.IDFromKey(requests.ResultsPrefix, o.Key); ok {
			objs = append(objs, o)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(objs, func(x, y bucket.ObjectInfo) int {
		if c := y.LastModified.Compare(x.LastModified); c != 0 {
			return c
		}
		return strings.Compare(y.Key, x.Key)
	})
	objs = objs[:min(len(objs), window)]

	r.mu.Lock()
	known := r.seen
	r.mu.Unlock()
	got := make([]seenResult, len(objs))
	errs := make([]error, len(objs))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, o := range objs {
		if s, ok := known[o.Key]; ok && s.etag == o.ETag {
			got[i] = s
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			got[i], errs[i] = readFailure(ctx, b, o, limit)
		}()
	}
	wg.Wait()
	next := make(map[string]seenResult, len(objs))
	var out []Failure
	for i, o := range objs {
		if errs[i] != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue // a transient error: read it again next time
		}
		next[o.Key] = got[i]
		if x := got[i].failure; x != nil && f.match(x) {
			out = append(out, *x)
		}
	}
	r.mu.Lock()
	r.seen = next
	r.mu.Unlock()
	slices.SortFunc(out, func(x, y Failure) int {
		if c := y.FinishedAt.Compare(x.FinishedAt); c != 0 {
			return c
		}
		return cmp.Compare(y.ID, x.ID)
	})
	return out, nil
}

// readFailure reads one result and returns it as a Failure when it is a
// believable failed backup. Objects that are gone, too large or not a
// result capsule wrote are remembered as not failures; other errors are
// returned.
func readFailure(ctx context.Context, b bucket.Reader, o bucket.ObjectInfo, limit int64) (seenResult, error) {
	s := seenResult{etag: o.ETag}
	data, info, err := bucket.GetBytesLimit(ctx, b, o.Key, limit)
	if errors.Is(err, bucket.ErrNotFound) || errors.Is(err, bucket.ErrTooLarge) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	var res requests.Result
	if json.Unmarshal(data, &res) != nil {
		return s, nil
	}
	id, _ := requests.IDFromKey(requests.ResultsPrefix, o.Key)
	if res.APIVersion != requests.APIVersion || res.Kind != "Result" || res.ID != id ||
		res.RequestKind != requests.KindBackup || !IsFailure(res.Status) ||
		requests.ValidateName(res.Cluster) != nil || requests.ValidateName(res.Source) != nil {
		return s, nil
	}
	written := info.LastModified
	if written.IsZero() {
		written = o.LastModified
	}
	finished := res.FinishedAt
	if finished.IsZero() || (!written.IsZero() && finished.After(written.Add(MaxClockSkew))) {
		// Times are judged by the bucket's clock: a result dated ahead
		// of its write is not the newest failure.
		finished = written
	}
	started := res.StartedAt
	if started.After(finished) {
		started = time.Time{}
	}
	s.failure = &Failure{
		ID: res.ID, Cluster: res.Cluster, Source: res.Source, Status: res.Status,
		Error: FirstLine(res.Error), Attempts: res.Attempts, StartedAt: started.UTC(), FinishedAt: finished.UTC(),
	}
	return s, nil
}

// FirstLine is the first non-empty line of msg, trimmed and clipped to
// MaxFailureError bytes (on a rune boundary, with "…" when clipped).
func FirstLine(msg string) string {
	msg = strings.TrimLeft(msg, " \t\r\n")
	line, _, _ := strings.Cut(msg, "\n")
	line = strings.TrimSpace(line)
	if len(line) <= MaxFailureError {
		return line
	}
	cut := MaxFailureError
	for cut > 0 && !utf8.RuneStart(line[cut]) {
		cut--
	}
	return line[:cut] + "…"
}
