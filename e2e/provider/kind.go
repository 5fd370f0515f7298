package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/manifest"
)

// Environment variables of the kind provider.
const (
	// KindBinaryEnv is the kind command (default "kind" on $PATH).
	KindBinaryEnv = "RELAYTLS_KIND"
	// KindCertManagerEnv is a file path or https URL of cert-manager's
	// release manifest (default: the v1.21.2 release on GitHub).
	KindCertManagerEnv = "RELAYTLS_KIND_CERT_MANAGER_MANIFEST"
)

const defaultCertManagerManifest = "https://github.com/cert-manager/cert-manager/releases/download/v1.21.2/cert-manager.yaml"

// Kind creates one kind cluster per name (named relaytls-e2e-<name>),
// installs cert-manager from its release manifest and the relaytls CRDs from
// deploy/crds, and deletes the clusters when the test ends. The relaytls
// components still run as processes on the host, with kubeconfigs of their
// ServiceAccounts (made with the TokenRequest API), exactly as on the local
// provider; the relay and the issuance endpoint stay on 127.0.0.1.
//
// It needs Docker (or another engine kind supports) and network access for
// the node image and cert-manager's images. It has not been run on the
// machines the project is built on, which have neither.
type Kind struct{}

// Name implements Provider.
func (Kind) Name() string { return "kind" }

// Start implements Provider.
func (k Kind) Start(t *testing.T, names ...string) []Cluster {
	t.Helper()
	bin := os.Getenv(KindBinaryEnv)
	if bin == "" {
		bin = "kind"
	}
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("%s=kind needs the kind command (%s): %v", Env, bin, err)
	}
	dir := t.TempDir()
	out := make([]Cluster, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		kindName := "relaytls-e2e-" + name
		kubeconfig := filepath.Join(dir, name+".kubeconfig")
		t.Cleanup(func() {
			cmd := exec.Command(bin, "delete", "cluster", "--name", kindName)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("kind delete cluster %s: %v\n%s", kindName, err, b)
			}
		})
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			c, err := startKind(ctx, bin, name, kindName, kubeconfig, dir)
			out[i], errs[i] = c, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}

func startKind(ctx context.Context, bin, name, kindName, kubeconfig, dir string) (*kindCluster, error) {
	cmd := exec.CommandContext(ctx, bin, "create", "cluster", "--name", kindName, "--kubeconfig", kubeconfig, "--wait", "3m")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kind create cluster %s: %w\n%s", kindName, err, b)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	scheme := apiruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	utilruntime.Must(cmapi.AddToScheme(scheme))
	utilruntime.Must(relayv1.AddToScheme(scheme))
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	c := &kindCluster{name: name, cfg: cfg, client: cl, scheme: scheme, kubeconfig: kubeconfig, dir: dir}
	manifest, err := readManifest(ctx, envOr(KindCertManagerEnv, defaultCertManagerManifest))
	if err != nil {
		return nil, err
	}
	if err := c.Apply(ctx, manifest); err != nil {
		return nil, fmt.Errorf("installing cert-manager in %s: %w", kindName, err)
	}
	crds, err := filepath.Glob(RepoPath("deploy/crds/*.yaml"))
	if err != nil || len(crds) == 0 {
		return nil, fmt.Errorf("no CRDs in deploy/crds (run make manifests): %v", err)
	}
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := c.Apply(ctx, b); err != nil {
			return nil, err
		}
	}
	return c, c.waitCertManager(ctx)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func readManifest(ctx context.Context, src string) ([]byte, error) {
	if !strings.HasPrefix(src, "https://") {
		return os.ReadFile(src)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: %s", src, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
}

type kindCluster struct {
	name       string
	cfg        *rest.Config
	client     client.Client
	scheme     *apiruntime.Scheme
	kubeconfig string
	dir        string
}

func (k *kindCluster) Name() string               { return k.name }
func (k *kindCluster) Client() client.Client      { return k.client }
func (k *kindCluster) Scheme() *apiruntime.Scheme { return k.scheme }
func (k *kindCluster) AdminConfig() *rest.Config  { return k.cfg }
func (k *kindCluster) AdminKubeconfig() string    { return k.kubeconfig }

// Apply server-side applies each object, waiting for CRDs to be established.
func (k *kindCluster) Apply(ctx context.Context, manifests ...[]byte) error {
	for _, m := range manifests {
		objs, err := manifest.Decode(m)
		if err != nil {
			return err
		}
		for _, obj := range objs {
			if err := k.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner("relaytls-e2e"), client.ForceOwnership); err != nil {
				return fmt.Errorf("applying %s %s: %w", obj.GetKind(), obj.GetName(), err)
			}
			if obj.GetKind() == "CustomResourceDefinition" {
				if err := k.waitEstablished(ctx, obj.GetName()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (k *kindCluster) waitEstablished(ctx context.Context, name string) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := k.client.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
			return false, nil
		}
		return apihelpers.IsCRDConditionTrue(&crd, apiextensionsv1.Established), nil
	})
}

// waitCertManager waits until cert-manager's webhook answers: a dry-run
// Issuer without any issuer type is refused by it only.
func (k *kindCluster) waitCertManager(ctx context.Context) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		probe := &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Name: "relaytls-webhook-probe", Namespace: "cert-manager"}}
		last = k.client.Create(ctx, probe, client.DryRunAll)
		return last != nil && strings.Contains(last.Error(), "denied the request"), nil
	})
	if err != nil {
		return fmt.Errorf("cert-manager's webhook in %s does not answer (last: %v): %w", k.name, last, err)
	}
	return nil
}

// ServiceAccount creates the ServiceAccount if needed and returns a config
// with a one-day token from the TokenRequest API.
func (k *kindCluster) ServiceAccount(ctx context.Context, ns, name string) (*rest.Config, string, error) {
	cs, err := kubernetes.NewForConfig(k.cfg)
	if err != nil {
		return nil, "", err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, "", err
	}
	exp := int64(24 * 3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("token for %s/%s: %w", ns, name, err)
	}
	cfg := rest.AnonymousClientConfig(k.cfg)
	cfg.BearerToken = tr.Status.Token
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: k.cfg.Host, CertificateAuthorityData: k.cfg.CAData}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	path := filepath.Join(k.dir, k.name+"-"+ns+"-"+name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return nil, "", err
	}
	return cfg, path, nil
}

// Attach returns a Cluster for a kind cluster that is already running (as
// hack/kind/e2e.sh makes them): context names its admin context in the
// kubeconfig file. Nothing is installed and nothing is deleted.
func Attach(name, kubeconfig, context string) (Cluster, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s, context %s: %w", kubeconfig, context, err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	scheme := apiruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	utilruntime.Must(cmapi.AddToScheme(scheme))
	utilruntime.Must(relayv1.AddToScheme(scheme))
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &kindCluster{name: name, cfg: cfg, client: cl, scheme: scheme, kubeconfig: kubeconfig}, nil
}
