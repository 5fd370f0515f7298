// Command controller is cert-manager's controller built from the public
// packages of the pinned cert-manager module (its own cmd/controller module is
// not published to the Go module proxy), so the kind suite can run
// cert-manager as pods from images built with no registry. It takes the
// flags cert-manager's Helm chart passes and runs the Certificate lifecycle,
// the approver, the CA and SelfSigned signers and the Issuer/ClusterIssuer
// controllers under leader election. ACME, Vault, Venafi and the ingress and
// Gateway shims are not built: naming one of them in --controllers is an
// error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"

	"github.com/relaytls/relaytls/internal/cmcontrollers"
)

// built is every controller this binary has, in start order.
var built = cmcontrollers.Names()

type options struct {
	clusterResourceNamespace string
	leaderElect              bool
	leaseNamespace           string
	leaseDuration            time.Duration
	renewDeadline            time.Duration
	retryPeriod              time.Duration
	controllers              string
	ownerRef                 bool
	qps                      float64
	burst                    int
	minBackoff, maxBackoff   time.Duration
	healthz, metrics         string
}

func main() {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	klog.InitFlags(fs)
	var o options
	fs.StringVar(&o.clusterResourceNamespace, "cluster-resource-namespace", "kube-system", "namespace of the Secrets that ClusterIssuers reference")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "elect a leader with a Lease before running the controllers")
	fs.StringVar(&o.leaseNamespace, "leader-election-namespace", "kube-system", "namespace of the leader election Lease")
	fs.DurationVar(&o.leaseDuration, "leader-election-lease-duration", 60*time.Second, "leader election lease duration")
	fs.DurationVar(&o.renewDeadline, "leader-election-renew-deadline", 40*time.Second, "leader election renew deadline")
	fs.DurationVar(&o.retryPeriod, "leader-election-retry-period", 15*time.Second, "leader election retry period")
	fs.StringVar(&o.controllers, "controllers", "*", "comma-separated controllers: * for all built ones, -name to leave one out")
	fs.BoolVar(&o.ownerRef, "enable-certificate-owner-ref", false, "make each Certificate the owner of its Secret")
	fs.Float64Var(&o.qps, "kube-api-qps", 20, "Kubernetes API queries per second")
	fs.IntVar(&o.burst, "kube-api-burst", 50, "Kubernetes API burst")
	// cert-manager's production defaults (its cmd module): a failing
	// CertificateRequest is retried after 1h, doubling up to 32h.
	fs.DurationVar(&o.minBackoff, "certificate-request-minimum-backoff-duration", time.Hour, "first retry delay of a failed issuance")
	fs.DurationVar(&o.maxBackoff, "certificate-request-maximum-backoff-duration", 32*time.Hour, "largest retry delay of a failed issuance")
	fs.StringVar(&o.healthz, "healthz-listen-address", ":9403", "address of /livez")
	fs.StringVar(&o.metrics, "metrics-listen-address", ":9402", "address of /metrics (0 turns it off)")
	// Flags the chart passes for parts this binary does not have: accepted
	// so the chart runs unchanged, and ignored.
	for _, name := range []string{"acme-http01-solver-image", "default-issuer-name", "default-issuer-kind",
		"default-issuer-group", "feature-gates", "acme-http01-solver-extra-labels", "dns01-recursive-nameservers",
		"acme-http01-solver-runtime-class-name", "max-concurrent-challenges", "config"} {
		fs.String(name, "", "not used by this build (ACME, ingress shim and config file are not included)")
	}
	fs.Bool("dns01-recursive-nameservers-only", false, "not used by this build")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		fmt.Fprintln(os.Stderr, "controller: --config is not supported by this build; pass flags instead")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := klog.Background().WithName("cert-manager-controller")
	ctx = logr.NewContext(ctx, log)
	if err := run(ctx, log, o); err != nil {
		log.Error(err, "controller stopped")
		os.Exit(1)
	}
}

// selected resolves --controllers against the built set.
func selected(spec string) ([]string, error) {
	var on []string
	var off []string
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
		case item == "*":
			on = append(on, built...)
		case strings.HasPrefix(item, "-"):
			off = append(off, item[1:])
		default:
			if !slices.Contains(built, item) {
				return nil, fmt.Errorf("--controllers: %q is not in this build (built: %s)", item, strings.Join(built, ", "))
			}
			on = append(on, item)
		}
	}
	var out []string
	for _, name := range built {
		if slices.Contains(on, name) && !slices.Contains(off, name) {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--controllers selects no controller")
	}
	return out, nil
}

func run(ctx context.Context, log logr.Logger, o options) error {
	names, err := selected(o.controllers)
	if err != nil {
		return err
	}
	serve(ctx, log, o.healthz, "/livez", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	if o.metrics != "0" {
		serve(ctx, log, o.metrics, "/metrics", promhttp.Handler())
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("in-cluster config: %w", err)
	}
	start := func(ctx context.Context) {
		if err := runControllers(ctx, log, o, names); err != nil {
			log.Error(err, "controllers stopped")
			os.Exit(1)
		}
	}
	if !o.leaderElect {
		start(ctx)
		return nil
	}
	id, err := os.Hostname()
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.leaseNamespace, Name: "cert-manager-controller"},
		Client:     kubernetes.NewForConfigOrDie(cfg).CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.leaseDuration,
		RenewDeadline:   o.renewDeadline,
		RetryPeriod:     o.retryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: start,
			OnStoppedLeading: func() {
				if ctx.Err() == nil {
					log.Info("lost the leader election lease: exiting")
					os.Exit(1)
				}
			},
		},
	})
	return nil
}

func runControllers(ctx context.Context, log logr.Logger, o options, names []string) error {
	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		KubernetesAPIQPS:   float32(o.qps),
		KubernetesAPIBurst: o.burst,
		IssuerOptions:      controllerpkg.IssuerOptions{ClusterResourceNamespace: o.clusterResourceNamespace},
		CertificateOptions: controllerpkg.CertificateOptions{
			EnableOwnerRef: o.ownerRef,
			// cert-manager's default: every annotation but kubectl's and
			// GitOps tools' own reaches the CertificateRequests.
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: o.minBackoff,
			CertificateRequestMaximumBackoffDuration: o.maxBackoff,
		},
		SchedulerOptions: controllerpkg.SchedulerOptions{MaxConcurrentChallenges: 60},
	})
	if err != nil {
		return fmt.Errorf("configuring the controllers: %w", err)
	}
	known := controllerpkg.Known()
	var ctrls []controllerpkg.Interface
	for _, name := range names {
		c, err := known[name](factory)
		if err != nil {
			return fmt.Errorf("creating controller %s: %w", name, err)
		}
		ctrls = append(ctrls, c)
	}
	shared, err := factory.Build("cert-manager")
	if err != nil {
		return err
	}
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	log.Info("starting controllers", "controllers", names)
	var wg sync.WaitGroup
	for i, c := range ctrls {
		wg.Go(func() {
			if err := c.Run(5, ctx); err != nil && ctx.Err() == nil {
				log.Error(err, "controller stopped", "controller", names[i])
			}
		})
	}
	wg.Wait()
	shared.SharedInformerFactory.Shutdown()
	shared.KubeSharedInformerFactory.Shutdown()
	return nil
}

func serve(ctx context.Context, log logr.Logger, addr, path string, h http.Handler) {
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error(err, "cannot listen", "address", addr)
		os.Exit(1)
	}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
}
