// Package controller wires the RelayIssuer signer into issuer-lib's
// CombinedController and makes issuers follow their Secrets: a change to a
// Secret an issuer names re-checks that issuer, so a fixed Secret makes it
// Ready again without a restart.
package controller

import (
	"context"
	"fmt"
	"slices"
	"time"

	issuerapi "github.com/cert-manager/issuer-lib/api/v1alpha1"
	"github.com/cert-manager/issuer-lib/controllers"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/issuer/signer"
)

// FieldOwner is the server-side apply field manager of relay-issuer.
const FieldOwner = "relaytls.io/relay-issuer"

// The issuer's permissions, generated into deploy/rbac by `make manifests`.
// Secrets are granted by a Role in the issuer's namespace only (below).
//
// +kubebuilder:rbac:groups=relaytls.io,resources=relayissuers;relayclusterissuers,verbs=get;list;watch
// +kubebuilder:rbac:groups=relaytls.io,resources=relayissuers/status;relayclusterissuers/status,verbs=patch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests,verbs=get;list;watch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create,namespace=relaytls-system
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests,verbs=create;delete,namespace=relaytls-system
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch,namespace=relaytls-system

// Tuning sets how the controllers retry and how many objects they work on
// at once.
type Tuning struct {
	// MaxRetryDuration bounds how long a retryable signing error is retried
	// before the request fails.
	MaxRetryDuration time.Duration
	// MaxBackoff caps the per-object retry delay after a failed check or
	// signing, so an issuer recovers within that long of its cause going away.
	MaxBackoff time.Duration
	// Workers is the number of concurrent reconciles per controller.
	Workers int
}

// controllerOptions are the options of one controller.
func (t Tuning) controllerOptions() controller.Options {
	return controller.Options{
		RateLimiter:             workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](100*time.Millisecond, t.MaxBackoff),
		MaxConcurrentReconciles: max(t.Workers, 1),
	}
}

// Setup registers the issuer, CertificateRequest and Secret-following
// controllers with the manager.
func Setup(ctx context.Context, mgr ctrl.Manager, s *signer.Signer, tune Tuning) error {
	recorder, err := coreEventRecorder(ctx, mgr)
	if err != nil {
		return err
	}
	// The signer's own Events (a created token Secret) go the same way: the
	// shipped RBAC grants core Events only, so an events.k8s.io recorder's
	// writes would be refused and lost.
	s.Recorder = recorder
	c := &controllers.CombinedController{
		IssuerTypes:        []issuerapi.Issuer{&relayv1.RelayIssuer{}},
		ClusterIssuerTypes: []issuerapi.Issuer{&relayv1.RelayClusterIssuer{}},
		FieldOwner:         FieldOwner,
		MaxRetryDuration:   tune.MaxRetryDuration,
		Check:              s.Check,
		Sign:               s.Sign,
		EventRecorder:      recorder,
		// ca.crt must be the root (SPEC section 5), so the CA field is set
		// although issuer-lib deprecates it in favour of trust-manager.
		//lint:ignore SA1019 SPEC section 5 requires ca.crt to carry the root
		SetCAOnCertificateRequest:      true,
		DisableKubernetesCSRController: true,
		// issuer-lib v0.11.0's CombinedController hands ControllerOptions to
		// the issuer controllers only; its CertificateRequest controller is
		// built with the defaults (one worker, no backoff cap). Every
		// controller it builds passes through this hook after issuer-lib set
		// its options and before it is built, so the options are given here,
		// to each controller, each with its own rate limiter (a shared one
		// would mix up the failures of a request and an issuer of the same
		// name).
		PreSetupWithManager: func(_ context.Context, gvk schema.GroupVersionKind, mgr ctrl.Manager, b *builder.Builder) error {
			b.WithOptions(tune.controllerOptions())
			if gvk.Group != relayv1.GroupVersion.Group {
				// The CertificateRequest controller needs no Secret watch;
				// it is woken when a remote signing call it started ends.
				b.WatchesRawSource(source.Channel(s.RemoteDone(), &handler.EnqueueRequestForObject{}))
				return nil
			}
			b.Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(
				issuersForSecret(mgr.GetClient(), gvk.Kind, s.ClusterResourceNamespace)))
			return nil
		},
	}
	if err := c.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("setting up the issuer controllers: %w", err)
	}
	for _, kind := range []string{"RelayIssuer", "RelayClusterIssuer"} {
		rt := &RootTrust{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Kind: kind,
			ClusterResourceNamespace: s.ClusterResourceNamespace, Namespaces: s.SecretNamespaces, Clock: s.Clock}
		if err := rt.SetupWithManager(mgr, tune); err != nil {
			return fmt.Errorf("setting up the trust bundle controller of %s: %w", kind, err)
		}
	}
	inv := &Inventory{Client: mgr.GetClient(), Namespaces: s.SecretNamespaces, ClusterResourceNamespace: s.ClusterResourceNamespace}
	if err := inv.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the cluster inventory controller: %w", err)
	}
	return nil
}

// issuersForSecret maps a Secret to the issuers of one kind that name it.
func issuersForSecret(c client.Reader, kind, clusterResourceNamespace string) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		var items []relayv1.RelayIssuerObject
		switch kind {
		case "RelayIssuer":
			var l relayv1.RelayIssuerList
			if err := c.List(ctx, &l, client.InNamespace(obj.GetNamespace())); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "listing RelayIssuers for a Secret change")
				return nil
			}
			for i := range l.Items {
				items = append(items, &l.Items[i])
			}
		case "RelayClusterIssuer":
			if obj.GetNamespace() != clusterResourceNamespace {
				return nil
			}
			var l relayv1.RelayClusterIssuerList
			if err := c.List(ctx, &l); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "listing RelayClusterIssuers for a Secret change")
				return nil
			}
			for i := range l.Items {
				items = append(items, &l.Items[i])
			}
		}
		var out []reconcile.Request
		for _, iss := range items {
			if NamesSecret(iss.GetSpec(), obj.GetName()) {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: iss.GetNamespace(), Name: iss.GetName()}})
			}
		}
		return out
	}
}

// NamesSecret reports whether an issuer spec refers to the named Secret.
func NamesSecret(spec *relayv1.RelayIssuerSpec, name string) bool {
	return slices.Contains(signer.SecretNames(spec), name)
}
