package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cmacme "github.com/cert-manager/cert-manager/pkg/apis/acme/v1"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
)

// Production defaults of cert-manager's controller (its cmd module, which is
// not importable, sets them from flags). localcluster sets them explicitly.
const (
	// DefaultClusterResourceNamespace is where ClusterIssuers keep their Secrets.
	DefaultClusterResourceNamespace = "cert-manager"
	// DefaultCertificateRequestMinimumBackoff is the first wait before a
	// Certificate whose CertificateRequest failed is issued again.
	DefaultCertificateRequestMinimumBackoff = time.Hour
	// DefaultCertificateRequestMaximumBackoff caps that wait as it doubles.
	DefaultCertificateRequestMaximumBackoff = 32 * time.Hour
	// DefaultKubernetesAPIQPS and DefaultKubernetesAPIBurst are cert-manager's
	// client-side rate limits (used only when the API server has no API
	// Priority and Fairness).
	DefaultKubernetesAPIQPS   = 20
	DefaultKubernetesAPIBurst = 50
	// DefaultWorkers is the number of workers per cert-manager controller.
	DefaultWorkers = 5
)

// ClientQPS and ClientBurst are the client-side rate limits of the REST
// configs a Cluster hands out (Config, AddUser, AddServiceAccount): high
// enough that tests are not slowed by client-go's default of 5 QPS. Lower
// them on a copy to test throttling.
const (
	ClientQPS   = 200
	ClientBurst = 400
)

// ControlPlaneStartTimeout is how long kube-apiserver and etcd may take to
// become ready; KUBEBUILDER_CONTROLPLANE_START_TIMEOUT overrides it.
const ControlPlaneStartTimeout = 2 * time.Minute

// DefaultCopiedAnnotationPrefixes returns cert-manager's default for which
// Certificate annotations are copied to its CertificateRequests: all but
// those of kubectl, Flux and Argo CD.
func DefaultCopiedAnnotationPrefixes() []string {
	return []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"}
}

// Identities under which cert-manager runs in every Cluster.
const (
	CertManagerNamespace          = "cert-manager"
	CertManagerServiceAccount     = "cert-manager"
	CertManagerWebhookAccount     = "cert-manager-webhook"
	CertManagerControllerUsername = "system:serviceaccount:" + CertManagerNamespace + ":" + CertManagerServiceAccount
)

// Options configure a Cluster. The zero value is a cluster with cert-manager
// at its production defaults.
type Options struct {
	// Name identifies the cluster in logs and errors, for example
	// "management" or "workload". Default "local".
	Name string

	// BinaryDir is the directory holding the kube-apiserver and etcd binaries.
	// Default: $RELAYTLS_KUBE_BIN if set, else bin/kube at the repository root
	// (the nearest directory above the working directory with a go.mod), where
	// `make kube-binaries` builds them.
	BinaryDir string

	// CRDDirs are extra directories of CustomResourceDefinition manifests to
	// install, for example relaytls's deploy/crds. Each must exist.
	CRDDirs []string

	// CertManagerCRDDir overrides where cert-manager's CRDs are read from.
	// Default: deploy/crds of the cert-manager module this binary is built
	// with, found in the Go module cache.
	CertManagerCRDDir string

	// WithoutCertManager starts a bare control plane: no cert-manager CRDs,
	// controllers, webhook or RBAC.
	WithoutCertManager bool

	// ClusterResourceNamespace is cert-manager's --cluster-resource-namespace:
	// where ClusterIssuers' Secrets live. Created at start. Default
	// "cert-manager".
	ClusterResourceNamespace string

	// CertificateRequestMinimumBackoff and CertificateRequestMaximumBackoff
	// bound how long cert-manager waits before re-issuing a Certificate whose
	// last CertificateRequest failed. Defaults 1h and 32h, as in production.
	// Tests may shorten them (for example to see a retry); they can never be
	// zero, which in cert-manager means re-issuing in a tight loop.
	CertificateRequestMinimumBackoff time.Duration
	CertificateRequestMaximumBackoff time.Duration

	// CopiedAnnotationPrefixes selects the Certificate annotations copied to
	// CertificateRequests. Default DefaultCopiedAnnotationPrefixes().
	CopiedAnnotationPrefixes []string

	// KubernetesAPIQPS and KubernetesAPIBurst are cert-manager's client rate
	// limits. Defaults 20 and 50.
	KubernetesAPIQPS   float32
	KubernetesAPIBurst int

	// Workers is the number of workers of each cert-manager controller.
	// Default 5.
	Workers int

	// Controllers are the cert-manager controllers to run, by name. Default
	// DefaultControllers().
	Controllers []string

	// LogVerbosity is the logr verbosity of cert-manager's controllers and of
	// localcluster, written to the test log. cert-manager logs errors at 0,
	// information at 2 and debug at 5. Default 0.
	LogVerbosity int
}

// Cluster is a running local control plane. Its exported fields are the
// cluster-admin view of it; give the components under test their own
// identities with AddUser or AddServiceAccount.
type Cluster struct {
	// Name is Options.Name.
	Name string
	// Config is a cluster-admin (system:masters) REST config.
	Config *rest.Config
	// KubeconfigPath is a kubeconfig file for Config.
	KubeconfigPath string
	// Client is a cluster-admin client whose scheme knows the Kubernetes
	// built-in types, CRDs and cert-manager's types.
	Client client.Client
	// Scheme is Client's scheme. Add the project's own types to it if needed.
	Scheme *runtime.Scheme
	// Dir is a temporary directory owned by the cluster (kubeconfigs, webhook
	// serving certificate), removed when the cluster stops.
	Dir string
	// WebhookURL is the base URL of cert-manager's in-process webhook.
	WebhookURL string

	opts Options
	env  *envtest.Environment
	log  logr.Logger

	mu    sync.Mutex
	stops []func() error
}

// Start starts a cluster for the test t and stops it when t finishes
// (t.Cleanup). It fails t (never skips) when something is missing, with a
// message that says what to do. Call it from the test that owns the cluster:
// cert-manager's webhook lives as long as t.
func Start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	return StartAll(t, opts)[0]
}

// StartAll starts one cluster per Options at the same time, which is faster
// than one after the other, and returns them in the same order. Otherwise it
// is Start.
func StartAll(t *testing.T, opts ...Options) []*Cluster {
	t.Helper()
	failedBefore := t.Failed()
	clusters := make([]*Cluster, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i, o := range opts {
		if o.Name == "" {
			o.Name = "local"
			if len(opts) > 1 {
				o.Name = fmt.Sprintf("local-%d", i+1)
			}
		}
		log, closeLog := testLogger(t, o.LogVerbosity)
		c := &Cluster{Name: o.Name, opts: o, log: log.WithName(o.Name)}
		clusters[i] = c
		t.Cleanup(func() {
			defer closeLog()
			if err := c.stop(); err != nil {
				t.Errorf("localcluster %s: stopping: %v", c.Name, err)
			}
		})
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			errs[i] = c.start(ctx, t)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("localcluster %s: %w", c.Name, errs[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if t.Failed() && !failedBefore { // cert-manager's StartWebhookServer reports through t
		t.FailNow()
	}
	return clusters
}

func (c *Cluster) start(ctx context.Context, t *testing.T) error {
	begin := time.Now()
	o := &c.opts
	if err := o.complete(); err != nil {
		return err
	}
	binDir, err := resolveBinaryDir(o.BinaryDir)
	if err != nil {
		return err
	}
	var crdDirs []string
	if !o.WithoutCertManager {
		dir := o.CertManagerCRDDir
		if dir == "" {
			if dir, err = certManagerCRDDir(); err != nil {
				return err
			}
		}
		crdDirs = append(crdDirs, dir)
	}
	for _, dir := range o.CRDDirs {
		if !isDir(dir) {
			return fmt.Errorf("CRD directory %s (Options.CRDDirs) does not exist; if it holds generated CRDs, run `make manifests`", dir)
		}
		crdDirs = append(crdDirs, dir)
	}

	c.Dir, err = os.MkdirTemp("", "localcluster-"+safeName(c.Name)+"-")
	if err != nil {
		return err
	}
	c.onStop(func() error { return os.RemoveAll(c.Dir) })

	c.Scheme = runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(c.Scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(c.Scheme))
	utilruntime.Must(cmapi.AddToScheme(c.Scheme))
	utilruntime.Must(cmacme.AddToScheme(c.Scheme))

	c.env = &envtest.Environment{
		BinaryAssetsDirectory: binDir,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
		Scheme:                c.Scheme,
	}
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		// envtest's default (20 s) is too short on a loaded 2-core machine:
		// kube-apiserver took longer than that with several suites running.
		c.env.ControlPlaneStartTimeout = ControlPlaneStartTimeout
	}
	cfg, err := c.env.Start()
	if err != nil {
		return fmt.Errorf("starting kube-apiserver and etcd from %s: %w", binDir, err)
	}
	c.onStop(c.env.Stop)
	cfg.QPS, cfg.Burst = ClientQPS, ClientBurst
	c.Config = cfg
	c.KubeconfigPath, err = c.writeKubeconfig("admin", c.env.KubeConfig)
	if err != nil {
		return err
	}
	c.Client, err = client.New(cfg, client.Options{Scheme: c.Scheme})
	if err != nil {
		return fmt.Errorf("creating the admin client: %w", err)
	}
	if err := c.waitCRDsServed(ctx, c.env.CRDs...); err != nil {
		return err
	}
	c.log.V(1).Info("control plane started", "url", cfg.Host, "elapsed", time.Since(begin))

	if !o.WithoutCertManager {
		if err := c.startCertManager(ctx, t); err != nil {
			return err
		}
		c.log.V(1).Info("cert-manager started", "elapsed", time.Since(begin))
	}
	return nil
}

// complete fills defaults and refuses values cert-manager would misuse.
func (o *Options) complete() error {
	if o.ClusterResourceNamespace == "" {
		o.ClusterResourceNamespace = DefaultClusterResourceNamespace
	}
	if o.CertificateRequestMinimumBackoff < 0 || o.CertificateRequestMaximumBackoff < 0 {
		return errors.New("Options.CertificateRequestMinimumBackoff and MaximumBackoff must be positive (leave them zero for the 1h/32h defaults)")
	}
	if o.CertificateRequestMinimumBackoff == 0 {
		o.CertificateRequestMinimumBackoff = DefaultCertificateRequestMinimumBackoff
	}
	if o.CertificateRequestMaximumBackoff == 0 {
		o.CertificateRequestMaximumBackoff = max(DefaultCertificateRequestMaximumBackoff, o.CertificateRequestMinimumBackoff)
	}
	if o.CertificateRequestMaximumBackoff < o.CertificateRequestMinimumBackoff {
		return fmt.Errorf("Options.CertificateRequestMaximumBackoff (%s) is below CertificateRequestMinimumBackoff (%s)", o.CertificateRequestMaximumBackoff, o.CertificateRequestMinimumBackoff)
	}
	if o.CopiedAnnotationPrefixes == nil {
		o.CopiedAnnotationPrefixes = DefaultCopiedAnnotationPrefixes()
	}
	if o.KubernetesAPIQPS == 0 {
		o.KubernetesAPIQPS = DefaultKubernetesAPIQPS
	}
	if o.KubernetesAPIBurst == 0 {
		o.KubernetesAPIBurst = DefaultKubernetesAPIBurst
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.Controllers == nil {
		o.Controllers = DefaultControllers()
	}
	return nil
}

// onStop registers f to run when the cluster stops, before what was
// registered earlier.
func (c *Cluster) onStop(f func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stops = append(c.stops, f)
}

// stop undoes start in reverse order and reports every failure.
func (c *Cluster) stop() error {
	c.mu.Lock()
	stops := c.stops
	c.stops = nil
	c.mu.Unlock()
	var errs []error
	for i := len(stops) - 1; i >= 0; i-- {
		if err := stops[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CreateNamespace creates the namespace name; it is not an error if it exists.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// NewNamespace creates a namespace with a fresh name starting with prefix
// (default "test-") and returns its name.
func (c *Cluster) NewNamespace(ctx context.Context, prefix string) (string, error) {
	if prefix == "" {
		prefix = "test-"
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}
	if err := c.Client.Create(ctx, ns); err != nil {
		return "", fmt.Errorf("creating a namespace named %s*: %w", prefix, err)
	}
	return ns.Name, nil
}

func (c *Cluster) writeKubeconfig(name string, data []byte) (string, error) {
	path := filepath.Join(c.Dir, safeName(name)+".kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return "", fmt.Errorf("writing kubeconfig for %s: %w", name, err)
	}
	return path, nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// testLogger returns a logger writing to t.Log at verbosity v and a function
// that stops it. Logging after the stop is dropped instead of panicking,
// since cert-manager's goroutines may log while the test finishes.
func testLogger(t *testing.T, v int) (logr.Logger, func()) {
	var mu sync.RWMutex
	closed := false
	log := funcr.New(func(prefix, args string) {
		mu.RLock()
		defer mu.RUnlock()
		if closed {
			return
		}
		if prefix != "" {
			t.Log(prefix + ": " + args)
		} else {
			t.Log(args)
		}
	}, funcr.Options{Verbosity: v, LogTimestamp: true})
	return log, func() {
		mu.Lock()
		defer mu.Unlock()
		closed = true
	}
}
