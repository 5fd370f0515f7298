package localcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	cmserver "github.com/cert-manager/cert-manager/pkg/webhook/server"
	cmwebhook "github.com/cert-manager/cert-manager/test/webhook"

	"github.com/relaytls/relaytls/internal/cmcontrollers"
)

// DefaultControllers returns the cert-manager controllers a Cluster runs:
// the set in internal/cmcontrollers, which the kind controller image runs too.
func DefaultControllers() []string {
	return cmcontrollers.Names()
}

//go:embed rbac/cert-manager.yaml
var certManagerRBAC []byte

// webhookName is the name of cert-manager's webhook configurations.
const webhookName = "cert-manager-webhook"

func (c *Cluster) startCertManager(ctx context.Context, t *testing.T) error {
	for _, ns := range []string{CertManagerNamespace, c.opts.ClusterResourceNamespace} {
		if err := c.CreateNamespace(ctx, ns); err != nil {
			return err
		}
	}
	if err := c.Apply(ctx, certManagerRBAC); err != nil {
		return fmt.Errorf("applying the stand-in for cert-manager's RBAC: %w", err)
	}
	begin := time.Now()
	if err := c.startWebhook(ctx, t); err != nil {
		return err
	}
	c.log.V(1).Info("cert-manager webhook registered and effective", "url", c.WebhookURL, "elapsed", time.Since(begin))
	return c.startControllers(ctx)
}

// startWebhook runs cert-manager's admission webhook in-process as its own
// service account and registers it with the API server like the Helm chart
// does (same rules, failurePolicy Fail), then waits until the API server
// really calls it.
func (c *Cluster) startWebhook(ctx context.Context, t *testing.T) error {
	_, kubeconfig, err := c.AddServiceAccount(CertManagerNamespace, CertManagerWebhookAccount)
	if err != nil {
		return err
	}
	// The port is chosen here: left to the server, it is written by the
	// server's goroutine while StartWebhookServer reads it, a data race that
	// fails tests run with -race.
	port, err := freeLoopbackPort()
	if err != nil {
		return fmt.Errorf("choosing a port for cert-manager's webhook: %w", err)
	}
	// StartWebhookServer fails t itself when it cannot start. Its server lives
	// until t's context ends or stop is called.
	server, stop := cmwebhook.StartWebhookServer(t, []string{"--kubeconfig=" + kubeconfig},
		func(s *cmserver.Server) { s.ListenAddr = port })
	c.onStop(func() error { stop(); return nil })
	c.WebhookURL = server.URL

	if err := waitServing(ctx, server.URL, server.CAPEM); err != nil {
		return fmt.Errorf("cert-manager webhook at %s: %w", server.URL, err)
	}
	c.log.V(2).Info("cert-manager webhook serving", "url", server.URL)

	sideEffects := admissionregistrationv1.SideEffectClassNone
	failurePolicy := admissionregistrationv1.Fail
	equivalent := admissionregistrationv1.Equivalent
	timeout := int32(10)
	clientConfig := func(path string) admissionregistrationv1.WebhookClientConfig {
		u := server.URL + path
		return admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: server.CAPEM}
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: webhookName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "webhook.cert-manager.io",
			ClientConfig: clientConfig("/validate"),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{"cert-manager.io", "acme.cert-manager.io"},
					APIVersions: []string{"v1"},
					Resources:   []string{"*/*"},
				},
			}},
			AdmissionReviewVersions: []string{"v1"},
			MatchPolicy:             &equivalent,
			TimeoutSeconds:          &timeout,
			FailurePolicy:           &failurePolicy,
			SideEffects:             &sideEffects,
		}},
	}
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: webhookName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "webhook.cert-manager.io",
			ClientConfig: clientConfig("/mutate"),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{"cert-manager.io"},
					APIVersions: []string{"v1"},
					Resources:   []string{"certificaterequests"},
				},
			}},
			AdmissionReviewVersions: []string{"v1"},
			MatchPolicy:             &equivalent,
			TimeoutSeconds:          &timeout,
			FailurePolicy:           &failurePolicy,
			SideEffects:             &sideEffects,
		}},
	}
	// Reach cert-manager's API once before the webhook is registered: this
	// also loads it into the client's REST mapper.
	if err := c.Client.List(ctx, &cmapi.IssuerList{}, client.InNamespace(CertManagerNamespace)); err != nil {
		return fmt.Errorf("cert-manager's API is not served: %w", err)
	}
	for _, obj := range []client.Object{validating, mutating} {
		if err := c.Client.Create(ctx, obj); err != nil {
			return fmt.Errorf("registering cert-manager's webhook: %w", err)
		}
	}
	c.log.V(2).Info("cert-manager webhook registered")
	return c.waitWebhookEffective(ctx)
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitServing waits until the webhook accepts TLS connections with its
// serving certificate: StartWebhookServer returns once the port is chosen,
// which can be before the listener is open.
func waitServing(ctx context.Context, rawURL string, caPEM []byte) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("no CA certificate returned by StartWebhookServer")
	}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{RootCAs: roots, ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}}
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		conn, err := dialer.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			lastErr = err
			return false, nil
		}
		_ = conn.Close()
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("not serving TLS: %w (last error: %v)", err, lastErr)
	}
	return nil
}

// waitWebhookEffective waits until the API server sends cert-manager
// resources to the webhook: a dry-run create of an Issuer without any issuer
// type, which only the webhook refuses, must be denied by it.
func (c *Cluster) waitWebhookEffective(ctx context.Context) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		probe := &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Name: "localcluster-webhook-probe", Namespace: CertManagerNamespace}}
		last = c.Client.Create(ctx, probe, client.DryRunAll)
		c.log.V(3).Info("webhook probe", "answer", fmt.Sprint(last))
		return last != nil && strings.Contains(last.Error(), `admission webhook "webhook.cert-manager.io" denied the request`), nil
	})
	if err != nil {
		return fmt.Errorf("the API server does not call cert-manager's webhook (last answer to an invalid Issuer: %v): %w", last, err)
	}
	return nil
}

// startControllers runs cert-manager's controllers in-process as
// system:serviceaccount:cert-manager:cert-manager with production defaults.
func (c *Cluster) startControllers(ctx context.Context) error {
	_, kubeconfig, err := c.AddServiceAccount(CertManagerNamespace, CertManagerServiceAccount)
	if err != nil {
		return err
	}
	o := c.opts
	// The controllers live until the cluster stops, not until ctx (the start
	// deadline) ends.
	runCtx, cancel := context.WithCancel(logr.NewContext(context.WithoutCancel(ctx), c.log.WithName("cert-manager")))
	var wg sync.WaitGroup
	var shared *controllerpkg.Context
	c.onStop(func() error {
		cancel()
		wg.Wait()
		if shared != nil {
			shared.SharedInformerFactory.Shutdown()
			shared.KubeSharedInformerFactory.Shutdown()
		}
		return nil
	})

	factory, err := controllerpkg.NewContextFactory(runCtx, controllerpkg.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   o.KubernetesAPIQPS,
		KubernetesAPIBurst: o.KubernetesAPIBurst,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: o.ClusterResourceNamespace,
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			CopiedAnnotationPrefixes:                 o.CopiedAnnotationPrefixes,
			CertificateRequestMinimumBackoffDuration: o.CertificateRequestMinimumBackoff,
			CertificateRequestMaximumBackoffDuration: o.CertificateRequestMaximumBackoff,
		},
		SchedulerOptions: controllerpkg.SchedulerOptions{MaxConcurrentChallenges: 60},
	})
	if err != nil {
		return fmt.Errorf("configuring cert-manager's controllers: %w", err)
	}

	known := controllerpkg.Known()
	var controllers []controllerpkg.Interface
	for _, name := range o.Controllers {
		construct, ok := known[name]
		if !ok {
			return fmt.Errorf("cert-manager controller %q is not registered: blank-import its package from github.com/cert-manager/cert-manager/pkg/controller", name)
		}
		ctrl, err := construct(factory)
		if err != nil {
			return fmt.Errorf("creating cert-manager controller %s: %w", name, err)
		}
		controllers = append(controllers, ctrl)
	}

	// The informer factories are shared by all controllers: start them once
	// every controller has registered its informers.
	shared, err = factory.Build("localcluster")
	if err != nil {
		return err
	}
	shared.SharedInformerFactory.Start(runCtx.Done())
	shared.KubeSharedInformerFactory.Start(runCtx.Done())

	for i, ctrl := range controllers {
		wg.Go(func() {
			if err := ctrl.Run(o.Workers, runCtx); err != nil && runCtx.Err() == nil {
				c.log.Error(err, "cert-manager controller stopped", "controller", o.Controllers[i])
			}
		})
	}
	return nil
}
