// Package kube connects relayctl to clusters by kubeconfig and context (the
// way kubectl does, with client-go's clientcmd) and applies objects with
// server-side apply.
package kube

import (
	"context"
	"fmt"
	"io"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
)

// FieldManager is relayctl's server-side apply field manager.
const FieldManager = "relayctl"

// Conn is a connection to one cluster.
type Conn struct {
	// Name describes the cluster in messages ("management cluster (context kind-mgmt)").
	Name   string
	Config *rest.Config
	Client client.Client
}

// Connect loads kubeconfig (empty: $KUBECONFIG or ~/.kube/config) and
// context (empty: the current context). role names the cluster in errors.
func Connect(role, kubeconfig, kubeContext string) (*Conn, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	cfg, err := cc.ClientConfig()
	if err != nil {
		where := "the current context"
		if kubeContext != "" {
			where = "context " + kubeContext
		}
		return nil, fmt.Errorf("%s cluster: loading %s: %w", role, where, err)
	}
	raw, _ := cc.RawConfig()
	name := kubeContext
	if name == "" {
		name = raw.CurrentContext
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("%s cluster: %w", role, err)
	}
	desc := role + " cluster"
	if name != "" {
		desc += " (context " + name + ")"
	}
	return &Conn{Name: desc, Config: cfg, Client: c}, nil
}

// Scheme knows the Kubernetes types, cert-manager's and relaytls's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, cmapi.AddToScheme, relayv1.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// Apply server-side applies objs in order, printing one line per object to
// progress. A CRD is waited for until it is established, so that later
// objects may use it.
func (c *Conn) Apply(ctx context.Context, objs []*unstructured.Unstructured, progress io.Writer) error {
	for _, o := range objs {
		desc := o.GetKind() + " " + o.GetName()
		if o.GetNamespace() != "" {
			desc = o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
		}
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			err := c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner(FieldManager), client.ForceOwnership)
			if meta.IsNoMatchError(err) {
				return false, nil // a CRD applied just before is not served yet
			}
			return true, err
		})
		if err != nil {
			return fmt.Errorf("%s: applying %s: %w", c.Name, desc, err)
		}
		if progress != nil {
			fmt.Fprintf(progress, "  applied %s\n", desc)
		}
		if o.GetKind() == "CustomResourceDefinition" {
			if err := c.waitEstablished(ctx, o.GetName()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Conn) waitEstablished(ctx context.Context, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
			return false, err
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%s: CRD %s is not established: %w", c.Name, name, err)
	}
	return nil
}
