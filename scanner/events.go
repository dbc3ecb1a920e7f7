package scanner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ReasonInvalidBackupPlan is the reason of the Events that report an
// invalid backup block.
const ReasonInvalidBackupPlan = "InvalidBackupPlan"

// problemKey identifies one problem of one generation of a CnvrgApp.
func problemKey(app *unstructured.Unstructured, p Problem) string {
	h := sha256.New()
	for _, s := range []string{string(app.GetUID()), app.GetNamespace(), app.GetName(), strconv.FormatInt(app.GetGeneration(), 10), p.Field, p.Message} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:20]
}

// reportProblem logs an invalid block and records a Warning Event on the
// CnvrgApp (or the annotated PVC) when the role may create Events there.
// The Event's name is derived from the problem and the object's
// generation, so every replica writes the same one and only the first
// create succeeds.
func (s *Scanner) reportProblem(ctx context.Context, app *unstructured.Unstructured, p Problem, key string) {
	fields := logrus.Fields{"field": p.Field}
	if p.App.Name != "" {
		fields["cnvrgapp"] = p.App.String()
	}
	if p.PVC != "" {
		fields["pvc"] = p.App.Namespace + "/" + p.PVC
	}
	s.log.WithFields(fields).Warn(p.Message)
	defer s.emit(Event{Type: EventProblem, Err: p})
	if !s.mayCreateEvents(app.GetNamespace()) {
		return // said once at the start: invalid plans are logged only
	}
	name := app.GetName()
	if len(name) > 200 {
		name = name[:200]
	}
	now := metav1.NewTime(time.Now())
	instance := s.cfg.Holder
	if len(instance) > 128 {
		instance = instance[:128]
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.capsule.%s", name, key), Namespace: app.GetNamespace()},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: app.GetAPIVersion(), Kind: app.GetKind(), Namespace: app.GetNamespace(), Name: app.GetName(),
			UID: app.GetUID(), ResourceVersion: app.GetResourceVersion(),
		},
		Reason:              ReasonInvalidBackupPlan,
		Message:             p.Error(),
		Type:                corev1.EventTypeWarning,
		Source:              corev1.EventSource{Component: "capsule-scanner"},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: "capsule.cnvrg.io/scanner",
		ReportingInstance:   instance,
	}
	if ev.InvolvedObject.Kind == "" {
		ev.InvolvedObject.APIVersion, ev.InvolvedObject.Kind = Group+"/"+Version, "CnvrgApp"
		if p.PVC != "" {
			ev.InvolvedObject.APIVersion, ev.InvolvedObject.Kind = "v1", "PersistentVolumeClaim"
		}
	}
	_, err := s.cfg.Kube.CoreV1().Events(app.GetNamespace()).Create(ctx, ev, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		s.log.WithError(err).WithFields(fields).Warn("cannot record the Event")
	}
}

// mayCreateEvents reports whether the role may create Events in ns, as
// Run found at its start (true before it asked).
func (s *Scanner) mayCreateEvents(ns string) bool {
	if s.events == nil {
		return true
	}
	return s.events[""] || s.events[ns]
}
