// Package kube connects relayctl to clusters by kubeconfig, context and
// namespace (the way kubectl does, with cli-runtime's ConfigFlags) and
// applies objects with server-side apply.
package kube

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/deploy/profiles"
)

// FieldManager is relayctl's server-side apply field manager.
const FieldManager = "relayctl"

// Conn is a connection to one cluster.
type Conn struct {
	// Name describes the cluster in messages ("management cluster (context kind-mgmt)").
	Name   string
	Config *rest.Config
	Client client.Client
	// Namespace is where relaytls lives in this cluster: --namespace, else
	// the kubeconfig context's namespace, else DefaultNamespace.
	Namespace string
}

// DefaultNamespace is the namespace relayctl uses when neither a flag nor
// the kubeconfig context names one: the chart's and the profiles' default.
const DefaultNamespace = profiles.Namespace

// Target is one cluster as the command line names it: a kubeconfig file,
// a context and a namespace, each empty for its default. The fields are
// cli-runtime's ConfigFlags, so the kubeconfig is loaded and merged the way
// kubectl does it.
type Target struct {
	// Role names the cluster in messages: management or workload.
	Role  string
	Flags *genericclioptions.ConfigFlags
}

// NewTarget returns a Target whose flags are all empty.
func NewTarget(role string) *Target {
	s := func() *string { v := ""; return &v }
	return &Target{Role: role, Flags: &genericclioptions.ConfigFlags{KubeConfig: s(), Context: s(), Namespace: s()}}
}

// Given reports whether a kubeconfig file or context was named.
func (t *Target) Given() bool { return *t.Flags.KubeConfig != "" || *t.Flags.Context != "" }

// Connect loads kubeconfig (empty: $KUBECONFIG or ~/.kube/config) and
// context (empty: the current context). role names the cluster in errors.
// The namespace is the context's, else DefaultNamespace.
func Connect(role, kubeconfig, kubeContext string) (*Conn, error) {
	t := NewTarget(role)
	*t.Flags.KubeConfig, *t.Flags.Context = kubeconfig, kubeContext
	return t.Connect()
}

// Connect opens the target cluster.
func (t *Target) Connect() (*Conn, error) {
	cc := t.Flags.ToRawKubeConfigLoader()
	kubeContext := *t.Flags.Context
	cfg, err := cc.ClientConfig()
	if err != nil {
		where := "the current context"
		if kubeContext != "" {
			where = "context " + kubeContext
		}
		return nil, fmt.Errorf("%s cluster: loading %s: %w", t.Role, where, err)
	}
	raw, _ := cc.RawConfig()
	name := kubeContext
	if name == "" {
		name = raw.CurrentContext
	}
	ns := *t.Flags.Namespace
	if ns == "" {
		if kc := raw.Contexts[name]; kc != nil && kc.Namespace != "" {
			ns = kc.Namespace
		} else {
			ns = DefaultNamespace
		}
	}
	if errs := validation.ValidateNamespaceName(ns, false); len(errs) > 0 {
		return nil, fmt.Errorf("%s cluster: namespace %q: %s", t.Role, ns, strings.Join(errs, "; "))
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("%s cluster: %w", t.Role, err)
	}
	desc := t.Role + " cluster"
	if name != "" {
		desc += " (context " + name + ")"
	}
	return &Conn{Name: desc, Config: cfg, Client: c, Namespace: ns}, nil
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
		return apihelpers.IsCRDConditionTrue(&crd, apiextensionsv1.Established), nil
	})
	if err != nil {
		return fmt.Errorf("%s: CRD %s is not established: %w", c.Name, name, err)
	}
	return nil
}
