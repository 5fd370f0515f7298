// Command relay-issuer is the relaytls cert-manager external issuer: it signs
// CertificateRequests for RelayIssuers and RelayClusterIssuers after checking
// the relay identity proof (SPEC section 5).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	ratelimit "golang.org/x/time/rate"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/relaytls/relaytls/internal/command"
	"github.com/relaytls/relaytls/internal/version"
	"github.com/relaytls/relaytls/issuer/app"
	"github.com/relaytls/relaytls/issuer/endpoint"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	command.Exit("relay-issuer", err)
}

// run is the whole command: flags from args, the version and usage to
// stdout and stderr, logs to stderr, until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil || f.showVersion {
		if err == nil {
			version.Print(stdout, "relay-issuer")
		}
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := logr.FromSlogHandler(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)

	o := f.options
	if err := o.Validate(); err != nil {
		return err
	}
	cfg, err := loadConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	logger.Info("starting relay-issuer", "namespace", o.Namespace, "clusterResourceNamespace", o.ClusterResourceNamespace)
	return app.Run(ctx, cfg, o)
}

// flags is the parsed command line.
type flags struct {
	options     app.Options
	kubeconfig  string
	logLevel    string
	showVersion bool
}

// parseFlags reads the command line into the issuer's options and checks
// what can be checked without a cluster; the usage and parse errors go to
// stderr.
func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	fs := flag.NewFlagSet("relay-issuer", flag.ContinueOnError)
	showVersion := version.AddFlag(fs)
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
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", app.DefaultLeaderElectionID, "name of the leader election Lease")
	fs.DurationVar(&o.MaxRetryDuration, "max-retry-duration", app.DefaultMaxRetryDuration, "how long a retryable signing error is retried before the request fails")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.IntVar(&o.Workers, "workers", app.DefaultWorkers, "concurrent reconciles per controller")
	fs.DurationVar(&o.MaxBackoff, "max-backoff", app.DefaultMaxBackoff, "longest wait before an issuer or request whose check or signing failed is tried again")

	is := &app.Issuance{}
	var rate float64
	fs.StringVar(&is.ListenAddr, "issuance-listen-address", "", "serve the issuance endpoint for workload clusters on this address, e.g. :8443 (off when empty)")
	fs.StringVar(&is.CertDir, "issuance-cert-dir", "", "directory with the endpoint's serving tls.crt and tls.key (mount relay-server-tls-secret); reloaded when it changes")
	fs.StringVar(&is.IssuerKind, "issuance-issuer-kind", "RelayIssuer", "kind of the CA-mode issuer the endpoint forwards to: RelayIssuer or RelayClusterIssuer")
	fs.StringVar(&is.IssuerName, "issuance-issuer-name", "relay", "name of the CA-mode issuer the endpoint forwards to (it must require identity proofs)")
	fs.StringVar(&is.Namespace, "issuance-namespace", "", "namespace of the endpoint's CertificateRequests (default: --namespace)")
	fs.DurationVar(&is.Timeout, "issuance-timeout", endpoint.DefaultTimeout, "how long one enrollment call may take")
	fs.IntVar(&is.MaxConcurrent, "issuance-max-concurrent", endpoint.DefaultMaxConcurrent, "enrollment calls in progress at once; more wait for a slot")
	fs.Float64Var(&rate, "issuance-rate-per-cluster", float64(endpoint.DefaultRatePerCluster), "enrollment calls per second allowed per cluster name")
	fs.IntVar(&is.Burst, "issuance-burst", endpoint.DefaultBurst, "enrollment calls per cluster name allowed in a burst")
	var refusedRate float64
	fs.Float64Var(&refusedRate, "issuance-refused-rate-per-source", float64(endpoint.DefaultRefusedRatePerSource), "refused enrollment calls per second one source address gets a full answer for; beyond that they are answered TooManyRefusals and not logged (a call with a good proof is never held back)")
	fs.IntVar(&is.RefusedBurstPerSource, "issuance-refused-burst-per-source", endpoint.DefaultRefusedBurstPerSource, "refused enrollment calls per source address allowed in a burst")
	fs.IntVar(&is.MaxClusters, "issuance-max-tracked-clusters", endpoint.DefaultMaxClusters, "verified clusters whose rate limit is remembered (least recently seen forgotten first)")
	fs.IntVar(&is.MaxSources, "issuance-max-tracked-sources", endpoint.DefaultMaxSources, "source addresses whose refusal budget is remembered (least recently seen forgotten first)")
	fs.IntVar(&is.MaxWaiting, "issuance-max-waiting", 0, "enrollment calls that may wait for a slot; more are answered Busy at once (default 4 x --issuance-max-concurrent)")
	fs.DurationVar(&is.MaxDuration, "issuance-max-duration", endpoint.DefaultMaxDuration, "longest certificate lifetime a call may ask for; longer requests are shortened to it (the issuer's maxDuration may shorten further); negative or overflowing durations are refused")
	fs.BoolVar(&is.KeepRequests, "issuance-keep-requests", false, "keep the endpoint's CertificateRequests after answering (debugging)")
	if err := command.ParseFlags(fs, args, stderr); err != nil {
		return nil, err
	}
	if *showVersion {
		return &flags{showVersion: true}, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	for name, v := range map[string]float64{
		"--issuance-rate-per-cluster": rate, "--issuance-refused-rate-per-source": refusedRate,
		"--issuance-burst": float64(is.Burst), "--issuance-refused-burst-per-source": float64(is.RefusedBurstPerSource),
		"--issuance-max-tracked-clusters": float64(is.MaxClusters), "--issuance-max-tracked-sources": float64(is.MaxSources),
		"--issuance-max-waiting": float64(is.MaxWaiting), "--issuance-max-concurrent": float64(is.MaxConcurrent),
		"--issuance-max-duration": float64(is.MaxDuration), "--issuance-timeout": float64(is.Timeout),
	} {
		if v < 0 {
			return nil, fmt.Errorf("%s must not be negative", name)
		}
	}
	if is.ListenAddr != "" {
		is.RatePerCluster = ratelimit.Limit(rate)
		is.RefusedRatePerSource = ratelimit.Limit(refusedRate)
		o.Issuance = is
	} else if set := issuanceFlagsSet(fs); len(set) > 0 {
		return nil, fmt.Errorf("%s only work with --issuance-listen-address", strings.Join(set, ", "))
	}
	for _, ns := range strings.Split(secretNamespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			o.SecretNamespaces = append(o.SecretNamespaces, ns)
		}
	}
	return &flags{options: o, kubeconfig: kubeconfig, logLevel: logLevel}, nil
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

// issuanceFlagsSet lists the --issuance-* flags given on the command line.
func issuanceFlagsSet(fs *flag.FlagSet) []string {
	var set []string
	fs.Visit(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "issuance-") {
			set = append(set, "--"+f.Name)
		}
	})
	return set
}
