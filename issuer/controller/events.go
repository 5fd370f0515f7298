package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
)

// EventSource is the component that relay-issuer's Events come from.
const EventSource = "relay-issuer"

// The issuer's Events are core v1 Events (leader election records its own
// the same way), so that kubectl describe and cmctl status show them with
// their source and age; an events.k8s.io Event has neither field there.
//
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// coreEventRecorder returns an issuer-lib compatible recorder that writes
// core v1 Events through its own broadcaster, stopped when ctx ends.
func coreEventRecorder(ctx context.Context, mgr ctrl.Manager) (events.EventRecorder, error) {
	cs, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("event recorder: %w", err)
	}
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	go func() {
		<-ctx.Done()
		b.Shutdown()
	}()
	return record.NewEventRecorderAdapter(b.NewRecorder(mgr.GetScheme(), corev1.EventSource{Component: EventSource})), nil
}
