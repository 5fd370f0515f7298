// Package app runs relay-issuer: it builds the controller manager (cache,
// leader election, health and metrics endpoints) and starts the issuer
// controllers on it. The binary's main only parses flags into Options.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/issuer/controller"
	"github.com/relaytls/relaytls/issuer/endpoint"
	"github.com/relaytls/relaytls/issuer/signer"
)

// The defaults of the options that have one, also the flags' defaults.
const (
	DefaultLeaderElectionID = "relay-issuer.relaytls.io"
	DefaultWorkers          = 4
	DefaultMaxBackoff       = 30 * time.Second
	DefaultMaxRetryDuration = 2 * time.Minute
)

// Options configure relay-issuer.
type Options struct {
	// Namespace is the namespace relay-issuer runs in. Its Secrets are
	// readable and its leader election Lease lives there.
	Namespace string
	// ClusterResourceNamespace holds RelayClusterIssuer Secrets. Defaults to
	// Namespace.
	ClusterResourceNamespace string
	// SecretNamespaces are further namespaces whose Secrets the issuer may
	// read, for RelayIssuers outside Namespace. Each needs a Role granting it.
	SecretNamespaces []string
	// MetricsAddr and HealthAddr are listen addresses; "0" turns one off.
	MetricsAddr string
	HealthAddr  string
	// LeaderElect turns leader election on.
	LeaderElect bool
	// LeaderElectionID names the Lease.
	LeaderElectionID string
	// MaxRetryDuration bounds how long a retryable signing error is retried.
	MaxRetryDuration time.Duration
	// MaxBackoff caps the retry delay of an issuer or request whose check or
	// signing failed (an unreachable endpoint is retried at least this often).
	MaxBackoff time.Duration
	// Clock is the time source of the signer; nil is the real clock.
	Clock clock.PassiveClock
	// Issuance, when set, serves the issuance endpoint.
	Issuance *Issuance
	// Workers is the number of concurrent reconciles per controller.
	Workers int
	// Logger, when set, is the manager's logger (controller-runtime's global
	// logger otherwise).
	Logger logr.Logger
	// SeveralPerProcess lets more than one relay-issuer run in one process
	// (tests run a management and a workload issuer side by side); it turns
	// off controller-runtime's check that controller names are unique.
	SeveralPerProcess bool
}

// Issuance configures the issuance endpoint.
type Issuance struct {
	endpoint.Config
	// ListenAddr is the endpoint's listen address; Listener, when set, is
	// used instead (tests).
	ListenAddr string
	Listener   net.Listener
	// CertDir holds the serving tls.crt and tls.key, mounted from a Secret
	// (for example relay-server-tls-secret). It is watched and polled; a
	// new certificate is checked before it is used, and a bad one is refused
	// while the last good one keeps serving.
	CertDir string
	// TLS, instead of CertDir, gives the serving configuration directly.
	TLS *tls.Config
}

// Validate checks the options and fills in defaults.
func (o *Options) Validate() error {
	if o.Namespace == "" {
		return errors.New("--namespace is required (or set POD_NAMESPACE): relay-issuer reads Secrets and holds its leader election Lease there")
	}
	if o.ClusterResourceNamespace == "" {
		o.ClusterResourceNamespace = o.Namespace
	}
	if o.LeaderElectionID == "" {
		o.LeaderElectionID = DefaultLeaderElectionID
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if is := o.Issuance; is != nil {
		if is.ListenAddr == "" && is.Listener == nil {
			return errors.New("the issuance endpoint needs --issuance-listen-address")
		}
		if (is.TLS == nil) == (is.CertDir == "") {
			return errors.New("the issuance endpoint needs a serving certificate: set --issuance-cert-dir")
		}
		if is.Namespace == "" {
			is.Namespace = o.Namespace
		}
	}
	if o.MaxRetryDuration <= 0 {
		return fmt.Errorf("--max-retry-duration must be positive, got %s", o.MaxRetryDuration)
	}
	return nil
}

// secretNamespaces lists, once each and sorted, the namespaces whose Secrets
// relay-issuer may read.
func (o *Options) secretNamespaces() []string {
	all := append([]string{o.Namespace, o.ClusterResourceNamespace}, o.SecretNamespaces...)
	slices.Sort(all)
	return slices.Compact(all)
}

// NewScheme returns the scheme relay-issuer works with.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, cmapi.AddToScheme, relayv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run starts relay-issuer and blocks until ctx ends or the manager fails.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	scheme, err := NewScheme()
	if err != nil {
		return fmt.Errorf("building the scheme: %w", err)
	}
	secretNamespaces := map[string]cache.Config{}
	for _, ns := range o.secretNamespaces() {
		secretNamespaces[ns] = cache.Config{}
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	var logger *logr.Logger
	if o.Logger.GetSink() != nil {
		logger = &o.Logger
	}
	mopts := ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:        o.HealthAddr,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              o.LeaderElectionID,
		LeaderElectionNamespace:       o.Namespace,
		LeaderElectionReleaseOnCancel: true,
		Controller:                    config.Controller{SkipNameValidation: &o.SeveralPerProcess},
		Cache: cache.Options{
			// Secrets are cached only where the issuer may read them, which
			// is also all its RBAC allows.
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Secret{}: {Namespaces: secretNamespaces},
			},
		},
	}
	if logger != nil {
		mopts.Logger = *logger
	}
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		return fmt.Errorf("creating the controller manager: %w", err)
	}
	s := &signer.Signer{
		Client:                   mgr.GetClient(),
		APIReader:                mgr.GetAPIReader(),
		ClusterResourceNamespace: o.ClusterResourceNamespace,
		SecretNamespaces:         o.secretNamespaces(),
		Clock:                    o.Clock,
	}
	if err := controller.Setup(ctx, mgr, s, controller.Tuning{
		MaxRetryDuration: o.MaxRetryDuration,
		MaxBackoff:       o.MaxBackoff,
		Workers:          o.Workers,
	}); err != nil {
		return err
	}
	if is := o.Issuance; is != nil {
		cm, err := cmclient.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("creating the cert-manager client of the issuance endpoint: %w", err)
		}
		srv, err := endpoint.New(is.Config, cm, mgr.GetClient(), s, mgr.GetLogger().WithName("issuance"))
		if err != nil {
			return err
		}
		tlsCfg := is.TLS
		if tlsCfg == nil {
			if tlsCfg, err = servingTLS(mgr, is.CertDir); err != nil {
				return err
			}
		}
		if err := mgr.Add(&endpoint.Runnable{Server: srv, Addr: is.ListenAddr, Listener: is.Listener, TLS: tlsCfg, Informers: mgr.GetCache()}); err != nil {
			return fmt.Errorf("adding the issuance endpoint: %w", err)
		}
	}
	if o.HealthAddr != "0" && o.HealthAddr != "" {
		if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
			return fmt.Errorf("adding the health check: %w", err)
		}
		if err := mgr.AddReadyzCheck("informers", cacheSynced(mgr)); err != nil {
			return fmt.Errorf("adding the readiness check: %w", err)
		}
	}
	defer s.Close()
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the controller manager: %w", err)
	}
	return nil
}

// cacheSynced is ready once the manager's informers have synced.
func cacheSynced(mgr ctrl.Manager) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("informer caches have not synced")
		}
		return nil
	}
}

// servingTLS loads the endpoint's certificate from dir and keeps it current:
// the reloader runs with the manager, on every replica.
func servingTLS(mgr ctrl.Manager, dir string) (*tls.Config, error) {
	log := slog.New(logr.ToSlogHandler(mgr.GetLogger().WithName("issuance-cert")))
	r, err := creds.NewReloader(creds.Sources{CertDir: dir}, creds.Expect{Role: creds.RoleServer}, creds.Options{Log: log})
	if err != nil {
		return nil, fmt.Errorf("the issuance endpoint's serving certificate in %s: %w", dir, err)
	}
	if err := mgr.Add(everyReplica(r.Run)); err != nil {
		return nil, fmt.Errorf("adding the serving certificate reloader: %w", err)
	}
	return creds.ServerTLS(r, false, creds.TLSOptions{MinVersion: tls.VersionTLS12}), nil
}

// everyReplica is a manager runnable that runs whether or not this replica
// leads.
type everyReplica func(context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (everyReplica) NeedLeaderElection() bool          { return false }
