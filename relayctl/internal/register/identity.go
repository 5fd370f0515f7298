package register

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
)

// ClusterToken derives the cluster token of cluster from the management
// cluster's root token and the cluster's RelayCluster generation (1 when it
// has none). Under tokenScope Shared it is the root token itself. The token
// is returned for the caller to write where the user asked, never printed
// by this package.
func ClusterToken(ctx context.Context, mgmt *kube.Conn, cluster string) ([]byte, error) {
	if err := proof.ValidateCluster(cluster); err != nil {
		return nil, fmt.Errorf("--cluster: %w", err)
	}
	root, err := readRootToken(ctx, mgmt)
	if err != nil {
		return nil, err
	}
	if sharedScope(ctx, mgmt) {
		return []byte(root), nil
	}
	return derivedToken(ctx, mgmt, root, cluster)
}

// derivedToken is the cluster token of cluster under tokenScope
// PerCluster, whatever the issuer's scope is now.
func derivedToken(ctx context.Context, mgmt *kube.Conn, root proof.Token, cluster string) ([]byte, error) {
	gen := proof.DefaultGeneration
	var rc relayv1.RelayCluster
	if err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: mgmt.Namespace, Name: cluster}, &rc); err == nil {
		if rc.Spec.Revoked {
			return nil, fmt.Errorf("cluster %q is revoked; set spec.revoked: false and bump spec.tokenGeneration to re-admit it", cluster)
		}
		gen = rc.TokenGeneration()
	} else if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%s: reading RelayCluster %s/%s: %w", mgmt.Name, mgmt.Namespace, cluster, err)
	}
	ct, err := proof.ClusterToken(root, cluster, gen)
	if err != nil {
		return nil, err
	}
	return []byte(ct), nil
}

// Revoke sets (or, with undo, clears) spec.revoked on the cluster's
// RelayCluster, creating it revoked when it does not exist. Clearing also
// bumps tokenGeneration, so the token the cluster held before cannot stand
// in for the new one.
func Revoke(ctx context.Context, mgmt *kube.Conn, cluster string, undo bool) (generation int64, err error) {
	if err := proof.ValidateCluster(cluster); err != nil {
		return 0, fmt.Errorf("--cluster: %w", err)
	}
	var rc relayv1.RelayCluster
	key := client.ObjectKey{Namespace: mgmt.Namespace, Name: cluster}
	switch err := mgmt.Client.Get(ctx, key, &rc); {
	case apierrors.IsNotFound(err):
		if undo {
			return 0, fmt.Errorf("%s: cluster %q has no RelayCluster %s/%s to re-admit", mgmt.Name, cluster, mgmt.Namespace, cluster)
		}
		rc = relayv1.RelayCluster{ObjectMeta: metav1.ObjectMeta{Namespace: mgmt.Namespace, Name: cluster},
			Spec: relayv1.RelayClusterSpec{TokenGeneration: 1, Revoked: true}}
		if err := mgmt.Client.Create(ctx, &rc); err != nil {
			return 0, fmt.Errorf("%s: creating RelayCluster %s/%s: %w", mgmt.Name, mgmt.Namespace, cluster, err)
		}
		return 1, nil
	case err != nil:
		return 0, fmt.Errorf("%s: reading RelayCluster %s/%s: %w", mgmt.Name, mgmt.Namespace, cluster, err)
	}
	base := rc.DeepCopy()
	if undo {
		if !rc.Spec.Revoked {
			return rc.TokenGeneration(), nil
		}
		rc.Spec.Revoked = false
		rc.Spec.TokenGeneration = rc.TokenGeneration() + 1
	} else {
		rc.Spec.Revoked = true
	}
	if err := mgmt.Client.Patch(ctx, &rc, client.MergeFrom(base)); err != nil {
		return 0, fmt.Errorf("%s: updating RelayCluster %s/%s: %w", mgmt.Name, mgmt.Namespace, cluster, err)
	}
	return rc.TokenGeneration(), nil
}
