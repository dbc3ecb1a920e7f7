package index

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/internal/sshsig"
	"github.com/cnvrg/capsule/requests"
)

// Kind values of the catalog's objects.
const (
	KindCatalogPointer  = "CatalogPointer"
	KindCatalogSnapshot = "CatalogSnapshot"
	KindCatalogDeletion = "CatalogDeletion"
	KindCatalogMigrated = "CatalogMigrated"
)

// Limits and pace of the catalog.
const (
	// MaxSnapshotSize is the largest catalog snapshot that is read; a
	// larger one is treated as absent (the listing walks the indexes).
	// An entry is an index (about 1-2 KiB): 256 MiB holds far more than
	// 100,000 backups of a cluster.
	MaxSnapshotSize = 256 << 20
	// MaxPointerSize is the largest catalog/ids/<id>.json that is read.
	MaxPointerSize = 64 << 10
	// CompactAfter is how many events a listing reads beside the newest
	// snapshot before it writes a new snapshot that holds them.
	CompactAfter = 32
	// CatalogGrace is how old (by the bucket's clock) an event folded
	// into a snapshot, or a superseded snapshot, must be before a
	// compaction deletes it. Any compaction that could have missed the
	// event started after it was written and takes less than
	// CatalogGrace (compactions are bounded by compactTimeout), so no
	// newer snapshot lacks an event that is deleted.
	CatalogGrace = 10 * time.Minute
	// compactTimeout bounds the writing side of one compaction.
	compactTimeout = 2 * time.Minute
	eventIndex     = "index.json"
	eventDeleted   = "deleted.json"
	snapshotPrefix = "snapshot-"
	// markerPrefix names a commit's claim to compact from one snapshot
	// (settle): catalog/clusters/<cluster>/compacting-<base>-<minute>.json.
	markerPrefix = "compacting-"
)

// pointer is catalog/ids/<backupId>.json: where a backup id's index is.
type pointer struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	BackupID   string `json:"backupId"`
	Cluster    string `json:"cluster"`
	Source     string `json:"source"`
}

// deletion is catalog/clusters/<cluster>/new/<backupId>/deleted.json.
type deletion struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	BackupID   string `json:"backupId"`
	Cluster    string `json:"cluster"`
	Source     string `json:"source"`
}

// snapshot is catalog/clusters/<cluster>/snapshot-<time>-<random>.json:
// a cluster's committed backups as of its write.
type snapshot struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Cluster    string `json:"cluster"`
	// ScannedAt is when a walk of the cluster's indexes last rebuilt the
	// catalog; compactions carry it forward.
	ScannedAt time.Time   `json:"scannedAt,omitzero"`
	Entries   []snapEntry `json:"entries"`
	// Damaged are the indexes that walk (and the events since) did not
	// believe.
	Damaged []Damaged `json:"damaged,omitempty"`
	// Folded are the event keys this snapshot holds: a reader does not
	// read them again.
	Folded []string `json:"folded,omitempty"`
}

type snapEntry struct {
	Index *BackupIndex `json:"index"`
	// Written is the index's LastModified, the bucket's clock when it
	// was committed: the listing's "finished in the future" check is
	// made again with it.
	Written             time.Time     `json:"written"`
	Verification        *Verification `json:"verification,omitempty"`
	VerificationWritten time.Time     `json:"verificationWritten,omitzero"`
	// Signature and VerificationSignature are what the compacting worker
	// found of the index's and the verification's signatures (facts, not
	// a judgement: each reader judges them by its own Trust). Only a
	// snapshot signed by a key the reader trusts is believed about them.
	Signature             *snapSig `json:"signature,omitempty"`
	VerificationSignature *snapSig `json:"verificationSignature,omitempty"`
}

// snapSig is the facts of a signature as a snapshot records them.
type snapSig struct {
	// Missing: there was no signature object.
	Missing bool `json:"missing,omitempty"`
	// ValidBy is the fingerprint of the key whose valid signature of the
	// stored bytes it is, trusted by the compactor or not.
	ValidBy string `json:"validBy,omitempty"`
	// Invalid says why a signature that is there does not check out.
	Invalid string `json:"invalid,omitempty"`
}

func toSnapSig(g Signature) *snapSig {
	return &snapSig{Missing: g.missing, ValidBy: g.by, Invalid: g.why}
}

func (g *snapSig) facts() Signature {
	f := Signature{missing: g.Missing, by: g.ValidBy, why: g.Invalid}
	if !f.missing && f.by == "" && f.why == "" {
		f.why = "the catalog recorded no signature facts"
	}
	return f
}

// factual says whether every entry of s carries its signature facts (and
// its verification's): only such a snapshot is signed, or believed by a
// reader that checks signatures.
func (s *snapshot) factual() bool {
	for _, se := range s.Entries {
		if se.Signature == nil || (se.Verification != nil && se.VerificationSignature == nil) {
			return false
		}
	}
	return true
}

// Catalog lists backups through the catalog objects (see the package
// doc) in a bounded number of requests, and falls back to walking the
// indexes (ListAll) where the catalog is missing or not believed.
type Catalog struct {
	// Bucket is read.
	Bucket bucket.Reader
	// Writer, when set, lets a listing write what it learned: the first
	// snapshot of a cluster it had to walk, a compaction once
	// CompactAfter events pile up. Nil for a reader without write
	// access; its listings stay correct, only slower.
	Writer bucket.Bucket

	// Signer, when set, signs the snapshots this Catalog writes (namespace
	// CatalogNamespace), after checking the signature of every entry and
	// recording what it found: readers that check signatures believe only
	// a snapshot signed by a key they trust, and walk otherwise. Without
	// it, snapshots are written unsigned, and never over a signed one.
	Signer *Signer

	// noWalk makes listCluster return nothing where it would walk.
	noWalk bool
}

// settle compacts cluster's catalog when more than CompactAfter events
// were written since its newest snapshot, so that no listing reads many
// more: a compaction every CompactAfter commits. Of commits that settle at
// once, only the one that creates the compaction's marker first
// (claimCompaction) compacts: the others would read the same events
// again. It never walks: a bucket not yet migrated waits for its first
// listing.
//
// Counting the events takes a LIST, and a commit makes it only when the
// count may have passed CompactAfter (settleDue): the process remembers,
// per bucket and cluster, what its last LIST counted, its own commits
// since, and how many of the cluster's commits each of its own stood for
// between its last two LISTs (other writers'). A single writer lists once
// per compaction (and on its first commit); with several, each lists when
// its estimate of the cluster's count passes CompactAfter. A process that
// saw more than CompactAfter and did not compact (another's marker) lists
// again on its next commit, so some commit compacts.
func settle(ctx context.Context, b bucket.Bucket, cluster string, s *Signer) {
	st := settleDue(b, cluster)
	if st == nil {
		return
	}
	objs, err := scanCatalog(ctx, b, requests.CatalogClusterDir(cluster))
	if err != nil || objs[cluster] == nil {
		st.forget()
		return
	}
	fresh, compacted := settleListed(ctx, b, cluster, s, objs[cluster])
	st.listed(objs[cluster].events, fresh, compacted)
}

// settleListed is settle once the cluster's catalog objects o are
// listed: it compacts when more than CompactAfter events are fresh and
// it creates the compaction's marker first. It returns how many were
// fresh and whether it compacted.
func settleListed(ctx context.Context, b bucket.Bucket, cluster string, s *Signer, o *clusterObjects) (int, bool) {
	fresh := newEvents(o)
	if len(fresh) <= CompactAfter {
		return len(fresh), false
	}
	// Of commits that list at nearly the same time and count as many,
	// the first to create the marker of this snapshot (and minute)
	// compacts; the others read nothing.
	if !claimCompaction(ctx, b, cluster, o) {
		return len(fresh), false
	}
	_, _ = Catalog{Bucket: b, Writer: b, Signer: s, noWalk: true}.listCluster(ctx, cluster, o, nil, nil)
	return len(fresh), true
}

// claimCompaction creates, create-only, the marker that says a commit
// compacts cluster's catalog from its newest snapshot o lists; false when
// another commit created it first (or it cannot be written). The marker
// is named after that snapshot and the minute (this worker's clock), so
// a compactor that died holds no other commit back for longer than that.
// A forged marker can only delay compactions by commits: listings still
// compact. Compactions delete markers older than CatalogGrace.
func claimCompaction(ctx context.Context, b bucket.Bucket, cluster string, o *clusterObjects) bool {
	base := "none"
	var newest bucket.ObjectInfo
	for _, sn := range o.snapshots {
		if sn.LastModified.After(newest.LastModified) || (sn.LastModified.Equal(newest.LastModified) && sn.Key > newest.Key) {
			newest = sn
		}
	}
	if newest.Key != "" {
		base = strings.TrimSuffix(strings.TrimPrefix(path.Base(newest.Key), snapshotPrefix), ".json")
	}
	key := requests.CatalogClusterDir(cluster) + markerPrefix + base + "-" + time.Now().UTC().Format("200601021504") + ".json"
	_, err := bucket.PutBytes(ctx, b, key, []byte("{}\n"), bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json"})
	return err == nil
}

// settleState is what a process knows of one cluster's events (settle).
type settleState struct {
	key settleKey
	// fresh is what the last LIST counted since the newest snapshot (0
	// after this process compacted).
	fresh int
	// commits are this process's commits since that LIST, this one's
	// included.
	commits int
	// rate is how many of the cluster's commits each of this process's
	// stood for between its last two LISTs (at least 1).
	rate float64
	// newest is the newest event's time at the last LIST (the bucket's
	// clock), atNewest the keys of the events of that time it saw.
	newest   time.Time
	atNewest map[string]bool
}

type settleKey struct {
	b       bucket.Bucket
	cluster string
}

var settles = struct {
	sync.Mutex
	m map[settleKey]*settleState
}{m: map[settleKey]*settleState{}}

// settleDue counts a commit to cluster and returns its state when the
// commit is to LIST (nil: not yet). A bucket that is not a pointer (no
// identity to remember it by) lists on every commit.
func settleDue(b bucket.Bucket, cluster string) *settleState {
	if reflect.TypeOf(b).Kind() != reflect.Pointer {
		return &settleState{}
	}
	k := settleKey{b, cluster}
	settles.Lock()
	defer settles.Unlock()
	st := settles.m[k]
	if st == nil {
		if len(settles.m) >= 256 {
			clear(settles.m) // forgetting only costs a LIST each
		}
		st = &settleState{key: k, rate: 1}
		settles.m[k] = st
		st.commits++
		return st
	}
	st.commits++
	if float64(st.fresh)+float64(st.commits)*st.rate <= CompactAfter {
		return nil
	}
	return st
}

// listed records what a settle's LIST found: the cluster's events, how
// many are since the newest snapshot, and whether this commit compacted.
func (st *settleState) listed(events []bucket.ObjectInfo, fresh int, compacted bool) {
	if st.key.b == nil {
		return
	}
	settles.Lock()
	defer settles.Unlock()
	// Events stay at least CatalogGrace: those this LIST shows and the
	// last did not are the cluster's commits since (this process's own
	// among them).
	var since int
	newest := st.newest
	for _, ev := range events {
		if ev.LastModified.After(st.newest) || (ev.LastModified.Equal(st.newest) && !st.atNewest[ev.Key]) {
			since++
		}
		if ev.LastModified.After(newest) {
			newest = ev.LastModified
		}
	}
	atNewest := map[string]bool{}
	for _, ev := range events {
		if ev.LastModified.Equal(newest) {
			atNewest[ev.Key] = true
		}
	}
	st.atNewest = atNewest
	if !st.newest.IsZero() && st.commits > 0 {
		st.rate = max(1, float64(since)/float64(st.commits))
	}
	st.fresh, st.commits, st.newest = fresh, 0, newest
	if compacted {
		st.fresh = 0
	}
}

// forget drops the state of a LIST that failed: the next commit lists.
func (st *settleState) forget() {
	if st.key.b == nil {
		return
	}
	settles.Lock()
	defer settles.Unlock()
	delete(settles.m, st.key)
}

// newEvents are the events written after the newest snapshot, as listed
// (by the bucket's clock): events a snapshot folded stay for a while after
// it (see compact), and counting them would make every commit compact
// again. Events of the snapshot's own second are left out (Last-Modified
// has a resolution of a second on S3): a listing reads them beside the
// next CompactAfter.
func newEvents(o *clusterObjects) []bucket.ObjectInfo {
	var newest time.Time
	for _, s := range o.snapshots {
		if s.LastModified.After(newest) {
			newest = s.LastModified
		}
	}
	var out []bucket.ObjectInfo
	for _, ev := range o.events {
		if ev.LastModified.After(newest) {
			out = append(out, ev)
		}
	}
	return out
}

// Record adds a committed index to the catalog: its pointer
// (catalog/ids/<id>.json) and its cluster's commit event, both written
// create-only; ones that exist are left as they are. Write calls it; a
// later attempt that finds the backup committed calls it again, so a
// crash between the index and these writes is repaired. s, when set,
// signs the snapshot a compaction writes.
func Record(ctx context.Context, b bucket.Bucket, x *BackupIndex, s *Signer) error {
	data, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		return err
	}
	return record(ctx, b, x, append(data, '\n'), s)
}

func record(ctx context.Context, b bucket.Bucket, x *BackupIndex, data []byte, s *Signer) error {
	if err := writePointer(ctx, b, x.Cluster, x.Source, x.BackupID); err != nil {
		return err
	}
	key := requests.CatalogEventDir(x.Cluster, x.BackupID) + eventIndex
	info, err := bucket.PutBytes(ctx, b, key, data, bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json", RetainUntil: x.RetainUntil})
	switch {
	case err == nil:
		rememberEvent(b, key, info.ETag, data)
	case !errors.Is(err, bucket.ErrPreconditionFailed):
		return fmt.Errorf("write catalog %s: %w", key, err)
	}
	settle(ctx, b, x.Cluster, s)
	return nil
}

// ownEvents are the bytes of the commit events this process wrote, by
// bucket and key, with the ETag their write returned: a compaction by
// this process (settle) copies them without reading them back. One is
// used only while the listing shows the object at its key with that same
// ETag, the version this process wrote (an object written over since,
// by anyone, is read as any other), and is judged as a read one is, with
// the listing's LastModified. At most maxOwnEvents are kept, the oldest
// forgotten first: forgetting only costs a GET.
var ownEvents = struct {
	sync.Mutex
	m     map[settleKey]ownEvent
	order []settleKey
}{m: map[settleKey]ownEvent{}}

type ownEvent struct {
	etag string
	data []byte
}

// maxOwnEvents bounds ownEvents: a few compactions' worth of one writer.
const maxOwnEvents = 4 * CompactAfter

// rememberEvent keeps the bytes of the event this process wrote at key
// (see ownEvents). A bucket that is not a pointer (no identity), or a
// write that returned no ETag, is not remembered.
func rememberEvent(b bucket.Bucket, key, etag string, data []byte) {
	if etag == "" || reflect.TypeOf(b).Kind() != reflect.Pointer {
		return
	}
	k := settleKey{b, key}
	ownEvents.Lock()
	defer ownEvents.Unlock()
	if _, ok := ownEvents.m[k]; !ok {
		ownEvents.order = append(ownEvents.order, k)
	}
	ownEvents.m[k] = ownEvent{etag: etag, data: data}
	for len(ownEvents.order) > maxOwnEvents {
		delete(ownEvents.m, ownEvents.order[0])
		ownEvents.order = ownEvents.order[1:]
	}
}

// recalledEvent returns the bytes this process wrote at ev's key, when the
// listing shows that same version (its ETag); nil otherwise.
func recalledEvent(b bucket.Reader, ev bucket.ObjectInfo) []byte {
	wb, ok := b.(bucket.Bucket)
	if !ok || ev.ETag == "" || reflect.TypeOf(wb).Kind() != reflect.Pointer {
		return nil
	}
	ownEvents.Lock()
	defer ownEvents.Unlock()
	e, ok := ownEvents.m[settleKey{wb, ev.Key}]
	if !ok || e.etag != ev.ETag {
		return nil
	}
	return e.data
}

func writePointer(ctx context.Context, b bucket.Bucket, cluster, source, id string) error {
	p, _ := json.Marshal(pointer{APIVersion: requests.APIVersion, Kind: KindCatalogPointer, BackupID: id, Cluster: cluster, Source: source})
	return putOnce(ctx, b, requests.CatalogPointerKey(id), append(p, '\n'), time.Time{})
}

// putOnce writes key create-only; an existing key is not an error.
func putOnce(ctx context.Context, b bucket.Bucket, key string, data []byte, until time.Time) error {
	_, err := bucket.PutBytes(ctx, b, key, data, bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json", RetainUntil: until})
	if err != nil && !errors.Is(err, bucket.ErrPreconditionFailed) {
		return fmt.Errorf("write catalog %s: %w", key, err)
	}
	return nil
}

// Forget records in the catalog that a backup was deleted (a deletion
// event) and removes its pointer. Whoever deletes a committed backup
// calls it after the index is gone.
func Forget(ctx context.Context, b bucket.Bucket, e Entry) error {
	d, _ := json.Marshal(deletion{APIVersion: requests.APIVersion, Kind: KindCatalogDeletion, BackupID: e.BackupID, Cluster: e.Cluster, Source: e.Source})
	if err := putOnce(ctx, b, requests.CatalogEventDir(e.Cluster, e.BackupID)+eventDeleted, append(d, '\n'), time.Time{}); err != nil {
		return err
	}
	if err := b.Delete(ctx, requests.CatalogPointerKey(e.BackupID)); err != nil {
		return fmt.Errorf("delete catalog pointer of %s: %w", e.BackupID, err)
	}
	return nil
}

// findByPointer finds a backup through its pointer: a GET of the
// pointer, a LIST of the backup's folder (for its verification records
// and signatures), a GET of the index, of its signature and of the newest
// verification (and its signature). The pointer only says where the index
// is: the index is judged by t exactly as the walk judges it. ok is false
// when there is no pointer, or it is not believed, or the index it names
// is missing or damaged, or (where t checks signatures) not signed by a
// trusted key: FindTrusted then walks, as before the catalog, so a forged
// pointer makes no backup unfindable or ambiguous.
func findByPointer(ctx context.Context, b bucket.Reader, id string, t *Trust) (Entry, bool) {
	data, _, err := bucket.GetBytesLimit(ctx, b, requests.CatalogPointerKey(id), MaxPointerSize)
	if err != nil {
		return Entry{}, false
	}
	var p pointer
	if json.Unmarshal(data, &p) != nil || p.APIVersion != requests.APIVersion || p.Kind != KindCatalogPointer ||
		p.BackupID != id || requests.ValidateName(p.Cluster) != nil || requests.ValidateName(p.Source) != nil {
		return Entry{}, false
	}
	dir := requests.BackupDir(p.Cluster, p.Source, id)
	_, verifyKeys, sigs, err := scan(ctx, b, dir, id)
	if err != nil {
		return Entry{}, false
	}
	e, err := load(ctx, b, dir+requests.IndexName, verifyKeys[dir], sigs, t)
	if err != nil || (e.Signature.State != SigSigned && e.Signature.State != SigUnchecked) {
		return Entry{}, false
	}
	return e, true
}

// clusterObjects are one cluster's catalog objects, as listed.
type clusterObjects struct {
	snapshots []bucket.ObjectInfo
	events    []bucket.ObjectInfo
	// sigs are the snapshots' signature keys.
	sigs map[string]bool
	// markers are the compaction markers (claimCompaction).
	markers []bucket.ObjectInfo
}

// scanCatalog lists the catalog objects under prefix, by cluster.
func scanCatalog(ctx context.Context, b bucket.Reader, prefix string) (map[string]*clusterObjects, error) {
	out := map[string]*clusterObjects{}
	err := bucket.Walk(ctx, b, prefix, func(o bucket.ObjectInfo) error {
		rest, ok := strings.CutPrefix(o.Key, requests.CatalogClustersPrefix)
		if !ok {
			return nil
		}
		seg, name, ok := strings.Cut(rest, "/")
		if !ok {
			return nil
		}
		cluster, err := requests.Unsegment(seg)
		if err != nil || requests.ValidateName(cluster) != nil || requests.Segment(cluster) != seg {
			return nil
		}
		c := out[cluster]
		if c == nil {
			c = &clusterObjects{sigs: map[string]bool{}}
			out[cluster] = c
		}
		switch {
		case strings.HasPrefix(name, snapshotPrefix) && !strings.Contains(name, "/") && strings.HasSuffix(name, SignatureSuffix):
			c.sigs[o.Key] = true
		case strings.HasPrefix(name, snapshotPrefix) && !strings.Contains(name, "/"):
			c.snapshots = append(c.snapshots, o)
		case strings.HasPrefix(name, "new/"):
			c.events = append(c.events, o)
		case strings.HasPrefix(name, markerPrefix) && !strings.Contains(name, "/"):
			c.markers = append(c.markers, o)
		}
		return nil
	})
	return out, err
}

// List returns what ListAll returns for f, read from the catalog: the
// cluster's newest snapshot and the events newer than it (a LIST, a GET,
// and at most about CompactAfter GETs), or, for every cluster, the same
// per cluster. Where the catalog cannot answer (a bucket written before
// it existed, a snapshot that is not believed) it walks the indexes like
// ListAll, and, with a Writer, writes the snapshot that spares the next
// listing the walk.
func (c Catalog) List(ctx context.Context, f Filter) (*Listing, error) {
	var l *Listing
	var err error
	if f.Cluster == "" {
		l, err = c.listEvery(ctx, f.Trust)
	} else {
		var objs map[string]*clusterObjects
		if objs, err = scanCatalog(ctx, c.Bucket, requests.CatalogClusterDir(f.Cluster)); err != nil {
			return nil, err
		}
		o := objs[f.Cluster]
		if o == nil {
			o = &clusterObjects{sigs: map[string]bool{}}
		}
		l, err = c.listCluster(ctx, f.Cluster, o, nil, f.Trust)
	}
	if err != nil {
		return nil, err
	}
	if f.Source != "" {
		l = narrow(l, f.Source)
	}
	return l, nil
}

func narrow(l *Listing, source string) *Listing {
	out := &Listing{Entries: []Entry{}}
	for _, e := range l.Entries {
		if e.Source == source {
			out.Entries = append(out.Entries, e)
		}
	}
	for _, d := range l.Damaged {
		if d.Source == source {
			out.Damaged = append(out.Damaged, d)
		}
	}
	return out
}

// migrated says whether every backup made before the catalog existed is
// in it (a full walk wrote every cluster's snapshot).
func (c Catalog) migrated(ctx context.Context) (bool, error) {
	_, err := c.Bucket.Head(ctx, requests.CatalogMigratedKey)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, bucket.ErrNotFound):
		return false, nil
	}
	return false, err
}

func (c Catalog) listEvery(ctx context.Context, t *Trust) (*Listing, error) {
	objs, err := scanCatalog(ctx, c.Bucket, requests.CatalogClustersPrefix)
	if err != nil {
		return nil, err
	}
	done, err := c.migrated(ctx)
	if err != nil {
		return nil, err
	}
	if !done {
		return c.migrate(ctx, objs, t)
	}
	clusters := make([]string, 0, len(objs))
	for name := range objs {
		clusters = append(clusters, name)
	}
	sort.Strings(clusters)
	ls := make([]*Listing, len(clusters))
	errs := parallel(len(clusters), 8, func(i int) (err error) {
		ls[i], err = c.listCluster(ctx, clusters[i], objs[clusters[i]], &done, t)
		return err
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := &Listing{Entries: []Entry{}}
	for _, l := range ls {
		out.Entries = append(out.Entries, l.Entries...)
		out.Damaged = append(out.Damaged, l.Damaged...)
	}
	sortListing(out)
	return out, nil
}

// migrate walks every index, writes each cluster's first snapshot and
// every backup's missing pointer, then the mark that says the catalog
// holds everything. Without a Writer it only walks.
func (c Catalog) migrate(ctx context.Context, objs map[string]*clusterObjects, t *Trust) (*Listing, error) {
	l, err := ListAll(ctx, c.Bucket, Filter{Trust: c.walkTrust(t)})
	if err != nil {
		return nil, err
	}
	if c.Writer == nil {
		return l, nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compactTimeout)
	defer cancel()
	byCluster := map[string]*Listing{}
	for name := range objs {
		byCluster[name] = &Listing{}
	}
	for _, e := range l.Entries {
		if byCluster[e.Cluster] == nil {
			byCluster[e.Cluster] = &Listing{}
		}
		byCluster[e.Cluster].Entries = append(byCluster[e.Cluster].Entries, e)
	}
	for _, d := range l.Damaged {
		if byCluster[d.Cluster] == nil {
			byCluster[d.Cluster] = &Listing{}
		}
		byCluster[d.Cluster].Damaged = append(byCluster[d.Cluster].Damaged, d)
	}
	if err := writePointers(wctx, c.Writer, l.Entries); err != nil {
		return l, nil // the next listing tries again
	}
	for name, cl := range byCluster {
		o := objs[name]
		if o == nil {
			o = &clusterObjects{sigs: map[string]bool{}}
		}
		if c.Signer == nil && len(o.sigs) > 0 {
			continue // signed snapshots: superseded only by a signed one
		}
		if err := c.compact(wctx, name, fromWalk(name, cl, o, c.Signer != nil), o, c.Signer != nil); err != nil {
			return l, nil
		}
	}
	m, _ := json.Marshal(map[string]string{"apiVersion": requests.APIVersion, "kind": KindCatalogMigrated})
	_ = putOnce(wctx, c.Writer, requests.CatalogMigratedKey, append(m, '\n'), time.Time{})
	return l, nil
}

// writePointers creates the pointers that are missing for entries (one
// LIST page per 1,000 pointers, one PUT per missing one).
func writePointers(ctx context.Context, w bucket.Bucket, entries []Entry) error {
	have := map[string]bool{}
	if err := bucket.Walk(ctx, w, requests.CatalogIDsPrefix, func(o bucket.ObjectInfo) error {
		have[o.Key] = true
		return nil
	}); err != nil {
		return err
	}
	var missing []Entry
	for _, e := range entries {
		if !have[requests.CatalogPointerKey(e.BackupID)] {
			missing = append(missing, e)
		}
	}
	return errors.Join(parallel(len(missing), 16, func(i int) error {
		e := missing[i]
		return writePointer(ctx, w, e.Cluster, e.Source, e.BackupID)
	})...)
}

// parallel runs f(0), …, f(n-1), at most limit at a time, and returns
// their errors by index.
func parallel(n, limit int, f func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, limit)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errs
}

// fromWalk makes a snapshot of what a walk of the cluster found. The
// events listed before the walk are folded: the walk saw their effect.
// With facts, the entries were read with facts (walkTrust) and the
// snapshot records them.
func fromWalk(cluster string, l *Listing, o *clusterObjects, facts bool) *snapshot {
	s := &snapshot{APIVersion: requests.APIVersion, Kind: KindCatalogSnapshot, Cluster: cluster, ScannedAt: time.Now().UTC(), Entries: []snapEntry{}, Damaged: l.Damaged}
	for _, e := range l.Entries {
		se := snapEntry{Index: e.BackupIndex, Written: e.written, Verification: e.Verification, VerificationWritten: e.verificationWritten}
		if facts {
			se.Signature = toSnapSig(e.Signature)
			if e.Verification != nil {
				se.VerificationSignature = toSnapSig(e.verificationSig)
			}
		}
		s.Entries = append(s.Entries, se)
	}
	for _, ev := range o.events {
		s.Folded = append(s.Folded, ev.Key)
	}
	return s
}

// walkTrust is the Trust a walk uses: t, and, where this Catalog signs
// what it writes, one that keeps every signature's facts for the snapshot.
func (c Catalog) walkTrust(t *Trust) *Trust {
	if c.Signer != nil && c.Writer != nil {
		return t.withFacts()
	}
	return t
}

// listCluster lists one cluster from its catalog objects o, judging
// signatures by t. migrated is nil when not yet known (it is asked only
// when needed).
//
// Where t checks signatures, the newest snapshot is believed only when it
// is signed by a key t trusts and records the facts of every entry's
// signature; the entries are then judged by t from those facts, and the
// events newer than the snapshot are judged by their indexes' own
// signatures. Otherwise the listing walks (ListAll): correct, only slower.
func (c Catalog) listCluster(ctx context.Context, cluster string, o *clusterObjects, migrated *bool, t *Trust) (*Listing, error) {
	s, snapSigned, ok, err := c.newestSnapshot(ctx, cluster, o)
	if err != nil {
		return nil, err
	}
	// vouched: the facts s records are believed, so a compaction of it
	// may be signed.
	vouched := false
	if ok {
		switch {
		case t.Checks():
			ok = snapSigned != "" && t.keys[snapSigned] != nil && s.factual()
			vouched = ok
		case c.Signer != nil:
			vouched = snapSigned == c.Signer.Fingerprint() && s.factual()
		}
	}
	if !ok && len(o.snapshots) == 0 {
		if migrated == nil {
			done, err := c.migrated(ctx)
			if err != nil {
				return nil, err
			}
			migrated = &done
		}
		if *migrated {
			// A cluster born after the migration: its events are all
			// there is.
			s, ok, vouched = &snapshot{APIVersion: requests.APIVersion, Kind: KindCatalogSnapshot, Cluster: cluster, Entries: []snapEntry{}}, true, true
		}
	}
	// A signed snapshot is superseded only by a signed one (else readers
	// that check signatures would walk): after a walk, by a writer with a
	// signing key; from the snapshot itself, only by one that vouches for
	// it (a trusted signature, or its own).
	mayWrite := c.Writer != nil && (c.Signer != nil || snapSigned == "")
	mayCompact := c.Writer != nil && (snapSigned == "" || (vouched && c.Signer != nil))
	if !ok && c.noWalk {
		return nil, nil
	}
	if !ok {
		l, err := ListAll(ctx, c.Bucket, Filter{Cluster: cluster, Trust: c.walkTrust(t)})
		if err != nil {
			return nil, err
		}
		if mayWrite && (len(l.Entries) > 0 || len(l.Damaged) > 0) {
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compactTimeout)
			defer cancel()
			if writePointers(wctx, c.Writer, l.Entries) == nil {
				_ = c.compact(wctx, cluster, fromWalk(cluster, l, o, c.Signer != nil), o, c.Signer != nil)
			}
		}
		return l, nil
	}
	facts := t.Checks() || (vouched && c.Signer != nil)
	fresh, err := c.apply(ctx, cluster, s, o, facts)
	if err != nil {
		return nil, err
	}
	l := s.listing(cluster, t)
	if mayCompact && fresh > CompactAfter {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compactTimeout)
		defer cancel()
		_ = c.compact(wctx, cluster, s, o, vouched && facts && c.Signer != nil)
	}
	return l, nil
}

// listing turns a snapshot into a Listing, judging each entry's
// signature facts by t (a verification whose signature t does not trust
// is dropped, as a walk ignores it).
func (s *snapshot) listing(cluster string, t *Trust) *Listing {
	l := &Listing{Entries: make([]Entry, 0, len(s.Entries)), Damaged: s.Damaged}
	for _, se := range s.Entries {
		x := se.Index
		e := Entry{BackupIndex: x, Verification: se.Verification, ListedKey: requests.IndexKey(cluster, x.Source, x.BackupID),
			written: se.Written, verificationWritten: se.VerificationWritten, Signature: Signature{State: SigUnchecked}}
		if se.Signature != nil {
			e.Signature = t.judge(se.Signature.facts())
		}
		if se.Verification != nil && se.VerificationSignature != nil {
			e.verificationSig = t.judge(se.VerificationSignature.facts())
			if e.verificationSig.State == SigUntrusted {
				e.Verification, e.verificationWritten = nil, time.Time{}
			}
		}
		l.Entries = append(l.Entries, e)
	}
	sortListing(l)
	return l
}

// newestSnapshot reads the newest snapshot by the bucket's clock and
// believes it only where it is (checkSnapshot). ok is false when there
// is none, or the newest is not believed: it counts as absent. The
// bucket's own errors (an unreachable store) are returned: they are no
// reason to walk every index. signedBy is the fingerprint of the key whose
// valid signature (CatalogNamespace) lies beside it, trusted or not (""
// when none does).
func (c Catalog) newestSnapshot(ctx context.Context, cluster string, o *clusterObjects) (s *snapshot, signedBy string, ok bool, err error) {
	if len(o.snapshots) == 0 {
		return nil, "", false, nil
	}
	newest := o.snapshots[0]
	for _, s := range o.snapshots[1:] {
		if s.LastModified.After(newest.LastModified) || (s.LastModified.Equal(newest.LastModified) && s.Key > newest.Key) {
			newest = s
		}
	}
	data, info, err := bucket.GetBytesLimit(ctx, c.Bucket, newest.Key, MaxSnapshotSize)
	switch {
	case errors.Is(err, bucket.ErrNotFound), errors.Is(err, bucket.ErrTooLarge):
		return nil, "", false, nil
	case err != nil:
		return nil, "", false, err
	}
	if o.sigs[SignatureKey(newest.Key)] {
		sig, _, err := bucket.GetBytesLimit(ctx, c.Bucket, SignatureKey(newest.Key), sshsig.MaxSize)
		switch {
		case err == nil:
			signedBy = sigFacts(CatalogNamespace, data, sig, true).by
		case !errors.Is(err, bucket.ErrNotFound) && !errors.Is(err, bucket.ErrTooLarge):
			return nil, "", false, err
		}
	}
	s = &snapshot{}
	if json.Unmarshal(data, s) != nil || checkSnapshot(cluster, s, info.LastModified) != nil {
		return nil, signedBy, false, nil
	}
	return s, signedBy, true, nil
}

// checkSnapshot believes a snapshot of cluster written when the bucket's
// clock said modified only where each entry would be believed as an
// index at its own key (check), written no later than the snapshot.
func checkSnapshot(cluster string, s *snapshot, modified time.Time) error {
	if s.APIVersion != requests.APIVersion || s.Kind != KindCatalogSnapshot || s.Cluster != cluster {
		return fmt.Errorf("not a catalog snapshot of cluster %s", cluster)
	}
	seen := map[string]bool{}
	limit := modified.Add(MaxClockSkew)
	for i, se := range s.Entries {
		x := se.Index
		if x == nil || x.APIVersion != requests.APIVersion || x.Kind != KindIndex {
			return fmt.Errorf("entries[%d]: not an index", i)
		}
		if seen[x.BackupID] {
			return fmt.Errorf("entries[%d]: backup %s twice", i, x.BackupID)
		}
		seen[x.BackupID] = true
		if se.Written.IsZero() || se.Written.After(limit) {
			return fmt.Errorf("entries[%d]: written after the snapshot", i)
		}
		if d := check(requests.IndexKey(cluster, x.Source, x.BackupID), x, se.Written); d != nil {
			return d
		}
		if v := se.Verification; v != nil {
			if se.VerificationWritten.IsZero() || se.VerificationWritten.After(limit) {
				return fmt.Errorf("entries[%d]: verification written after the snapshot", i)
			}
			if why := checkVerification(requests.VerifyKey(cluster, x.Source, x.BackupID, v.VerifiedAt), x.BackupID, v, se.VerificationWritten); why != "" {
				return fmt.Errorf("entries[%d]: verification: %s", i, why)
			}
		}
	}
	for i, d := range s.Damaged {
		if d.Cluster != cluster {
			return fmt.Errorf("damaged[%d]: another cluster's", i)
		}
	}
	return nil
}

// apply reads the events of o that s does not hold and merges them into
// s: commits add an entry, verifications replace an older one, deletions
// remove the entry. Each event is believed only where it is, like the
// object it copies. With facts, the signature of each index and
// verification an event adds is read from beside the object the event
// copies (backupIndex.json.sig, verify-<time>.json.sig) and checked
// against the event's bytes: the entry records what was found. It returns
// how many events were read.
func (c Catalog) apply(ctx context.Context, cluster string, s *snapshot, o *clusterObjects, facts bool) (int, error) {
	folded := make(map[string]bool, len(s.Folded))
	for _, k := range s.Folded {
		folded[k] = true
	}
	var todo []bucket.ObjectInfo
	for _, ev := range o.events {
		if !folded[ev.Key] {
			todo = append(todo, ev)
		}
	}
	if len(todo) == 0 {
		return 0, nil
	}
	type read struct {
		data []byte
		info bucket.ObjectInfo
		err  error
	}
	got := make([]read, len(todo))
	parallel(len(todo), 16, func(i int) error {
		limit := int64(MaxVerificationSize)
		if path.Base(todo[i].Key) == eventIndex {
			limit = MaxIndexSize
		}
		if own := recalledEvent(c.Bucket, todo[i]); own != nil && int64(len(own)) <= limit {
			got[i].data, got[i].info = own, todo[i]
			return nil
		}
		got[i].data, got[i].info, got[i].err = bucket.GetBytesLimit(ctx, c.Bucket, todo[i].Key, limit)
		return nil
	})
	byID := map[string]int{}
	for i, se := range s.Entries {
		byID[se.Index.BackupID] = i
	}
	deleted := map[string]bool{}
	// The signatures to read, by entry: [0] the index's, [1] the
	// verification's.
	type sigRead struct {
		key, namespace string
		data           []byte
		out            **snapSig
	}
	pending := map[[2]int]sigRead{}
	// Commits first, then verifications, then deletions.
	for pass := 0; pass < 3; pass++ {
		for i, ev := range todo {
			r := got[i]
			if r.err != nil && !errors.Is(r.err, bucket.ErrTooLarge) {
				if errors.Is(r.err, bucket.ErrNotFound) {
					continue // compacted meanwhile: the next snapshot holds it
				}
				return 0, r.err
			}
			id, name := eventID(cluster, ev.Key)
			if id == "" {
				continue
			}
			switch {
			case pass == 0 && name == eventIndex:
				x, d := decodeEvent(cluster, id, ev.Key, r.data, r.info.LastModified, r.err)
				if d != nil {
					s.Damaged = append(s.Damaged, *d)
					continue
				}
				if _, ok := byID[id]; !ok {
					byID[id] = len(s.Entries)
					s.Entries = append(s.Entries, snapEntry{Index: x, Written: r.info.LastModified})
					if facts {
						j := byID[id]
						pending[[2]int{j, 0}] = sigRead{key: SignatureKey(x.Key()), namespace: IndexNamespace, data: r.data}
					}
				}
			case pass == 1 && strings.HasPrefix(name, requests.VerifyPrefix):
				j, ok := byID[id]
				if !ok || r.err != nil {
					continue
				}
				se := &s.Entries[j]
				var v Verification
				if json.Unmarshal(r.data, &v) != nil {
					continue
				}
				x := se.Index
				vkey := requests.VerifyKey(cluster, x.Source, id, v.VerifiedAt)
				if path.Base(vkey) != name || checkVerification(vkey, id, &v, r.info.LastModified) != "" {
					continue
				}
				if se.Verification == nil || v.VerifiedAt.After(se.Verification.VerifiedAt) {
					v.State = StateOf(&v)
					se.Verification, se.VerificationWritten, se.VerificationSignature = &v, r.info.LastModified, nil
					if facts {
						pending[[2]int{j, 1}] = sigRead{key: SignatureKey(vkey), namespace: VerificationNamespace, data: r.data}
					}
				}
			case pass == 2 && name == eventDeleted:
				var d deletion
				if r.err != nil || json.Unmarshal(r.data, &d) != nil || d.Kind != KindCatalogDeletion || d.BackupID != id || d.Cluster != cluster {
					continue
				}
				deleted[id] = true
			}
		}
	}
	if len(pending) > 0 {
		var reads []sigRead
		for k, p := range pending {
			p.out = &s.Entries[k[0]].Signature
			if k[1] == 1 {
				p.out = &s.Entries[k[0]].VerificationSignature
			}
			reads = append(reads, p)
		}
		errs := parallel(len(reads), 16, func(i int) error {
			p := reads[i]
			sig, _, err := bucket.GetBytesLimit(ctx, c.Bucket, p.key, sshsig.MaxSize)
			switch {
			case errors.Is(err, bucket.ErrNotFound):
				*p.out = toSnapSig(sigFacts(p.namespace, p.data, nil, false))
			case errors.Is(err, bucket.ErrTooLarge):
				*p.out = &snapSig{Invalid: "signature: " + err.Error()}
			case err != nil:
				return err
			default:
				*p.out = toSnapSig(sigFacts(p.namespace, p.data, sig, true))
			}
			return nil
		})
		if err := errors.Join(errs...); err != nil {
			return 0, err
		}
	}
	if len(deleted) > 0 {
		kept := s.Entries[:0]
		for _, se := range s.Entries {
			if !deleted[se.Index.BackupID] {
				kept = append(kept, se)
			}
		}
		s.Entries = kept
		damaged := s.Damaged[:0]
		for _, d := range s.Damaged {
			if !deleted[d.BackupID] {
				damaged = append(damaged, d)
			}
		}
		s.Damaged = damaged
	}
	for _, ev := range todo {
		s.Folded = append(s.Folded, ev.Key)
	}
	return len(todo), nil
}

// eventID splits an event key of cluster into the backup id and the
// event's name ("index.json", "verify-….json", "deleted.json").
func eventID(cluster, key string) (string, string) {
	rest, ok := strings.CutPrefix(key, requests.CatalogClusterDir(cluster)+"new/")
	if !ok {
		return "", ""
	}
	id, name, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(name, "/") || requests.ValidateID(id) != nil {
		return "", ""
	}
	return id, name
}

// decodeEvent believes a commit event as it would the index it copies:
// read at the index's own key (the cluster's and the event folder's id),
// written when the event was.
func decodeEvent(cluster, id, key string, data []byte, modified time.Time, rerr error) (*BackupIndex, *Damaged) {
	bad := func(format string, args ...any) *Damaged {
		return &Damaged{Key: key, Cluster: cluster, BackupID: id, Reason: fmt.Sprintf(format, args...)}
	}
	if rerr != nil {
		return nil, bad("%v", rerr)
	}
	var peek struct {
		Source string `json:"source"`
	}
	if err := json.Unmarshal(data, &peek); err != nil || requests.ValidateName(peek.Source) != nil {
		return nil, bad("catalog event is not a backup index of this cluster")
	}
	x, d := decode(requests.IndexKey(cluster, peek.Source, id), data, modified)
	if d != nil {
		dd := d.Damaged
		dd.Reason = "catalog event " + key + ": " + dd.Reason
		return nil, &dd
	}
	return x, nil
}

// compact writes s as the cluster's newest snapshot, then deletes the
// events it folded and the snapshots it supersedes that are older than
// CatalogGrace by the bucket's clock.
// With sign (and a Signer), the snapshot's signature is written first,
// beside it.
func (c Catalog) compact(ctx context.Context, cluster string, s *snapshot, o *clusterObjects, sign bool) error {
	// Folded names only events that are still there: the list does not
	// grow with every event ever deleted.
	listed := make(map[string]bool, len(o.events))
	for _, ev := range o.events {
		listed[ev.Key] = true
	}
	s.Folded = slices.DeleteFunc(s.Folded, func(k string) bool { return !listed[k] })
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	key := requests.CatalogClusterDir(cluster) + snapshotPrefix + time.Now().UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(rnd[:]) + ".json"
	if sign && c.Signer != nil && s.factual() {
		if err := c.Signer.putSignature(ctx, c.Writer, key, CatalogNamespace, data, bucket.PutOptions{}); err != nil {
			return err
		}
	}
	info, err := bucket.PutBytes(ctx, c.Writer, key, data, bucket.PutOptions{IfNoneMatch: true, ContentType: "application/json"})
	if err != nil {
		return fmt.Errorf("write catalog snapshot %s: %w", key, err)
	}
	now := info.ServerTime
	if now.IsZero() {
		now = info.LastModified
	}
	if now.IsZero() {
		return nil
	}
	folded := make(map[string]bool, len(s.Folded))
	for _, k := range s.Folded {
		folded[k] = true
	}
	var gone []string
	for _, ev := range o.events {
		if folded[ev.Key] && now.Sub(ev.LastModified) > CatalogGrace {
			gone = append(gone, ev.Key)
		}
	}
	for _, m := range o.markers {
		if now.Sub(m.LastModified) > CatalogGrace {
			gone = append(gone, m.Key)
		}
	}
	for _, old := range o.snapshots {
		if now.Sub(old.LastModified) > CatalogGrace {
			gone = append(gone, old.Key)
			if o.sigs[SignatureKey(old.Key)] {
				gone = append(gone, SignatureKey(old.Key))
			}
		}
	}
	// In one call where the bucket deletes in batches: no order among
	// them matters (the snapshot just written holds every event folded).
	return bucket.DeleteKeys(ctx, c.Writer, gone...)
}

// Compact rewrites cluster's catalog from a walk of its indexes (every
// index read again, so that a backup deleted by hand, which left no
// deletion event, leaves the listing). Maintenance runs it now and then
// (a daily pass is plenty); listings never need it to be correct about
// what capsule itself wrote.
func (c Catalog) Compact(ctx context.Context, cluster string) error {
	if c.Writer == nil {
		return errors.New("compact the catalog: no write access")
	}
	objs, err := scanCatalog(ctx, c.Bucket, requests.CatalogClusterDir(cluster))
	if err != nil {
		return err
	}
	o := objs[cluster]
	if o == nil {
		o = &clusterObjects{sigs: map[string]bool{}}
	}
	l, err := ListAll(ctx, c.Bucket, Filter{Cluster: cluster, Trust: c.walkTrust(nil)})
	if err != nil {
		return err
	}
	if err := writePointers(ctx, c.Writer, l.Entries); err != nil {
		return err
	}
	return c.compact(ctx, cluster, fromWalk(cluster, l, o, c.Signer != nil), o, c.Signer != nil)
}

func sortListing(l *Listing) {
	sort.Slice(l.Entries, func(i, j int) bool {
		x, y := l.Entries[i], l.Entries[j]
		if !x.FinishedAt.Equal(y.FinishedAt) {
			return x.FinishedAt.After(y.FinishedAt)
		}
		return x.BackupID > y.BackupID
	})
	sort.Slice(l.Damaged, func(i, j int) bool { return l.Damaged[i].Key < l.Damaged[j].Key })
}
