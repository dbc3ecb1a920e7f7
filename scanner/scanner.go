package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/bucket/bucketurl"
	"github.com/cnvrg/capsule/engines"
	"github.com/cnvrg/capsule/executor"
	"github.com/cnvrg/capsule/requests"
	"github.com/cnvrg/capsule/retention"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	coreinformers "k8s.io/client-go/informers/core/v1"
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
	// Dynamic reads CnvrgApps; Kube reads Secrets and writes Events.
	// Both required.
	Dynamic dynamic.Interface
	Kube    kubernetes.Interface
	// Namespaces is the allow-list of namespaces to watch; empty means
	// all.
	Namespaces []string
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
	// change of a CnvrgApp or a Secret it uses.
	Tick time.Duration
	// Resync is the informers' resync period (default 10m).
	Resync time.Duration
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
	}
	return nil
}

// Scanner watches CnvrgApps, derives plans, and drops their scheduled
// requests. Every replica runs the same schedule; create-only writes make
// exactly one request per slot.
type Scanner struct {
	cfg    Config
	log    logrus.FieldLogger
	parser *parser

	mu   sync.RWMutex
	snap *snapshot
	// changed is closed (and replaced) when the set of buckets changes.
	changed chan struct{}
	synced  chan struct{}
	// secretRefs are the Secrets (namespace/name) the CnvrgApps name.
	secretRefs map[string]bool
	// retired are plans that disappeared, by name, with when: requests
	// submitted before still resolve their source for RetiredSources.
	retired map[string]retiredPlan

	poke chan struct{}
	// The rest belongs to the Run goroutine.
	reported  map[string]bool
	state     map[string]*planState
	retention map[string]*retentionRunner
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
	// buckets by BucketSpec.URL, and the specs they were opened from.
	buckets map[string]bucket.Bucket
	specs   map[string]BucketSpec
}

// New checks cfg and returns a Scanner. It does not contact the API server.
func New(cfg Config) (*Scanner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Scanner{
		cfg:        cfg,
		log:        cfg.Log.WithField("component", "scanner"),
		snap:       &snapshot{byName: map[string]Plan{}, buckets: map[string]bucket.Bucket{}, specs: map[string]BucketSpec{}},
		changed:    make(chan struct{}),
		synced:     make(chan struct{}),
		secretRefs: map[string]bool{},
		retired:    map[string]retiredPlan{},
		poke:       make(chan struct{}, 1),
		reported:   map[string]bool{},
		state:      map[string]*planState{},
		retention:  map[string]*retentionRunner{},
	}
	s.parser = &parser{cluster: cfg.Cluster, prefix: cfg.Prefix, hostFor: cfg.HostFor, engines: cfg.Engines}
	return s, nil
}

// Result is the outcome of one scan: the plans and the invalid blocks.
type Result struct {
	Plans    []Plan    `json:"plans"`
	Problems []Problem `json:"problems"`
}

// Scan reads every CnvrgApp and the Secrets they name once, straight from
// the API server, and returns the plans. It writes nothing (no Events) and
// does not touch any bucket: `capsule scan --once`.
func (s *Scanner) Scan(ctx context.Context) (*Result, error) {
	ps := *s.parser
	ps.secret = func(ctx context.Context, ns, name string) (map[string][]byte, error) {
		sec, err := s.cfg.Kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return sec.Data, nil
	}
	var apps []*unstructured.Unstructured
	for _, ns := range s.namespaces() {
		list, err := s.cfg.Dynamic.Resource(CnvrgApps()).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list cnvrgapps: %w", err)
		}
		for i := range list.Items {
			apps = append(apps, &list.Items[i])
		}
	}
	res := &Result{Plans: []Plan{}, Problems: []Problem{}}
	for _, app := range sortApps(apps) {
		r := ps.app(ctx, app)
		res.Plans = append(res.Plans, r.plans...)
		res.Problems = append(res.Problems, r.problems...)
	}
	return res, nil
}

func (s *Scanner) namespaces() []string {
	if len(s.cfg.Namespaces) == 0 {
		return []string{metav1.NamespaceAll}
	}
	return s.cfg.Namespaces
}

func sortApps(apps []*unstructured.Unstructured) []*unstructured.Unstructured {
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

// Buckets returns the buckets the plans name, by URL (BucketSpec.URL),
// each scoped to capsule's prefix. A bucket whose Secret changed is a new
// value under the same URL.
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

// Synced returns a channel closed once Run has built the first plans.
func (s *Scanner) Synced() <-chan struct{} { return s.synced }

// Sources resolves the plans' sources for an executor: a plan's name is
// its source's name.
func (s *Scanner) Sources() executor.Sources { return sources{s} }

type sources struct{ s *Scanner }

func (x sources) Lookup(name string) (engines.Source, error) {
	x.s.mu.RLock()
	p, ok := x.s.snap.byName[name]
	if r, retired := x.s.retired[name]; !ok && retired && time.Since(r.at) < RetiredSources {
		p, ok = r.plan, true
	}
	x.s.mu.RUnlock()
	if !ok {
		return engines.Source{}, fmt.Errorf("%w %q (no enabled backup block of a CnvrgApp has this name)", executor.ErrUnknownSource, name)
	}
	return p.Source(), nil
}

// Run watches CnvrgApps and the Secrets they name until ctx is done,
// rebuilding the plans on every change, and drops each plan's requests at
// its slots. It returns nil when ctx ends, or an error when the informers
// cannot start.
func (s *Scanner) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		appInformers    []cache.SharedIndexInformer
		secretInformers []cache.SharedIndexInformer
		synced          []cache.InformerSynced
	)
	poke := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.wake() },
		UpdateFunc: func(any, any) { s.wake() },
		DeleteFunc: func(any) { s.wake() },
	}
	pokeSecret := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if m, err := metaKey(obj); err == nil && s.refersTo(m) {
			s.wake()
		}
	}
	secretHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    pokeSecret,
		UpdateFunc: func(_, obj any) { pokeSecret(obj) },
		DeleteFunc: pokeSecret,
	}
	for _, ns := range s.namespaces() {
		ai := dynamicinformer.NewFilteredDynamicInformer(s.cfg.Dynamic, CnvrgApps(), ns, s.cfg.Resync, cache.Indexers{}, nil).Informer()
		si := coreinformers.NewSecretInformer(s.cfg.Kube, ns, s.cfg.Resync, cache.Indexers{})
		if _, err := ai.AddEventHandler(poke); err != nil {
			return err
		}
		if _, err := si.AddEventHandler(secretHandler); err != nil {
			return err
		}
		appInformers = append(appInformers, ai)
		secretInformers = append(secretInformers, si)
		synced = append(synced, ai.HasSynced, si.HasSynced)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, inf := range append(append([]cache.SharedIndexInformer{}, appInformers...), secretInformers...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inf.RunWithContext(ctx)
		}()
	}
	s.log.WithField("namespaces", s.cfg.Namespaces).Info("scanner started: watching CnvrgApps")
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended
	}
	ps := *s.parser
	ps.secret = func(_ context.Context, ns, name string) (map[string][]byte, error) {
		for _, si := range secretInformers {
			obj, ok, err := si.GetStore().GetByKey(ns + "/" + name)
			if err != nil {
				return nil, err
			}
			if ok {
				return obj.(*corev1.Secret).Data, nil
			}
		}
		return nil, apierrors.NewNotFound(corev1.Resource("secrets"), name)
	}
	listApps := func() []*unstructured.Unstructured {
		var apps []*unstructured.Unstructured
		for _, ai := range appInformers {
			for _, o := range ai.GetStore().List() {
				if u, ok := o.(*unstructured.Unstructured); ok {
					apps = append(apps, u)
				}
			}
		}
		return sortApps(apps)
	}
	s.rebuild(ctx, &ps, listApps())
	close(s.synced)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			s.log.Info("scanner stopped")
			return nil
		case <-s.poke:
			s.rebuild(ctx, &ps, listApps())
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

func metaKey(obj any) (string, error) { return cache.MetaNamespaceKeyFunc(obj) }

func (s *Scanner) wake() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

func (s *Scanner) refersTo(key string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.secretRefs[key]
}

// rebuild derives the plans from the informers' view, reports new
// problems, and opens the buckets the plans name.
func (s *Scanner) rebuild(ctx context.Context, ps *parser, apps []*unstructured.Unstructured) {
	next := &snapshot{byName: map[string]Plan{}, buckets: map[string]bucket.Bucket{}, specs: map[string]BucketSpec{}}
	refs := map[string]bool{}
	reported := map[string]bool{}
	for _, app := range apps {
		r := ps.app(ctx, app)
		for _, ref := range r.secrets {
			refs[ref] = true
		}
		for _, p := range r.problems {
			key := problemKey(app, p)
			reported[key] = true
			if !s.reported[key] {
				s.reportProblem(ctx, app, p, key)
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
	for _, p := range next.plans {
		url := p.Bucket.URL()
		if spec, ok := next.specs[url]; ok {
			if spec != p.Bucket {
				s.log.WithFields(logrus.Fields{"plan": p.Name, "bucket": url, "secret": p.Bucket.Secret, "other_secret": spec.Secret}).
					Warn("two Secrets name the same bucket with different settings: using the first one's")
			}
		} else if old, ok := prev.specs[url]; ok && old == p.Bucket {
			next.specs[url], next.buckets[url] = old, prev.buckets[url]
		} else {
			b, err := p.Bucket.open(ctx, s.cfg.Log)
			if err != nil {
				s.log.WithError(err).WithFields(logrus.Fields{"plan": p.Name, "bucket": url}).Warn("cannot open the plan's bucket; the plan waits")
				continue
			}
			next.specs[url], next.buckets[url] = p.Bucket, b
		}
		next.byName[p.Name] = p
		kept = append(kept, p)
	}
	next.plans = kept

	changed := len(next.buckets) != len(prev.buckets)
	for url, b := range next.buckets {
		if prev.buckets[url] != b {
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
	s.secretRefs = refs
	if changed {
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.mu.Unlock()
	if changed {
		urls := make([]string, 0, len(next.buckets))
		for u := range next.buckets {
			urls = append(urls, u)
		}
		sort.Strings(urls)
		s.log.WithField("buckets", urls).Info("the set of buckets changed")
	}
	names := make([]string, len(next.plans))
	for i, p := range next.plans {
		names[i] = p.Name
	}
	s.log.WithFields(logrus.Fields{"plans": names, "problems": len(next.problems)}).Debug("plans rebuilt")
	s.emit(Event{Type: EventPlans})
}

func (s *Scanner) emit(e Event) {
	if s.cfg.Events != nil {
		s.cfg.Events(e)
	}
}
