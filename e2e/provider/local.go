package provider

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"

	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/test/localcluster"
)

// Local starts real kube-apiserver and etcd processes with cert-manager's
// controllers and webhook in-process (package localcluster).
type Local struct {
	// Options are applied to every cluster; Name and CRDDirs are set by Start.
	Options localcluster.Options
}

// Name implements Provider.
func (Local) Name() string { return "local" }

// Start implements Provider.
func (l Local) Start(t *testing.T, names ...string) []Cluster {
	t.Helper()
	opts := make([]localcluster.Options, len(names))
	for i, n := range names {
		opts[i] = l.Options
		opts[i].Name = n
		opts[i].CRDDirs = append([]string{RepoPath("deploy/crds")}, l.Options.CRDDirs...)
	}
	started := localcluster.StartAll(t, opts...)
	out := make([]Cluster, len(started))
	for i, c := range started {
		if err := relayv1.AddToScheme(c.Scheme); err != nil {
			t.Fatal(err)
		}
		out[i] = localCluster{c}
	}
	return out
}

type localCluster struct{ c *localcluster.Cluster }

func (l localCluster) Name() string                                 { return l.c.Name }
func (l localCluster) Client() client.Client                        { return l.c.Client }
func (l localCluster) Scheme() *apiruntime.Scheme                   { return l.c.Scheme }
func (l localCluster) AdminConfig() *rest.Config                    { return l.c.Config }
func (l localCluster) AdminKubeconfig() string                      { return l.c.KubeconfigPath }
func (l localCluster) Apply(ctx context.Context, m ...[]byte) error { return l.c.Apply(ctx, m...) }
func (l localCluster) ServiceAccount(_ context.Context, ns, name string) (*rest.Config, string, error) {
	return l.c.AddServiceAccount(ns, name)
}

// RepoPath resolves a path relative to the repository root.
func RepoPath(rel string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", rel)
}
