package client

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/lease"
	"github.com/cnvrg/capsule/requests"
)

// SeenWithin is how far back Explain looks for traces of workers: leases
// written and results finished in the last hour.
const SeenWithin = time.Hour

// maxResultsRead caps how many recent results Explain reads for their
// worker.
const maxResultsRead = 20

// Pending explains a request that no worker has claimed: how long it has
// waited, and which workers left traces in the bucket lately. Workers
// write nothing that says "I am here"; their leases (held now) and
// results (finished lately) name them, so the explanation costs two
// listings and a few small reads, and no change to the bucket's layout.
type Pending struct {
	ID string `json:"id"`
	// Waiting is how long the request object has been in the bucket, by
	// the bucket's clock.
	Waiting time.Duration `json:"waitingNanos"`
	// Workers are those seen within SeenWithin, most recent first.
	Workers []WorkerSeen `json:"workers"`
}

// WorkerSeen is a worker that left a trace in the bucket.
type WorkerSeen struct {
	Name string `json:"name"`
	// Running counts the requests it holds a lease on now.
	Running int `json:"running"`
	// LastResult is the newest result it wrote within SeenWithin, and
	// Ago how long before the bucket's now.
	LastResult string        `json:"lastResult,omitempty"`
	Ago        time.Duration `json:"agoNanos"`
}

// Explain looks for why request id waits: it must be pending. It reads
// the request's age, the leases held now and the newest results (at most
// maxResultsRead of them) for the workers they name.
func Explain(ctx context.Context, b bucket.Reader, id string, opts ...Option) (*Pending, error) {
	o := apply(opts)
	info, err := b.Head(ctx, requests.RequestKey(id))
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", id, err)
	}
	now := info.ServerTime
	if now.IsZero() {
		now = time.Now()
	}
	p := &Pending{ID: id, Waiting: max(0, now.Sub(info.LastModified))}
	seen := map[string]*WorkerSeen{}
	worker := func(name string) *WorkerSeen {
		if w, ok := seen[name]; ok {
			return w
		}
		w := &WorkerSeen{Name: name, Ago: -1}
		seen[name] = w
		return w
	}
	var leases []bucket.ObjectInfo
	if err := bucket.Walk(ctx, b, requests.LeasesPrefix, func(obj bucket.ObjectInfo) error {
		if now.Sub(obj.LastModified) <= SeenWithin {
			leases = append(leases, obj)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	for _, obj := range newest(leases, maxResultsRead) {
		// Held as the workers judge it (the lease package).
		if st, err := lease.Read(ctx, b, obj.Key, o.maxObject, lease.DefaultRequestLength); err == nil && st.Holder != "" && !st.Damaged && st.Held() {
			worker(st.Holder).Running++
		}
	}
	var results []bucket.ObjectInfo
	if err := bucket.Walk(ctx, b, requests.ResultsPrefix, func(obj bucket.ObjectInfo) error {
		if now.Sub(obj.LastModified) <= SeenWithin {
			results = append(results, obj)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list results: %w", err)
	}
	for _, obj := range newest(results, maxResultsRead) {
		var r requests.Result
		if !read(ctx, b, obj.Key, o.maxObject, &r) || r.Worker == "" {
			continue
		}
		w := worker(r.Worker)
		if ago := now.Sub(obj.LastModified); w.Ago < 0 || ago < w.Ago {
			w.LastResult, w.Ago = fmt.Sprintf("%s %s %s", strings.ToLower(string(r.RequestKind)), r.ID, r.Status), max(0, ago)
		}
	}
	for _, w := range seen {
		p.Workers = append(p.Workers, *w)
	}
	sort.Slice(p.Workers, func(i, j int) bool {
		a, b := p.Workers[i], p.Workers[j]
		if (a.Running > 0) != (b.Running > 0) {
			return a.Running > 0
		}
		if a.Ago != b.Ago {
			return a.Ago >= 0 && (b.Ago < 0 || a.Ago < b.Ago)
		}
		return a.Name < b.Name
	})
	return p, nil
}

// newest returns the n most recently modified of objs.
func newest(objs []bucket.ObjectInfo, n int) []bucket.ObjectInfo {
	objs = slices.Clone(objs)
	sort.Slice(objs, func(i, j int) bool { return objs[i].LastModified.After(objs[j].LastModified) })
	return objs[:min(n, len(objs))]
}

// read decodes a small control object, false when it is missing, over
// the limit or not JSON: a trace that cannot be read is no trace.
func read(ctx context.Context, b bucket.Reader, key string, limit int64, into any) bool {
	data, _, err := bucket.GetBytesLimit(ctx, b, key, limit)
	return err == nil && json.Unmarshal(data, into) == nil
}

// String says it in a line: how long it waited, and who was seen.
func (p *Pending) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "no worker has claimed %s for %s", p.ID, p.Waiting.Round(time.Second))
	if len(p.Workers) == 0 {
		fmt.Fprintf(&b, "; no worker has held a lease or written a result in this bucket in the last %s: is a worker running with this bucket (capsule worker --bucket …)?", SeenWithin.Round(time.Minute))
		return b.String()
	}
	b.WriteString("; workers seen:")
	busy := false
	for i, w := range p.Workers {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s (", w.Name)
		var parts []string
		if w.Running > 0 {
			parts = append(parts, fmt.Sprintf("running %d now", w.Running))
			busy = true
		}
		if w.LastResult != "" {
			parts = append(parts, fmt.Sprintf("last finished %s %s ago", w.LastResult, w.Ago.Round(time.Second)))
		}
		b.WriteString(strings.Join(parts, "; ") + ")")
	}
	if busy {
		b.WriteString(": they may all be busy (worker.concurrency), or none of them serves the request's source")
	} else {
		b.WriteString(": none holds a lease now; none of them may serve the request's source, or they stopped")
	}
	return b.String()
}
