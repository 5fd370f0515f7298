package controller

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/clusterlist"
)

// The published cluster list is the only Secret relay-issuer updates.
//
// +kubebuilder:rbac:groups="",resources=secrets,verbs=update;patch,resourceNames=relay-cluster-list,namespace=relaytls-system

// Inventory keeps, in each Secret namespace, the relay-cluster-list Secret
// that the server sidecar mounts (SPEC section 8) in step with the
// RelayClusters there, and sets each RelayCluster's Registered condition.
// The list is published as soon as a CA-mode issuer uses the namespace,
// before any cluster is registered, because the server sidecar's volume is
// not optional (a sidecar that must honour revocation does not start
// without the list).
type Inventory struct {
	Client client.Client
	// Namespaces are the namespaces whose RelayClusters count (relay-issuer's
	// Secret namespaces); others are ignored.
	Namespaces []string
	// ClusterResourceNamespace is where the Secrets of RelayClusterIssuers
	// live, and so their RelayClusters and list.
	ClusterResourceNamespace string
}

var _ reconcile.Reconciler = &Inventory{}

// SetupWithManager registers the controller.
func (r *Inventory) SetupWithManager(mgr ctrl.Manager) error {
	inScope := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return len(r.Namespaces) == 0 || slices.Contains(r.Namespaces, o.GetNamespace())
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("relaycluster-inventory").
		For(&relayv1.RelayCluster{}, builder.WithPredicates(inScope)).
		// A deleted or edited list Secret is put back.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if o.GetName() != relayv1.DefaultClusterListName {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace()}}}
		}), builder.WithPredicates(inScope)).
		// A CA-mode issuer gets its namespace's list even before the first
		// RelayCluster.
		Watches(&relayv1.RelayIssuer{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if iss, ok := o.(*relayv1.RelayIssuer); !ok || iss.Spec.CA == nil {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace()}}}
		}), builder.WithPredicates(inScope)).
		Watches(&relayv1.RelayClusterIssuer{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			iss, ok := o.(*relayv1.RelayClusterIssuer)
			if !ok || iss.Spec.CA == nil || r.ClusterResourceNamespace == "" ||
				(len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, r.ClusterResourceNamespace)) {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: r.ClusterResourceNamespace}}}
		})).
		Complete(r)
}

// Reconcile updates one RelayCluster's condition (when the request names one)
// and republishes its namespace's list.
func (r *Inventory) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var l relayv1.RelayClusterList
	if err := r.Client.List(ctx, &l, client.InNamespace(req.Namespace)); err != nil {
		return reconcile.Result{}, err
	}
	entries := make([]clusterlist.Cluster, 0, len(l.Items))
	for i := range l.Items {
		rc := &l.Items[i]
		entries = append(entries, clusterlist.Cluster{Name: rc.Name, Generation: rc.TokenGeneration(), Revoked: rc.Spec.Revoked})
		if rc.Name == req.Name {
			if err := r.setRegistered(ctx, rc); err != nil {
				return reconcile.Result{}, err
			}
		}
	}
	data, err := clusterlist.Encode(entries)
	if err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, r.publish(ctx, req.Namespace, data)
}

// RegisteredCondition is the Registered condition a RelayCluster should have.
func RegisteredCondition(rc *relayv1.RelayCluster) metav1.Condition {
	c := metav1.Condition{Type: relayv1.ClusterConditionRegistered, ObservedGeneration: rc.Generation}
	if rc.Spec.Revoked {
		c.Status, c.Reason = metav1.ConditionFalse, relayv1.ReasonClusterRevoked
		c.Message = "the cluster is revoked: its renewals are refused and the server sidecar cuts its connections"
		return c
	}
	c.Status, c.Reason = metav1.ConditionTrue, "Registered"
	c.Message = fmt.Sprintf("the cluster may enrol with its token of generation %d", rc.TokenGeneration())
	return c
}

func (r *Inventory) setRegistered(ctx context.Context, rc *relayv1.RelayCluster) error {
	base := rc.DeepCopy()
	if !meta.SetStatusCondition(&rc.Status.Conditions, RegisteredCondition(rc)) && rc.Status.ObservedGeneration == rc.Generation {
		return nil
	}
	rc.Status.ObservedGeneration = rc.Generation
	if err := r.Client.Status().Patch(ctx, rc, client.MergeFrom(base)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("updating the Registered condition of RelayCluster %s/%s: %w", rc.Namespace, rc.Name, err)
	}
	return nil
}

// publish creates or updates the list Secret when its content differs.
func (r *Inventory) publish(ctx context.Context, ns string, data []byte) error {
	var sec corev1.Secret
	key := client.ObjectKey{Namespace: ns, Name: relayv1.DefaultClusterListName}
	err := r.Client.Get(ctx, key, &sec)
	switch {
	case apierrors.IsNotFound(err):
		sec = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: relayv1.DefaultClusterListName,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "relay-issuer"}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{relayv1.ClusterListKey: data},
		}
		if err := r.Client.Create(ctx, &sec); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the cluster list Secret %s/%s: %w", ns, key.Name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading the cluster list Secret %s/%s: %w", ns, key.Name, err)
	}
	if bytes.Equal(sec.Data[relayv1.ClusterListKey], data) {
		return nil
	}
	base := sec.DeepCopy()
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[relayv1.ClusterListKey] = data
	if err := r.Client.Patch(ctx, &sec, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("updating the cluster list Secret %s/%s: %w", ns, key.Name, err)
	}
	return nil
}
