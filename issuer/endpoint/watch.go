package endpoint

import (
	"context"
	"fmt"
	"sync"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
)

// requestEvents hands the endpoint's CertificateRequests, as one shared
// informer sees them, to the calls waiting for them: one watch for all calls
// instead of one per call. On a management cluster it is the informer the
// CertificateRequest controller already runs, so the endpoint adds none.
type requestEvents struct {
	mu      sync.Mutex
	waiters map[string]chan requestEvent // by namespace/name
}

// requestEvent is the latest state of a request, or its deletion.
type requestEvent struct {
	cr      *cmapi.CertificateRequest
	deleted bool
}

func newRequestEvents() *requestEvents {
	return &requestEvents{waiters: map[string]chan requestEvent{}}
}

// start registers with the informer for CertificateRequests.
func (e *requestEvents) start(ctx context.Context, informers cache.Informers) error {
	inf, err := informers.GetInformer(ctx, &cmapi.CertificateRequest{})
	if err != nil {
		return fmt.Errorf("the issuance endpoint's CertificateRequest informer: %w", err)
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { e.deliver(obj, false) },
		UpdateFunc: func(_, obj any) { e.deliver(obj, false) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			e.deliver(obj, true)
		},
	})
	if err != nil {
		return fmt.Errorf("watching the issuance endpoint's CertificateRequests: %w", err)
	}
	return nil
}

func (e *requestEvents) deliver(obj any, deleted bool) {
	cr, ok := obj.(*cmapi.CertificateRequest)
	if !ok || cr.Labels[LabelEnrollment] != "true" {
		return
	}
	e.mu.Lock()
	ch, ok := e.waiters[cr.Namespace+"/"+cr.Name]
	e.mu.Unlock()
	if !ok {
		return
	}
	ev := requestEvent{cr: cr, deleted: deleted}
	// The channel holds the latest event only: replace an unread one.
	for {
		select {
		case ch <- ev:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// subscribe registers a waiter for a request before it is created, so no
// event is missed; cancel removes it.
func (e *requestEvents) subscribe(namespace, name string) (<-chan requestEvent, func()) {
	key := namespace + "/" + name
	ch := make(chan requestEvent, 1)
	e.mu.Lock()
	e.waiters[key] = ch
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		delete(e.waiters, key)
		e.mu.Unlock()
	}
}
