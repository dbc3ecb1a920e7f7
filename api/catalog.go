package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/legacy"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/sirupsen/logrus"
)

// catalog caches the index.Catalog's listing per cluster ("" is every cluster) for ttl.
// One listing per cluster runs at a time; requests that arrive meanwhile
// wait for it rather than start their own.
type catalog struct {
	b       bucket.Bucket
	ttl     time.Duration
	damaged *index.Reporter
	// legacy, when set, is where the old service's backups are; the
	// listing of every cluster ("") carries them. A failure to list them
	// (a key that may read capsule's prefix only) is logged when it
	// changes, and the listing goes on without them.
	legacy    *legacy.Store
	trust     *index.Trust
	log       logrus.FieldLogger
	legacyErr string // the last such failure, under mu

	mu      sync.Mutex
	entries map[string]*listing
}

type listing struct {
	done   chan struct{} // closed when the load ended
	asOf   time.Time     // when the load started
	l      *index.Listing
	legacy []legacy.Backup // the old service's backups (cluster "" only)
	err    error
}

// loadTimeout bounds one listing, which runs for every request waiting
// on it (not canceled with the one that started it).
const loadTimeout = 60 * time.Second

func newCatalog(b bucket.Bucket, ttl time.Duration, damaged *index.Reporter, old *legacy.Store, trust *index.Trust, log logrus.FieldLogger) *catalog {
	return &catalog{b: b, ttl: ttl, damaged: damaged, legacy: old, trust: trust, log: log, entries: map[string]*listing{}}
}

// legacyBackups lists the old service's backups, or logs why it cannot
// (once per distinct error) and returns none.
func (c *catalog) legacyBackups(ctx context.Context) []legacy.Backup {
	l, err := c.legacy.List(ctx)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	c.mu.Lock()
	changed := msg != c.legacyErr
	c.legacyErr = msg
	c.mu.Unlock()
	if err != nil {
		if changed && ctx.Err() == nil {
			c.log.WithError(err).Warn("could not list the old service's backups: the API lists capsule's only")
		}
		return nil
	}
	return l.Backups
}

// list returns the cluster's committed backups, newest first (by
// finishedAt, then backupId), and its damaged indexes, read at most ttl
// ago, and when they were. Each damaged index is reported (logged,
// counted) once.
func (c *catalog) list(ctx context.Context, cluster string) (*index.Listing, time.Time, error) {
	l, err := c.load(ctx, cluster)
	if err != nil {
		return nil, time.Time{}, err
	}
	return l.l, l.asOf, nil
}

// load returns the cached listing of cluster ("" for every cluster,
// with the old service's backups), reading it again once ttl passed.
func (c *catalog) load(ctx context.Context, cluster string) (*listing, error) {
	c.mu.Lock()
	l := c.entries[cluster]
	if l == nil || (isDone(l) && (l.err != nil || time.Since(l.asOf) >= c.ttl)) {
		c.sweep()
		l = &listing{done: make(chan struct{}), asOf: time.Now()}
		c.entries[cluster] = l
		go func() {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
			defer cancel()
			l.l, l.err = index.Catalog{Bucket: c.b, Writer: c.b}.List(lctx, index.Filter{Cluster: cluster, Trust: c.trust})
			if l.err == nil {
				c.damaged.Report(l.l.Damaged)
			}
			if l.err == nil && cluster == "" && c.legacy != nil {
				l.legacy = c.legacyBackups(lctx)
			}
			close(l.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-l.done:
		if l.err != nil {
			return nil, l.err
		}
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sweep drops stale listings so that asking for many clusters does not
// grow the cache without bound. Called with mu held.
func (c *catalog) sweep() {
	for k, l := range c.entries {
		if isDone(l) && time.Since(l.asOf) >= c.ttl {
			delete(c.entries, k)
		}
	}
}

func isDone(l *listing) bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// BackupEntry is one backup as the API shows it: its backupIndex.json
// exactly as stored, the newest verification recorded beside it, and
// what the API found of its signature (state "untrusted": no key the API
// trusts signed it; workers refuse to restore or verify it).
type BackupEntry struct {
	Index        *index.BackupIndex  `json:"index"`
	Verification *index.Verification `json:"verification,omitempty"`
	Signature    index.Signature     `json:"signature"`
}

func toEntry(e index.Entry) BackupEntry {
	return BackupEntry{Index: e.BackupIndex, Verification: e.Verification, Signature: e.Signature}
}

// BackupSummary names one backup in the clusters overview.
type BackupSummary struct {
	BackupID    string          `json:"backupId"`
	Status      requests.Status `json:"status"`
	StartedAt   time.Time       `json:"startedAt"`
	FinishedAt  time.Time       `json:"finishedAt"`
	Bytes       int64           `json:"bytes"`
	StoredBytes int64           `json:"storedBytes"`
}

// SourceSummary is one source of a cluster.
type SourceSummary struct {
	Name string `json:"name"`
	// Engine is the engine of the source's newest backup; empty for a
	// source that only ever failed (a result does not name its engine).
	Engine  string `json:"engine,omitempty"`
	Backups int    `json:"backups"`
	// NewestSuccessful is the newest backup that succeeded, if any.
	NewestSuccessful *BackupSummary `json:"newestSuccessful,omitempty"`
	// LastFailure is the newest backup of the source that failed, was
	// canceled or rejected, among the newest results (see
	// index.FailureReader), if any.
	LastFailure *index.Failure `json:"lastFailure,omitempty"`
	// FailuresSinceSuccess counts those that ended after
	// NewestSuccessful (all of them when there is none).
	FailuresSinceSuccess int `json:"failuresSinceSuccess,omitempty"`
}

// ClusterSummary is one cluster: the sources with backups in it.
type ClusterSummary struct {
	Name    string          `json:"name"`
	Backups int             `json:"backups"`
	Sources []SourceSummary `json:"sources"`
}

// ClusterList is the body of GET /v1/clusters.
type ClusterList struct {
	Clusters []ClusterSummary `json:"clusters"`
	// Damaged are the indexes in every cluster that are not believed (see
	// the index package), by key; they count nowhere above.
	Damaged []index.Damaged `json:"damaged,omitempty"`
	// Legacy are the backups the old cnvrg-capsule service left in the
	// bucket (package legacy), newest first; they belong to no cluster.
	Legacy []legacy.Backup `json:"legacy,omitempty"`
	AsOf   time.Time       `json:"asOf"`
}

// BackupPage is the body of GET /v1/clusters/{cluster}/backups.
type BackupPage struct {
	Cluster string        `json:"cluster"`
	Backups []BackupEntry `json:"backups"`
	// Damaged are the cluster's indexes (of the source, when one is
	// asked for) that are not believed, by key; on the first page only.
	Damaged []index.Damaged `json:"damaged,omitempty"`
	// Failures are the backups that failed, were canceled or rejected
	// (their results: a failed backup has no index), with status failed,
	// canceled, rejected or all; in the same order and pages as Backups.
	Failures []index.Failure `json:"failures,omitzero"`
	// NextCursor, when set, fetches the page after this one.
	NextCursor string    `json:"nextCursor,omitempty"`
	AsOf       time.Time `json:"asOf"`
}

func (s *server) clusters(w http.ResponseWriter, r *http.Request) {
	if !noQuery(w, r) {
		return
	}
	ll, err := s.catalog.load(r.Context(), "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l, asOf := ll.l, ll.asOf
	all := l.Entries
	out := ClusterList{Clusters: []ClusterSummary{}, Damaged: l.Damaged, Legacy: ll.legacy, AsOf: asOf.UTC()}
	byCluster := map[string]*ClusterSummary{}
	bySource := map[[2]string]*SourceSummary{}
	var order [][2]string
	for _, e := range all { // newest first
		c := byCluster[e.Cluster]
		if c == nil {
			c = &ClusterSummary{Name: e.Cluster}
			byCluster[e.Cluster] = c
		}
		c.Backups++
		k := [2]string{e.Cluster, e.Source}
		src := bySource[k]
		if src == nil {
			src = &SourceSummary{Name: e.Source, Engine: e.Engine}
			bySource[k] = src
			order = append(order, k)
		}
		src.Backups++
		if src.NewestSuccessful == nil && e.Status == requests.StatusSucceeded && e.Trusted() {
			src.NewestSuccessful = &BackupSummary{BackupID: e.BackupID, Status: e.Status, StartedAt: e.StartedAt, FinishedAt: e.FinishedAt, Bytes: e.Bytes, StoredBytes: e.StoredBytes}
		}
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i][0] != order[j][0] {
			return order[i][0] < order[j][0]
		}
		return order[i][1] < order[j][1]
	})
	for _, k := range order {
		c := byCluster[k[0]]
		c.Sources = append(c.Sources, *bySource[k])
	}
	names := make([]string, 0, len(byCluster))
	for n := range byCluster {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out.Clusters = append(out.Clusters, *byCluster[n])
	}
	addFailures(&out, s.failures.bestEffort(r.Context()))
	writeJSON(w, http.StatusOK, out)
}

// addFailures shows each source's newest failure (failures are newest
// first), and gives sources and clusters that only ever failed their
// place in the overview.
func addFailures(out *ClusterList, failures []index.Failure) {
	if len(failures) == 0 {
		return
	}
	for _, f := range failures {
		ci := slices.IndexFunc(out.Clusters, func(c ClusterSummary) bool { return c.Name == f.Cluster })
		if ci < 0 {
			out.Clusters = append(out.Clusters, ClusterSummary{Name: f.Cluster, Sources: []SourceSummary{}})
			ci = len(out.Clusters) - 1
		}
		c := &out.Clusters[ci]
		si := slices.IndexFunc(c.Sources, func(s SourceSummary) bool { return s.Name == f.Source })
		if si < 0 {
			c.Sources = append(c.Sources, SourceSummary{Name: f.Source})
			si = len(c.Sources) - 1
		}
		src := &c.Sources[si]
		if src.LastFailure == nil {
			src.LastFailure = &f
		}
		if src.NewestSuccessful == nil || f.FinishedAt.After(src.NewestSuccessful.FinishedAt) {
			src.FailuresSinceSuccess++
		}
	}
	for i := range out.Clusters {
		slices.SortFunc(out.Clusters[i].Sources, func(a, b SourceSummary) int { return strings.Compare(a.Name, b.Name) })
	}
	slices.SortFunc(out.Clusters, func(a, b ClusterSummary) int { return strings.Compare(a.Name, b.Name) })
}

// Limits of a page of backups.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

func (s *server) backups(w http.ResponseWriter, r *http.Request) {
	cluster, ok := clusterParam(w, r)
	if !ok {
		return
	}
	q, ok := query(w, r)
	if !ok {
		return
	}
	for k, v := range q {
		switch k {
		case "source", "status", "limit", "cursor":
			if len(v) > 1 {
				writeError(w, http.StatusBadRequest, CodeInvalidParameter, k, k+": give it once")
				return
			}
		default:
			writeError(w, http.StatusBadRequest, CodeInvalidParameter, k, fmt.Sprintf("%s: unknown parameter (want source, status, limit or cursor)", clip(k)))
			return
		}
	}
	source := q.Get("source")
	if source != "" {
		if err := requests.ValidateName(source); err != nil {
			writeError(w, http.StatusBadRequest, CodeInvalidParameter, "source", "source: "+err.Error())
			return
		}
	}
	status := requests.Status(q.Get("status"))
	switch status {
	case "", requests.StatusSucceeded, requests.StatusFailed, requests.StatusCanceled, requests.StatusRejected, requests.StatusRunning, requests.StatusPending, statusAll:
	default:
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "status", fmt.Sprintf("status: %q is not a status (succeeded, failed, canceled, rejected, running, pending, or all)", clip(string(status))))
		return
	}
	// Committed backups come from the catalog; failed, canceled and
	// rejected ones from their results.
	withBackups := !index.IsFailure(status)
	withFailures := index.IsFailure(status) || status == statusAll
	if status == statusAll {
		status = ""
	}
	limit := DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			writeError(w, http.StatusBadRequest, CodeInvalidParameter, "limit", fmt.Sprintf("limit: want an integer from 1 to %d, got %q", MaxLimit, clip(v)))
			return
		}
		limit = n
	}
	var cur *cursor
	if v := q.Get("cursor"); v != "" {
		c, err := parseCursor(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, CodeInvalidParameter, "cursor", "cursor: "+err.Error())
			return
		}
		cur = &c
	}
	l, asOf, err := s.catalog.list(r.Context(), cluster)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var failures []index.Failure
	if withFailures {
		if failures, err = s.failures.list(r.Context()); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	page := BackupPage{Cluster: cluster, Backups: []BackupEntry{}, AsOf: asOf.UTC()}
	if withFailures {
		page.Failures = []index.Failure{}
	}
	if cur == nil {
		for _, d := range l.Damaged {
			if source == "" || d.Source == source {
				page.Damaged = append(page.Damaged, d)
			}
		}
	}
	// Merge both lists in the one order (finishedAt, then id,
	// descending) and cut the page.
	var entries []index.Entry
	if withBackups {
		for _, e := range l.Entries {
			if (source == "" || e.Source == source) && (status == "" || e.Status == status) && (cur == nil || cur.before(e.FinishedAt, e.BackupID)) {
				entries = append(entries, e)
			}
		}
	}
	var fails []index.Failure
	for _, f := range failures {
		if f.Cluster == cluster && (source == "" || f.Source == source) && (status == "" || f.Status == status) && (cur == nil || cur.before(f.FinishedAt, f.ID)) {
			fails = append(fails, f)
		}
	}
	var last cursor
	for n := 0; len(entries)+len(fails) > 0; n++ {
		if n == limit {
			page.NextCursor = last.String()
			break
		}
		if len(fails) == 0 || (len(entries) > 0 && (cursor{finishedAt: entries[0].FinishedAt, backupID: entries[0].BackupID}).before(fails[0].FinishedAt, fails[0].ID)) {
			last = cursor{finishedAt: entries[0].FinishedAt, backupID: entries[0].BackupID}
			page.Backups = append(page.Backups, toEntry(entries[0]))
			entries = entries[1:]
		} else {
			last = cursor{finishedAt: fails[0].FinishedAt, backupID: fails[0].ID}
			page.Failures = append(page.Failures, fails[0])
			fails = fails[1:]
		}
	}
	writeJSON(w, http.StatusOK, page)
}

// statusAll asks for committed and failed backups alike.
const statusAll requests.Status = "all"

func (s *server) backup(w http.ResponseWriter, r *http.Request) {
	cluster, ok := clusterParam(w, r)
	if !ok || !noQuery(w, r) {
		return
	}
	id := r.PathValue("backupId")
	if err := requests.ValidateID(id); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "backupId", "backupId: "+err.Error())
		return
	}
	l, _, err := s.catalog.list(r.Context(), cluster)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, e := range l.Entries {
		if e.BackupID == id {
			writeJSON(w, http.StatusOK, toEntry(e))
			return
		}
	}
	for _, d := range l.Damaged {
		if d.BackupID == id {
			writeError(w, http.StatusNotFound, CodeNotFound, "", (&index.DamagedError{Damaged: d}).Error())
			return
		}
	}
	s.fail(w, r, index.ErrBackupNotFound)
}

func clusterParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	cluster := r.PathValue("cluster")
	if err := requests.ValidateName(cluster); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "cluster", "cluster: "+err.Error())
		return "", false
	}
	return cluster, true
}

// noQuery refuses query parameters where none are defined, so that a
// typo is not silently ignored.
func noQuery(w http.ResponseWriter, r *http.Request) bool {
	q, ok := query(w, r)
	if !ok {
		return false
	}
	for k := range q {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, k, fmt.Sprintf("%s: this path takes no parameters", clip(k)))
		return false
	}
	return true
}

// query parses the query string, refusing a malformed one (which
// url.URL.Query would drop silently).
func query(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "", "the query string is malformed: "+err.Error())
		return nil, false
	}
	return q, true
}

// cursor is a position in the order (finishedAt desc, backupId desc):
// the last backup a page returned.
type cursor struct {
	finishedAt time.Time
	backupID   string
}

// String encodes the cursor opaquely (base64url of "<RFC 3339 time> <id>").
func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.finishedAt.UTC().Format(time.RFC3339Nano) + " " + c.backupID))
}

func parseCursor(s string) (cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, fmt.Errorf("not a cursor this API returned")
	}
	t, id, ok := strings.Cut(string(raw), " ")
	if !ok {
		return cursor{}, fmt.Errorf("not a cursor this API returned")
	}
	at, err := time.Parse(time.RFC3339Nano, t)
	if err != nil || requests.ValidateID(id) != nil {
		return cursor{}, fmt.Errorf("not a cursor this API returned")
	}
	return cursor{finishedAt: at, backupID: id}, nil
}

// before reports whether the item that finished at t with id comes
// after the cursor in the listing's order.
func (c cursor) before(t time.Time, id string) bool {
	if !t.Equal(c.finishedAt) {
		return t.Before(c.finishedAt)
	}
	return id < c.backupID
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// pitrWindow answers GET /v1/clusters/{cluster}/pitr?source=S: the
// recoverable window of a source with point-in-time recovery.
func (s *server) pitrWindow(w http.ResponseWriter, r *http.Request) {
	cluster, ok := clusterParam(w, r)
	if !ok {
		return
	}
	q, ok := query(w, r)
	if !ok {
		return
	}
	for k, v := range q {
		if k != "source" || len(v) != 1 {
			writeError(w, http.StatusBadRequest, CodeInvalidParameter, k, "give source, once")
			return
		}
	}
	source := q.Get("source")
	if err := requests.ValidateName(source); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "source", "source: "+err.Error())
		return
	}
	win, err := pitr.RecoverableWindow(r.Context(), s.b, cluster, source, s.catalog.trust)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if win == nil {
		writeError(w, http.StatusNotFound, CodeNotFound, "", fmt.Sprintf("source %s of cluster %s has no base backup followed by its WAL: no point-in-time restore is possible", source, cluster))
		return
	}
	writeJSON(w, http.StatusOK, win)
}
