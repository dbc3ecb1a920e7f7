package scanner

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	authv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// mode is how the scanner follows a resource in a namespace.
type mode int

const (
	// modeNone: the role may not list it; it is not read.
	modeNone mode = iota
	// modeList: list only (the operator's ClusterRole has no watch): it
	// is listed again every Config.Poll.
	modeList
	// modeWatch: list and watch: an informer follows it.
	modeWatch
)

func (m mode) String() string {
	return [...]string{"none", "list", "watch"}[m]
}

// access is what the scanner's role lets it do, by namespace ("" for
// all namespaces), as the API server's SelfSubjectAccessReviews answer.
type access struct {
	apps, pvcs map[string]mode
	// events: may create Events there (Warning Events on invalid plans).
	events map[string]bool
}

// accessRetry is how long the scanner waits before it asks again when
// the API server could not answer.
const accessRetry = 5 * time.Second

// checkAccess asks the API server what the role may do in each namespace
// the scanner serves, retrying until it gets an answer or ctx ends. Where
// SelfSubjectAccessReviews are themselves forbidden, it assumes the
// access and handles a Forbidden when it meets one.
func (s *Scanner) checkAccess(ctx context.Context) (*access, error) {
	for {
		acc, err := s.askAccess(ctx)
		if err == nil {
			return acc, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.log.WithError(err).Warn("cannot ask the API server what the scanner's role allows; asking again")
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(accessRetry):
		}
	}
}

func (s *Scanner) askAccess(ctx context.Context) (*access, error) {
	acc := &access{apps: map[string]mode{}, pvcs: map[string]mode{}, events: map[string]bool{}}
	apps, pvcs := CnvrgApps(), PersistentVolumeClaims()
	for _, ns := range s.namespaces() {
		var err error
		if acc.apps[ns], err = s.modeOf(ctx, apps, ns); err != nil {
			return nil, err
		}
		if acc.pvcs[ns], err = s.modeOf(ctx, pvcs, ns); err != nil {
			return nil, err
		}
		if acc.events[ns], err = s.can(ctx, "create", schema.GroupVersionResource{Version: "v1", Resource: "events"}, ns); err != nil {
			return nil, err
		}
	}
	return acc, nil
}

func (s *Scanner) modeOf(ctx context.Context, gvr schema.GroupVersionResource, ns string) (mode, error) {
	list, err := s.can(ctx, "list", gvr, ns)
	if err != nil || !list {
		return modeNone, err
	}
	watch, err := s.can(ctx, "watch", gvr, ns)
	if err != nil || !watch {
		return modeList, err
	}
	return modeWatch, nil
}

// can asks whether the scanner's role may do verb on the resource in ns.
func (s *Scanner) can(ctx context.Context, verb string, gvr schema.GroupVersionResource, ns string) (bool, error) {
	r, err := s.cfg.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{
		Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authv1.ResourceAttributes{
			Namespace: ns, Verb: verb, Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource,
		}},
	}, metav1.CreateOptions{})
	if apierrors.IsForbidden(err) {
		// No access reviews: try, and handle a Forbidden when it comes.
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("access review %s %s: %w", verb, gvr.GroupResource(), err)
	}
	return r.Status.Allowed, nil
}

// report logs, once, what the role does not let the scanner do and what
// the scanner does instead. It returns an error when the role can read
// neither CnvrgApps nor PVCs anywhere: there is nothing to back up.
func (s *Scanner) report(acc *access) error {
	apps, pvcs := byMode(acc.apps), byMode(acc.pvcs)
	var noEvents []string
	for ns, ok := range acc.events {
		if !ok {
			noEvents = append(noEvents, nsName(ns))
		}
	}
	sort.Strings(noEvents)
	if len(apps[modeNone]) == len(acc.apps) && len(pvcs[modeNone]) == len(acc.pvcs) {
		return fmt.Errorf("the scanner's role may list neither cnvrgapps.%s nor persistentvolumeclaims (in %s): nothing to back up; grant get and list on one of them (the cnvrg operator's ClusterRole grants persistentvolumeclaims and secrets)",
			Group, strings.Join(nsNames(s.namespaces()), ", "))
	}
	log := s.log.WithField("role", "access")
	if ns := apps[modeNone]; len(ns) > 0 {
		msg := "no access to cnvrgapps (list): plans come from the PVC annotations only"
		if len(pvcs[modeNone]) > 0 {
			msg = "no access to cnvrgapps (list): plans come from the PVC annotations where they can be listed"
		}
		log.WithField("namespaces", ns).Warn(msg)
	}
	if ns := apps[modeList]; len(ns) > 0 {
		log.WithFields(logrus.Fields{"namespaces": ns, "every": s.cfg.Poll.String()}).Info("no watch on cnvrgapps: listing them periodically")
	}
	if ns := pvcs[modeNone]; len(ns) > 0 {
		log.WithField("namespaces", ns).Warn("no access to persistentvolumeclaims (list): plans come from CnvrgApps only, not from the operator's PVC annotations")
	}
	if ns := pvcs[modeList]; len(ns) > 0 {
		log.WithFields(logrus.Fields{"namespaces": ns, "every": s.cfg.Poll.String()}).Info("no watch on persistentvolumeclaims: listing them periodically")
	}
	if len(noEvents) > 0 {
		log.WithField("namespaces", noEvents).Warn("cannot create events: invalid plans are logged only")
	}
	return nil
}

func byMode(m map[string]mode) map[mode][]string {
	out := map[mode][]string{}
	for ns, md := range m {
		out[md] = append(out[md], nsName(ns))
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

func nsName(ns string) string {
	if ns == "" {
		return "all namespaces"
	}
	return ns
}

func nsNames(nss []string) []string {
	out := make([]string, len(nss))
	for i, ns := range nss {
		out[i] = nsName(ns)
	}
	return out
}
