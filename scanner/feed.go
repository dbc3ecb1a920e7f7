package scanner

import (
	"context"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// feed follows one resource (CnvrgApps or PVCs) in one namespace ("" for
// all): with an informer where the role may watch it, else by listing it
// every Config.Poll. Only the Run goroutine uses it (the informer runs on
// its own).
type feed struct {
	gvr  schema.GroupVersionResource
	ns   string
	mode mode
	inf  cache.SharedIndexInformer

	// modeList: the last successful listing and its fingerprint.
	items   []*unstructured.Unstructured
	version string
	listed  bool
	// unserved: the API server does not serve the resource (the CnvrgApp
	// CRD is not installed); forbidden: the role may not list it after all.
	unserved, forbidden bool
	// failing: the last listing failed (logged once until one works).
	failing bool
}

// newFeeds makes the feeds of every namespace for the resource, in the
// mode the role allows; none for namespaces where it may not list it.
func (s *Scanner) newFeeds(gvr schema.GroupVersionResource, modes map[string]mode) []*feed {
	var out []*feed
	for _, ns := range s.namespaces() {
		if m := modes[ns]; m != modeNone {
			out = append(out, &feed{gvr: gvr, ns: ns, mode: m})
		}
	}
	return out
}

// start lists the resource once, and starts an informer in watch mode
// when that worked. A resource the API server does not serve (no CRD) is
// logged and read as empty; the informer of such a resource would never
// sync.
func (s *Scanner) start(ctx context.Context, f *feed, onChange func()) (cache.InformerSynced, error) {
	s.poll(ctx, f)
	if f.mode != modeWatch || f.unserved || f.forbidden {
		// An informer of either would never sync: list it instead.
		return nil, nil
	}
	f.inf = dynamicinformer.NewFilteredDynamicInformer(s.cfg.Dynamic, f.gvr, f.ns, s.cfg.Resync, cache.Indexers{}, nil).Informer()
	if _, err := f.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { onChange() },
		UpdateFunc: func(any, any) { onChange() },
		DeleteFunc: func(any) { onChange() },
	}); err != nil {
		return nil, err
	}
	return f.inf.HasSynced, nil
}

// objects returns what the feed holds now.
func (f *feed) objects() []*unstructured.Unstructured {
	if f.inf == nil {
		return f.items
	}
	var out []*unstructured.Unstructured
	for _, o := range f.inf.GetStore().List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out
}

// known reports whether the feed has read its resource: a failed or
// forbidden listing, or a resource not served, is not knowledge.
func (f *feed) known() bool {
	if f.inf != nil {
		return f.inf.HasSynced()
	}
	return f.listed && !f.failing && !f.unserved && !f.forbidden
}

// poll lists a list-mode feed (or, at start, any feed) and reports
// whether what it holds changed. A Forbidden or a failure keeps the last
// listing and is logged once until a listing works again.
func (s *Scanner) poll(ctx context.Context, f *feed) bool {
	list, err := s.cfg.Dynamic.Resource(f.gvr).Namespace(f.ns).List(ctx, metav1.ListOptions{})
	log := s.log.WithFields(logrus.Fields{"resource": f.gvr.GroupResource().String(), "namespace": nsName(f.ns)})
	switch {
	case apierrors.IsNotFound(err):
		if !f.unserved {
			log.Warn("the API server does not serve this resource (is its CustomResourceDefinition installed?): plans do not come from it")
		}
		f.unserved = true
		return false
	case apierrors.IsForbidden(err):
		if !f.forbidden {
			log.Warn("forbidden to list this resource: plans do not come from it")
		}
		f.forbidden = true
		return false
	case err != nil && ctx.Err() == nil:
		if !f.failing {
			log.WithError(err).Warn("cannot list; keeping the last listing and trying again")
		}
		f.failing = true
		return false
	case err != nil:
		return false
	}
	if f.failing || f.unserved || f.forbidden {
		log.Info("listing works again")
	}
	f.failing, f.unserved, f.forbidden = false, false, false
	items := make([]*unstructured.Unstructured, len(list.Items))
	keys := make([]string, len(list.Items))
	for i := range list.Items {
		items[i] = &list.Items[i]
		keys[i] = string(list.Items[i].GetUID()) + "@" + list.Items[i].GetResourceVersion()
	}
	sort.Strings(keys)
	version := strings.Join(keys, ",")
	changed := !f.listed || version != f.version
	f.items, f.version, f.listed = items, version, true
	return changed
}
