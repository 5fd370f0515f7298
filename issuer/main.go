// Command relay-issuer is the relaytls cert-manager external issuer: it signs
// CertificateRequests for RelayIssuers and RelayClusterIssuers after checking
// the relay identity proof (SPEC section 5).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/relaytls/relaytls/issuer/app"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "relay-issuer: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("relay-issuer", flag.ContinueOnError)
	var (
		o                app.Options
		kubeconfig       string
		logLevel         string
		secretNamespaces string
	)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty uses the in-cluster config or $KUBECONFIG")
	fs.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace relay-issuer runs in (default $POD_NAMESPACE)")
	fs.StringVar(&o.ClusterResourceNamespace, "cluster-resource-namespace", "", "namespace of RelayClusterIssuer Secrets (default: --namespace)")
	fs.StringVar(&secretNamespaces, "secret-namespaces", "", "comma-separated further namespaces whose Secrets RelayIssuers there may use (each needs a Role)")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", `listen address of the Prometheus metrics endpoint ("0" disables)`)
	fs.StringVar(&o.HealthAddr, "health-probe-bind-address", ":8081", `listen address of /healthz and /readyz ("0" disables)`)
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, "elect a leader so that only one replica signs")
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", "relay-issuer.relaytls.io", "name of the leader election Lease")
	fs.DurationVar(&o.MaxRetryDuration, "max-retry-duration", 2*time.Minute, "how long a retryable signing error is retried before the request fails")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	for _, ns := range strings.Split(secretNamespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			o.SecretNamespaces = append(o.SecretNamespaces, ns)
		}
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)

	if err := o.Validate(); err != nil {
		return err
	}
	cfg, err := loadConfig(kubeconfig)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger.Info("starting relay-issuer", "namespace", o.Namespace, "clusterResourceNamespace", o.ClusterResourceNamespace)
	return app.Run(ctx, cfg, o)
}

// loadConfig reads --kubeconfig when given, else controller-runtime's usual
// order ($KUBECONFIG, in-cluster, ~/.kube/config).
func loadConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("finding a Kubernetes config (use --kubeconfig): %w", err)
	}
	return cfg, nil
}
