package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/index"
	"github.com/cnvrg/capsule/pitr"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// The CnvrgApp resource.
const (
	Group    = "mlops.cnvrg.io"
	Version  = "v1"
	Resource = "cnvrgapps"
)

// CnvrgApps returns the GroupVersionResource of CnvrgApp.
func CnvrgApps() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}
}

// Config configures a Scanner.
type Config struct {
	// Dynamic reads CnvrgApps and PVCs; Kube reads Secrets, writes Events
	// and asks what the role allows (SelfSubjectAccessReviews). Both
	// required.
	Dynamic dynamic.Interface
	Kube    kubernetes.Interface
	// Namespaces is the allow-list of namespaces to watch; empty means
	// all.
	Namespaces []string
	// Poll is how often CnvrgApps and PVCs are listed where the role may
	// list but not watch them (default 30s; the operator's ClusterRole
	// has no watch).
	Poll time.Duration
	// StagingDir is where restores of PostgreSQL plans stage archives
	// (the sources' stagingDir): "capsule start" sets the operator's
	// mounted PVC. Empty: the engine's default ($TMPDIR).
	StagingDir string
	// Damaged reports the damaged indexes retention meets (each key
	// once); the metrics registry's, so they are counted. Default: logged.
	Damaged *index.Reporter
	// Trust judges backups' signatures for retention and scheduled
	// verifications: an untrusted backup is neither counted, deleted nor
	// verified. Nil checks none.
	Trust *index.Trust
	// WrapBucket, when set, wraps each bucket client the scanner opens
	// (metrics.InstrumentBucket): the scanner, retention and the fleet's
	// watchers then all use the wrapped client.
	WrapBucket func(key string, b bucket.Bucket) bucket.Bucket
	// Cluster, when set, is the cluster of every plan instead of the
	// CnvrgApp's <namespace>/<name>.
	Cluster string
	// Engines, when set, checks each plan's source with its engine, so a
	// block this binary cannot run is reported rather than scheduled.
	Engines *engines.Registry
	// Prefix is capsule's prefix inside each bucket (default capsule/).
	Prefix string
	// HostFor returns the host of a service; default <svcName>.<namespace>.
	// Tests that run the services on loopback set it.
	HostFor func(svcName, namespace string) string
	// Holder names this replica in Events and retention locks (default
	// host/pid).
	Holder string
	// Tick is the longest time between two passes over the plans
	// (default 10s); a pass also runs at each slot's start and after each
	// change of a CnvrgApp.
	Tick time.Duration
	// Resync is the CnvrgApp informers' resync period (default 10m).
	Resync time.Duration
	// SecretRefresh is how often the Secrets the plans name are read
	// again (default 1m): a changed Secret is seen within this time. The
	// scanner reads Secrets one by one, by name, never by listing them.
	SecretRefresh time.Duration
	// RetentionLease is the length of a retention lock (default
	// retention.DefaultLease).
	RetentionLease time.Duration
	Log            logrus.FieldLogger
	// Events, when set, is told what the scanner did (tests wait on it).
	Events func(Event)
}

// Event is something the scanner did.
type Event struct {
	Type EventType
	Plan string
	// ID is the request's id.
	ID   string
	Kind requests.Kind
	// Status is a finished backup's status (EventBackupEnded).
	Status requests.Status
	// Retention is what a retention run did, and Rotation the number of
	// backups it kept (EventRetention).
	Retention *retention.Report
	Rotation  int
	Err       error
}

// EventType names an Event.
type EventType string

// The event types.
const (
	// EventPlans: the plans were rebuilt (ID is empty).
	EventPlans EventType = "plans"
	// EventSubmitted: this replica wrote the request.
	EventSubmitted EventType = "submitted"
	// EventExists: the request of the slot was already there.
	EventExists EventType = "exists"
	// EventBackupEnded: the slot's backup ended (Status).
	EventBackupEnded EventType = "backup-ended"
	// EventRetention: retention ran after a successful backup.
	EventRetention EventType = "retention"
	// EventProblem: an invalid block was reported (Err).
	EventProblem EventType = "problem"
	// EventMissed: a scheduled backup did not happen (Err says how): its
	// slot passed with no backup submitted, or the backup never ended.
	EventMissed EventType = "missed"
)

// Validate fills defaults and checks the configuration, naming the bad
// setting.
func (c *Config) Validate() error {
	if c.Dynamic == nil || c.Kube == nil {
		return errors.New("scanner: Dynamic and Kube clients are required")
	}
	for _, ns := range c.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("namespaces: %q is not a namespace name: %s", ns, errs[0])
		}
	}
	if c.Cluster != "" {
		if err := requests.ValidateName(c.Cluster); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	if c.Prefix == "" {
		c.Prefix = bucketurl.DefaultPrefix
	}
	if c.HostFor == nil {
		c.HostFor = func(svc, ns string) string { return svc + "." + ns }
	}
	if c.Holder == "" {
		host, _ := os.Hostname()
		c.Holder = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	if c.Tick == 0 {
		c.Tick = 10 * time.Second
	}
	if c.Resync == 0 {
		c.Resync = 10 * time.Minute
	}
	if c.Poll == 0 {
		c.Poll = DefaultPoll
	}
	if c.SecretRefresh == 0 {
		c.SecretRefresh = time.Minute
	}
	if c.RetentionLease == 0 {
		c.RetentionLease = retention.DefaultLease
	}
	if c.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		c.Log = l
	}
	switch {
	case c.Tick < 10*time.Millisecond:
		return fmt.Errorf("tick: must be at least 10ms, got %s", c.Tick)
	case c.Resync < 0:
		return fmt.Errorf("resync: must not be negative, got %s", c.Resync)
	case c.SecretRefresh < 100*time.Millisecond:
		return fmt.Errorf("secretRefresh: must be at least 100ms, got %s", c.SecretRefresh)
	case c.Poll < 10*time.Millisecond:
		return fmt.Errorf("poll: must be at least 10ms, got %s", c.Poll)
	case c.StagingDir != "" && !filepath.IsAbs(c.StagingDir):
		return fmt.Errorf("stagingDir: %q is not an absolute path", c.StagingDir)
	}
	return nil
}

// DefaultPoll is Config.Poll's default.
const DefaultPoll = 30 * time.Second

// Scanner watches CnvrgApps, derives plans, and drops their scheduled
// requests. Every replica runs the same schedule; create-only writes make
// exactly one request per slot.
type Scanner struct {
	cfg    Config
	log    logrus.FieldLogger
	parser *parser

	mu   sync.RWMutex
	snap *snapshot
	// changed is closed (and replaced) when the set of buckets changes,
	// plansChanged when the plans do.
	changed      chan struct{}
	plansChanged chan struct{}
	synced       chan struct{}
	// retired are plans that disappeared, by name, with when: requests
	// submitted before still resolve their source for RetiredSources.
	retired map[string]retiredPlan

	poke chan struct{}
	// noted are the notices (Config-independent facts about plans)
	// logged already, by key.
	notedMu sync.Mutex
	noted   map[string]bool
	// The rest belongs to the Run goroutine.
	reported  map[string]bool
	state     map[string]*planState
	retention map[string]*retentionRunner
	// events: the namespaces ("" for all) where the role may create
	// Events; nil before Run asked.
	events map[string]bool
}

type retiredPlan struct {
	plan Plan
	at   time.Time
}

// RetiredSources is how long the source of a plan that disappeared (its
// CnvrgApp deleted, its backup disabled) still resolves, so that the
// requests submitted before finish rather than fail.
const RetiredSources = time.Hour

type snapshot struct {
	plans    []Plan
	byName   map[string]Plan
	problems []Problem
	// buckets by BucketSpec.Key (URL and credentials), and the specs
	// they were opened from.
	buckets map[string]bucket.Bucket
	specs   map[string]BucketSpec
}

// New checks cfg and returns a Scanner. It does not contact the API server.
func New(cfg Config) (*Scanner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Scanner{
		cfg:          cfg,
		log:          cfg.Log.WithField("component", "scanner"),
		snap:         &snapshot{byName: map[string]Plan{}, buckets: map[string]bucket.Bucket{}, specs: map[string]BucketSpec{}},
		changed:      make(chan struct{}),
		plansChanged: make(chan struct{}),
		synced:       make(chan struct{}),
		retired:      map[string]retiredPlan{},
		poke:         make(chan struct{}, 1),
		reported:     map[string]bool{},
		state:        map[string]*planState{},
		retention:    map[string]*retentionRunner{},
		noted:        map[string]bool{},
	}
	s.parser = &parser{cluster: cfg.Cluster, prefix: cfg.Prefix, hostFor: cfg.HostFor, engines: cfg.Engines, fp: newFingerprinter(),
		stagingDir: cfg.StagingDir, notice: s.notice}
	return s, nil
}

// notice logs msg once per key for the life of the Scanner.
func (s *Scanner) notice(key string, fields logrus.Fields, msg string) {
	s.notedMu.Lock()
	seen := s.noted[key]
	s.noted[key] = true
	s.notedMu.Unlock()
	if !seen {
		s.log.WithFields(fields).Info(msg)
	}
}

// Result is the outcome of one scan: the plans and the invalid blocks.
type Result struct {
	Plans    []Plan    `json:"plans"`
	Problems []Problem `json:"problems"`
}

// Scan reads every CnvrgApp, every annotated PVC and the Secrets they
// name once, straight from the API server, and returns the plans. It
// writes nothing (no Events) and does not touch any bucket: `capsule scan
// --once`. What the role does not let it read is logged and left out.
func (s *Scanner) Scan(ctx context.Context) (*Result, error) {
	acc, err := s.checkAccess(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.report(acc); err != nil {
		return nil, err
	}
	ps := *s.parser
	ps.secret = newSecretCache(s.cfg.Kube, s.log).get
	apps := s.newFeeds(CnvrgApps(), acc.apps)
	pvcs := s.newFeeds(PersistentVolumeClaims(), acc.pvcs)
	for _, f := range append(append([]*feed(nil), apps...), pvcs...) {
		s.poll(ctx, f)
		if f.failing && ctx.Err() == nil {
			return nil, fmt.Errorf("list %s in %s: failed (see the log)", f.gvr.GroupResource(), nsName(f.ns))
		}
	}
	res := &Result{Plans: []Plan{}, Problems: []Problem{}}
	for _, r := range ps.scan(ctx, objectsOf(apps), objectsOf(pvcs), knownIn(apps)) {
		res.Plans = append(res.Plans, r.plans...)
		res.Problems = append(res.Problems, r.problems...)
	}
	return res, ctx.Err()
}

// objectsOf returns what the feeds hold.
func objectsOf(feeds []*feed) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, f := range feeds {
		out = append(out, f.objects()...)
	}
	return out
}

// knownIn reports, for a namespace, whether the feeds (of CnvrgApps) have
// read it.
func knownIn(feeds []*feed) func(ns string) bool {
	return func(ns string) bool {
		for _, f := range feeds {
			if (f.ns == "" || f.ns == ns) && f.known() {
				return true
			}
		}
		return false
	}
}

func (s *Scanner) namespaces() []string {
	if len(s.cfg.Namespaces) == 0 {
		return []string{metav1.NamespaceAll}
	}
	return s.cfg.Namespaces
}

// sortObjects sorts objects by namespace and name, in place.
func sortObjects(apps []*unstructured.Unstructured) []*unstructured.Unstructured {
	sort.Slice(apps, func(i, j int) bool {
		if apps[i].GetNamespace() != apps[j].GetNamespace() {
			return apps[i].GetNamespace() < apps[j].GetNamespace()
		}
		return apps[i].GetName() < apps[j].GetName()
	})
	return apps
}

// Plans returns the current plans, sorted by name.
func (s *Scanner) Plans() []Plan {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]Plan(nil), s.snap.plans...)
}

// Problems returns the invalid blocks of the last scan.
func (s *Scanner) Problems() []Problem {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]Problem(nil), s.snap.problems...)
}

// Buckets returns the buckets the plans name, by BucketSpec.Key: the URL
// and the identity of the credentials, so two Secrets that name one bucket
// with different keys give two clients. Each is scoped to capsule's
// prefix. Sources(key) are the sources a request found in it may use.
func (s *Scanner) Buckets() map[string]bucket.Bucket {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m := make(map[string]bucket.Bucket, len(s.snap.buckets))
	for k, v := range s.snap.buckets {
		m[k] = v
	}
	return m
}

// Changed returns a channel that is closed at the next change of Buckets.
func (s *Scanner) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// PlansChanged returns a channel that is closed at the next change of the
// plans (any setting, a Secret's value included) or of Buckets.
func (s *Scanner) PlansChanged() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.plansChanged
}

// PITRJobs returns the point-in-time recovery jobs of the plans with
// PITR on, by "plan/<plan name>", for the workers to run (pitr.Jobs):
// each plan's WAL stream writes into its own bucket's client, the one
// Buckets has under the plan's key, and nowhere else; its lease is in
// that bucket, so the workers of every replica compete for one. The
// source's password is the plan's latest, asked at each connection, so
// a changed Secret needs no restart of the stream.
func (s *Scanner) PITRJobs() map[string]pitr.Job {
	s.mu.RLock()
	defer s.mu.RUnlock()
	jobs := map[string]pitr.Job{}
	for _, p := range s.snap.plans {
		b, ok := s.snap.buckets[p.Bucket.Key()]
		if !p.PITR || !ok {
			continue
		}
		src := p.Source()
		name := p.Name
		src.Password = func(ctx context.Context) (string, error) {
			cur, ok := s.plan(name)
			if !ok {
				return "", fmt.Errorf("plan %s is gone", name)
			}
			return cur.Source().Secret(ctx)
		}
		jobs["plan/"+p.Name] = pitr.Job{Bucket: b, Cluster: p.Cluster, Source: src}
	}
	return jobs
}

// Synced returns a channel closed once Run has built the first plans.
func (s *Scanner) Synced() <-chan struct{} { return s.synced }

// Sources returns the sources that the bucket Buckets()[key] serves, for
// its executor: exactly the sources of the plans whose bucket client it is
// (a plan's name is its source's name), and those of such plans retired
// less than RetiredSources ago. Any other name, another bucket's plan or a
// source of the worker's configuration included, is an error that says
// the source "is not served by this bucket", so a request written into one
// tenant's bucket can never touch another tenant's data.
func (s *Scanner) Sources(key string) executor.Sources { return sources{s: s, key: key} }

type sources struct {
	s   *Scanner
	key string
}

func (x sources) Lookup(name string) (engines.Source, error) {
	p, ok := x.s.plan(name)
	if ok && p.Bucket.Key() != x.key && p.Bucket.URL() == bucketURLOfKey(x.key) {
		// The same bucket, named by another Secret with other keys: that
		// client's watcher runs it.
		return engines.Source{}, fmt.Errorf("source %q: %w", name, executor.ErrServedElsewhere)
	}
	if !ok || p.Bucket.Key() != x.key {
		return engines.Source{}, x.s.NotServed(name)
	}
	return p.Source(), nil
}

// bucketURLOfKey returns the URL part of a bucket client's Key.
func bucketURLOfKey(key string) string {
	if i := strings.LastIndexByte(key, '#'); i >= 0 {
		return key[:i]
	}
	return key
}

// plan returns the current plan of that name, else a recently retired one.
func (s *Scanner) plan(name string) (Plan, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p, ok := s.snap.byName[name]; ok {
		return p, true
	}
	if r, ok := s.retired[name]; ok && time.Since(r.at) < RetiredSources {
		return r.plan, true
	}
	return Plan{}, false
}

// NotServed returns the error for a source a bucket does not serve. It
// wraps executor.ErrUnknownSource, so the request ends rejected, and, when
// some plan (of another bucket) has the name, executor.ErrNotServed, so a
// backup made from it is not restored here either. Its message is the same
// either way: it tells a tenant nothing about other tenants' sources. The
// worker's own bucket (--bucket) uses it for the plans' names.
func (s *Scanner) NotServed(name string) error {
	_, known := s.plan(name)
	return &notServedError{name: name, known: known}
}

type notServedError struct {
	name  string
	known bool
}

func (e *notServedError) Error() string {
	return fmt.Sprintf("source %q is not served by this bucket", e.name)
}

func (e *notServedError) Is(target error) bool {
	return target == executor.ErrUnknownSource || (e.known && target == executor.ErrNotServed)
}

// Run follows CnvrgApps and the operator's annotated PVCs until ctx is
// done, reading the Secrets they name by name, rebuilding the plans on
// every change and every SecretRefresh, and drops each plan's requests at
// its slots. It first asks the API server what its role allows (and logs,
// once, what it cannot do): where it may watch a resource it runs an
// informer, where it may only list it (the operator's ClusterRole) it
// lists it every Config.Poll, and where it may not list it, it does
// without. It returns nil when ctx ends, or an error when the role can
// read neither CnvrgApps nor PVCs, or the informers cannot start.
//
// It never lists or watches Secrets: get on the Secrets the plans name is
// the only access to Secrets it needs.
func (s *Scanner) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	acc, err := s.checkAccess(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := s.report(acc); err != nil {
		return err
	}
	s.events = acc.events
	apps := s.newFeeds(CnvrgApps(), acc.apps)
	pvcs := s.newFeeds(PersistentVolumeClaims(), acc.pvcs)
	var (
		synced []cache.InformerSynced
		polled []*feed
	)
	for _, f := range append(append([]*feed(nil), apps...), pvcs...) {
		hs, err := s.start(ctx, f, s.wake)
		if err != nil {
			return err
		}
		if hs != nil {
			synced = append(synced, hs)
		} else {
			polled = append(polled, f)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, f := range append(append([]*feed(nil), apps...), pvcs...) {
		if f.inf == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.inf.RunWithContext(ctx)
		}()
	}
	s.log.WithFields(logrus.Fields{"namespaces": nsNames(s.namespaces()), "cnvrgapps": modes(apps), "pvcs": modes(pvcs)}).Info("scanner started")
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended
	}
	secrets := newSecretCache(s.cfg.Kube, s.log)
	ps := *s.parser
	ps.secret = secrets.get
	rebuild := func() {
		secrets.keep(s.rebuild(ctx, &ps, ps.scan(ctx, objectsOf(apps), objectsOf(pvcs), knownIn(apps))))
	}
	rebuild()
	close(s.synced)
	refresh := time.NewTicker(s.cfg.SecretRefresh)
	defer refresh.Stop()
	var pollC <-chan time.Time
	if len(polled) > 0 {
		t := time.NewTicker(s.cfg.Poll)
		defer t.Stop()
		pollC = t.C
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			s.log.Info("scanner stopped")
			return nil
		case <-s.poke:
			rebuild()
		case <-pollC:
			changed := false
			for _, f := range polled {
				if s.poll(ctx, f) {
					changed = true
				}
			}
			if changed {
				rebuild()
			}
		case <-refresh.C:
			secrets.expire()
			rebuild()
		case <-timer.C:
		}
		next := s.pass(ctx, time.Now())
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Until(next))
	}
}

// modes describes how the feeds follow their resource, by namespace.
func modes(feeds []*feed) map[string]string {
	out := map[string]string{}
	for _, f := range feeds {
		m := f.mode.String()
		if f.inf == nil && f.mode == modeWatch {
			m = "list"
		}
		out[nsName(f.ns)] = m
	}
	return out
}

func (s *Scanner) wake() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// secretCache reads Secrets by name (get, never list or watch) and keeps
// what it read until expire, so that rebuilds between two refreshes cost
// no API call. A Secret that could not be read is asked for again at the
// next rebuild. Only the Run goroutine uses it.
type secretCache struct {
	kube kubernetes.Interface
	log  logrus.FieldLogger
	// fresh are the Secrets read since the last expire; last are the
	// latest good reads, used when the API server fails for a moment.
	fresh, last map[string]map[string][]byte
}

func newSecretCache(kube kubernetes.Interface, log logrus.FieldLogger) *secretCache {
	return &secretCache{kube: kube, log: log, fresh: map[string]map[string][]byte{}, last: map[string]map[string][]byte{}}
}

func (c *secretCache) get(ctx context.Context, ns, name string) (map[string][]byte, error) {
	key := ns + "/" + name
	if d, ok := c.fresh[key]; ok {
		return d, nil
	}
	sec, err := c.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		c.fresh[key], c.last[key] = sec.Data, sec.Data
		return sec.Data, nil
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err), ctx.Err() != nil:
		delete(c.last, key)
		return nil, err
	}
	if d, ok := c.last[key]; ok {
		c.log.WithError(err).WithField("secret", key).Warn("cannot read the Secret; using what was read before")
		return d, nil
	}
	return nil, err
}

// expire makes the next reads ask the API server again.
func (c *secretCache) expire() { c.fresh = map[string]map[string][]byte{} }

// keep forgets the Secrets no CnvrgApp names any more.
func (c *secretCache) keep(refs map[string]bool) {
	for k := range c.last {
		if !refs[k] {
			delete(c.last, k)
			delete(c.fresh, k)
		}
	}
}

// rebuild takes the plans of a scan, reports new problems, and opens the
// buckets the plans name: one client per URL and credentials
// (BucketSpec.Key). It returns the Secrets (namespace/name) the CnvrgApps
// and PVCs name.
func (s *Scanner) rebuild(ctx context.Context, ps *parser, results []scanned) map[string]bool {
	next := &snapshot{byName: map[string]Plan{}, buckets: map[string]bucket.Bucket{}, specs: map[string]BucketSpec{}}
	refs := map[string]bool{}
	reported := map[string]bool{}
	for _, r := range results {
		for _, ref := range r.secrets {
			refs[ref] = true
		}
		for _, p := range r.problems {
			key := problemKey(r.obj, p)
			reported[key] = true
			if !s.reported[key] {
				s.reportProblem(ctx, r.obj, p, key)
			}
		}
		next.problems = append(next.problems, r.problems...)
		next.plans = append(next.plans, r.plans...)
	}
	s.reported = reported

	s.mu.RLock()
	prev := s.snap
	s.mu.RUnlock()
	kept := next.plans[:0]
	// The Secrets (namespace/name) behind each client, for the logs.
	secretsOf := map[string][]string{}
	for _, p := range next.plans {
		// Same URL and same credentials: one client. Different credentials
		// never share one, whatever the URL.
		key := p.Bucket.Key()
		if _, ok := next.specs[key]; ok {
			// opened for an earlier plan
		} else if old, ok := prev.specs[key]; ok {
			next.specs[key], next.buckets[key] = old, prev.buckets[key]
		} else {
			b, err := p.Bucket.open(ctx, s.cfg.Log)
			if err != nil {
				s.log.WithError(err).WithFields(logrus.Fields{"plan": p.Name, "bucket": key}).Warn("cannot open the plan's bucket; the plan waits")
				continue
			}
			if s.cfg.WrapBucket != nil {
				b = s.cfg.WrapBucket(key, b)
			}
			next.specs[key], next.buckets[key] = p.Bucket, b
		}
		secretsOf[key] = append(secretsOf[key], p.App.Namespace+"/"+p.Bucket.Secret)
		next.byName[p.Name] = p
		kept = append(kept, p)
	}
	next.plans = kept

	changed := len(next.buckets) != len(prev.buckets)
	for key, b := range next.buckets {
		if prev.buckets[key] != b {
			changed = true
		}
	}
	s.mu.Lock()
	now := time.Now()
	for name, p := range prev.byName {
		if _, ok := next.byName[name]; !ok {
			s.retired[name] = retiredPlan{plan: p, at: now}
		}
	}
	for name, r := range s.retired {
		if _, ok := next.byName[name]; ok || now.Sub(r.at) >= RetiredSources {
			delete(s.retired, name)
		}
	}
	s.snap = next
	if changed {
		close(s.changed)
		s.changed = make(chan struct{})
	}
	if changed || !reflect.DeepEqual(prev.plans, next.plans) {
		close(s.plansChanged)
		s.plansChanged = make(chan struct{})
	}
	s.mu.Unlock()
	if changed {
		keys := make([]string, 0, len(next.buckets))
		for k := range next.buckets {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		s.log.WithField("buckets", keys).Info("the set of buckets changed")
		s.warnShared(next, secretsOf)
	}
	names := make([]string, len(next.plans))
	for i, p := range next.plans {
		names[i] = p.Name
	}
	s.log.WithFields(logrus.Fields{"plans": names, "problems": len(next.problems)}).Debug("plans rebuilt")
	s.emit(Event{Type: EventPlans})
	return refs
}

// warnShared says when one bucket is named with different credentials:
// each set gets its own client and watcher, which serves only its own
// plans' sources, so a request of one may be claimed by the other's
// watcher and end rejected.
func (s *Scanner) warnShared(snap *snapshot, secretsOf map[string][]string) {
	byURL := map[string][]string{}
	for key, spec := range snap.specs {
		byURL[spec.URL()] = append(byURL[spec.URL()], key)
	}
	for url, keys := range byURL {
		if len(keys) < 2 {
			continue
		}
		sort.Strings(keys)
		var secrets []string
		for _, k := range keys {
			secrets = append(secrets, strings.Join(dedupe(sortedCopy(secretsOf[k])), ","))
		}
		s.log.WithFields(logrus.Fields{"bucket": url, "clients": keys, "secrets": secrets}).
			Warn("Secrets name the same bucket with different credentials: each gets its own client, which serves only its own plans' sources; give each tenant its own bucket")
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

func (s *Scanner) emit(e Event) {
	if s.cfg.Events != nil {
		s.cfg.Events(e)
	}
}
