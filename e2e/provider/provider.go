// Package provider gives the end-to-end suite and the demo the Kubernetes
// clusters they run on, behind one interface, so the same tests run on local
// control planes (the default, and what CI runs) and on kind clusters where a
// container engine exists.
//
// Choose with RELAYTLS_E2E_PROVIDER: "local" (default) or "kind".
package provider

import (
	"context"
	"fmt"
	"os"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Env names the environment variable that selects the provider.
const Env = "RELAYTLS_E2E_PROVIDER"

// Cluster is one running Kubernetes cluster with cert-manager and the
// relaytls CRDs installed.
type Cluster interface {
	// Name is the cluster's role in the test, e.g. "management".
	Name() string
	// Client is a cluster-admin client; its scheme knows Kubernetes,
	// cert-manager and relaytls types.
	Client() client.Client
	// Scheme is Client's scheme.
	Scheme() *runtime.Scheme
	// AdminConfig and AdminKubeconfig are Client's identity as a REST
	// config and as a kubeconfig file.
	AdminConfig() *rest.Config
	AdminKubeconfig() string
	// ServiceAccount returns a REST config and a kubeconfig file for the
	// identity of a pod running as namespace/name, so a component runs
	// under the RBAC that deploy/ grants it, not as cluster-admin.
	ServiceAccount(ctx context.Context, namespace, name string) (*rest.Config, string, error)
	// Apply server-side applies multi-document YAML or JSON manifests.
	Apply(ctx context.Context, manifests ...[]byte) error
}

// Provider starts clusters.
type Provider interface {
	// Name is "local" or "kind".
	Name() string
	// Start starts one cluster per name at once and removes them when t
	// ends. It fails t (never skips) when it cannot.
	Start(t *testing.T, names ...string) []Cluster
}

// FromEnv returns the provider RELAYTLS_E2E_PROVIDER selects.
func FromEnv() (Provider, error) {
	switch v := os.Getenv(Env); v {
	case "", "local":
		return Local{}, nil
	case "kind":
		return Kind{}, nil
	default:
		return nil, fmt.Errorf("%s=%q: the providers are local (default) and kind", Env, v)
	}
}
