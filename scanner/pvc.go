package scanner

import (
	"context"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// The annotations the cnvrg operator copies from a CnvrgApp's
// spec.dbs.pg.backup onto the PostgreSQL PVC (spec.dbs.pg.pvcName,
// default pg-storage), which the old capsule service read.
const (
	PVCAnnotationPrefix = "capsule.mlops.cnvrg.io/"
	annBackup           = PVCAnnotationPrefix + "backup"
	annServiceType      = PVCAnnotationPrefix + "serviceType"
	annBucketRef        = PVCAnnotationPrefix + "bucketRef"
	annCredsRef         = PVCAnnotationPrefix + "credsRef"
	annRotation         = PVCAnnotationPrefix + "rotation"
	annPeriod           = PVCAnnotationPrefix + "period"
	// annPITR ("true" or "false") is capsule's own, not the operator's:
	// point-in-time recovery for the PVC's plan.
	annPITR = PVCAnnotationPrefix + "pitr"
)

// DefaultPgCreds is the credentials Secret of a PVC plan without a
// credsRef annotation (the operator's default).
const DefaultPgCreds = "pg-creds"

// defaultPgPVC is spec.dbs.pg.pvcName's default.
const defaultPgPVC = "pg-storage"

// PersistentVolumeClaims returns the GroupVersionResource of PVCs.
func PersistentVolumeClaims() schema.GroupVersionResource {
	return schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumeclaims"}
}

// annotated reports whether a PVC carries the operator's backup
// annotations (the old service's test: the backup annotation is there).
func annotated(pvc *unstructured.Unstructured) bool {
	_, ok := pvc.GetAnnotations()[annBackup]
	return ok
}

// ownerApp returns the CnvrgApp that owns the PVC (the operator creates
// pg-storage with a controller reference to its CnvrgApp), if any.
func ownerApp(pvc *unstructured.Unstructured) (name string, uid types.UID, ok bool) {
	var found bool
	for _, o := range pvc.GetOwnerReferences() {
		gv, err := schema.ParseGroupVersion(o.APIVersion)
		if err != nil || gv.Group != Group || o.Kind != "CnvrgApp" || o.Name == "" {
			continue
		}
		name, uid, found = o.Name, o.UID, true
		if o.Controller != nil && *o.Controller {
			break
		}
	}
	return name, uid, found
}

// covers reports whether the CnvrgApp app describes the PVC's service:
// it owns the PVC, or, when the PVC names no owner, its spec.dbs.pg.pvcName
// (default pg-storage) is the PVC's name in the same namespace. Then the
// CnvrgApp's block is the plan, and the annotations (a copy of it) are
// not read: one service, one plan.
func covers(app, pvc *unstructured.Unstructured) bool {
	if app.GetNamespace() != pvc.GetNamespace() {
		return false
	}
	if name, uid, ok := ownerApp(pvc); ok {
		return name == app.GetName() && (uid == "" || app.GetUID() == "" || uid == app.GetUID())
	}
	want, _, _ := unstructured.NestedString(app.Object, "spec", "dbs", "pg", "pvcName")
	if want == "" {
		want = defaultPgPVC
	}
	return want == pvc.GetName()
}

// pvc reads the backup annotations of one PVC into a plan. Its name is
// that of the plan the owning CnvrgApp's block would give,
// <namespace>/<cnvrgapp>/pg, so that a scanner that can read CnvrgApps and
// one that cannot make the same requests for the same slots; a PVC that
// no CnvrgApp owns names its plan <namespace>/<pvc>/pg.
func (ps *parser) pvc(ctx context.Context, obj *unstructured.Unstructured) appResult {
	var res appResult
	ann := obj.GetAnnotations()
	// The plan is named after the owning CnvrgApp, else after the PVC;
	// its App is the owner, or only the namespace.
	ref, named := AppRef{Namespace: obj.GetNamespace()}, obj.GetName()
	if name, uid, ok := ownerApp(obj); ok {
		ref, named = AppRef{Namespace: obj.GetNamespace(), Name: name, UID: uid}, name
	}
	b := &block{ps: ps, ctx: ctx, obj: obj, ref: ref, svc: "pg", res: &res, pvc: obj.GetName(),
		pathOf: func(fields ...string) string {
			// Annotations name every setting the block's fields would.
			switch strings.Join(fields, ".") {
			case "backup.period":
				return annotationPath(annPeriod)
			case "backup.rotation":
				return annotationPath(annRotation)
			case "backup.bucketRef":
				return annotationPath(annBucketRef)
			case "backup.credsRef", "credsRef":
				return annotationPath(annCredsRef)
			}
			return annotationPath(annServiceType)
		}}
	if strings.TrimSpace(ann[annBackup]) != "true" {
		return res
	}
	switch t := strings.TrimSpace(ann[annServiceType]); t {
	case "postgresql", "postgres", "":
	default:
		b.problem(annotationPath(annServiceType), "%q is not supported: the operator annotates PostgreSQL PVCs only (postgresql)", t)
		return res
	}
	cluster := ps.cluster
	if cluster == "" {
		cluster = ref.Namespace + "/" + named
	}
	spec := planSpec{
		name: ref.Namespace + "/" + named + "/pg", cluster: cluster, engine: "postgres", from: FromPVC,
		// The old service connected to port 5432 of the Service that
		// POSTGRES_HOST names.
		port: services[0].port, hostField: annotationPath(annCredsRef),
		rotation:  DefaultRotation,
		bucketRef: strings.TrimSpace(ann[annBucketRef]), bucketField: annotationPath(annBucketRef),
		creds: strings.TrimSpace(ann[annCredsRef]), credsField: annotationPath(annCredsRef),
	}
	spec.schedule = b.schedule(annotationPath(annPeriod), strings.TrimSpace(ann[annPeriod]))
	if r := strings.TrimSpace(ann[annRotation]); r != "" {
		n, err := strconv.ParseInt(r, 10, 64)
		if err != nil {
			b.problem(annotationPath(annRotation), "%q is not a whole number", r)
		} else {
			spec.rotation = b.rotation(annotationPath(annRotation), n)
		}
	}
	if v, ok := ann[annPITR]; ok {
		spec.pitr, _ = b.pitrValue(annotationPath(annPITR), v)
	}
	if spec.creds == "" {
		spec.creds = DefaultPgCreds
	}
	if p, ok := b.build(spec); ok {
		res.plans = append(res.plans, p)
	}
	sort.Strings(res.secrets)
	res.secrets = dedupe(res.secrets)
	return res
}

// scanned is what one CnvrgApp or annotated PVC gave.
type scanned struct {
	obj *unstructured.Unstructured
	appResult
}

// scan derives the plans of the CnvrgApps and the annotated PVCs. A PVC
// that a CnvrgApp covers is left to it when the CnvrgApps of its
// namespace were read (appsKnown): the operator copies the CnvrgApp's
// block onto the PVC, so the block, which says more (svcName, port,
// verification), is the plan, and the two never make two plans for one
// service. Where the CnvrgApps cannot be read, the annotations are the
// plan, under the name the block would have given. Two PVCs that give
// one plan name: the first (by namespace and name) is the plan, the
// other a problem.
func (ps *parser) scan(ctx context.Context, apps, pvcs []*unstructured.Unstructured, appsKnown func(ns string) bool) []scanned {
	var out []scanned
	names := map[string]string{}
	for _, app := range sortObjects(apps) {
		r := scanned{obj: app, appResult: ps.app(ctx, app)}
		for _, p := range r.plans {
			names[p.Name] = "CnvrgApp " + app.GetName()
		}
		out = append(out, r)
	}
	for _, pvc := range sortObjects(pvcs) {
		if !annotated(pvc) {
			continue
		}
		if appsKnown(pvc.GetNamespace()) && coveredBy(apps, pvc) {
			continue
		}
		r := scanned{obj: pvc, appResult: ps.pvc(ctx, pvc)}
		kept := r.plans[:0]
		for _, p := range r.plans {
			if by, dup := names[p.Name]; dup {
				r.problems = append(r.problems, Problem{App: p.App, PVC: pvc.GetName(), Field: annotationPath(annBackup),
					Message: "plan " + p.Name + " is already described by " + by + ": this PVC's annotations are ignored"})
				continue
			}
			names[p.Name] = "PersistentVolumeClaim " + pvc.GetName()
			kept = append(kept, p)
		}
		r.plans = kept
		out = append(out, r)
	}
	return out
}

func coveredBy(apps []*unstructured.Unstructured, pvc *unstructured.Unstructured) bool {
	for _, app := range apps {
		if covers(app, pvc) {
			return true
		}
	}
	return false
}

func annotationPath(key string) string { return "metadata.annotations[" + key + "]" }
