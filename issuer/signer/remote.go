package signer

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"github.com/cert-manager/issuer-lib/controllers/signer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/fingerprint"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/metrics"
	"github.com/relaytls/relaytls/issuer/policy"
)

// RemoteCallTimeout bounds one call to the issuance endpoint. The endpoint
// waits for the management issuer, so it is longer than a network timeout.
const RemoteCallTimeout = 45 * time.Second

// ReasonRefusedByManagement is the reason of a refusal the endpoint gave
// without a reason of its own.
const ReasonRefusedByManagement = "RefusedByManagement"

// remoteMaterial is what a remote issuer needs from its Secrets.
type remoteMaterial struct {
	roots        *x509.CertPool
	bundleDigest [32]byte
	// held are the fingerprints of the bundle's roots, reported with every
	// call so that the management cluster knows what this cluster holds.
	held []string
	// token is nil, and tokenErr says why, when the cluster holds no
	// usable token; it may still renew by possession (renewal.go).
	token    proof.Token
	tokenErr error
}

func (s *Signer) loadRemote(ctx context.Context, ns string, spec *relayv1.RemoteIssuerSpec) (*remoteMaterial, error) {
	bundle, err := s.getSecret(ctx, ns, orDefault(spec.TrustBundleSecretName, relayv1.DefaultRootSecretName))
	if err != nil {
		return nil, err
	}
	caPEM, err := secretKey(bundle, "ca.crt")
	if err != nil {
		return nil, err
	}
	cas, err := pki.DecodeX509CertificateSetBytes(caPEM)
	if err != nil {
		return nil, secretError(bundle, "ca.crt is not a PEM certificate bundle: %v", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	m := &remoteMaterial{roots: pool, bundleDigest: bundleDigest(cas), held: fingerprint.OfCerts(cas)}
	if len(m.held) > issuance.MaxTrustBundle {
		// Too large to report: the management cluster falls back to
		// recording what it returns.
		m.held = nil
	}
	m.token, m.tokenErr = s.loadRemoteToken(ctx, ns, spec)
	return m, nil
}

func serverName(spec *relayv1.RemoteIssuerSpec) string {
	if spec.ServerName != "" {
		return spec.ServerName
	}
	host, _, err := net.SplitHostPort(spec.Endpoint)
	if err != nil {
		return spec.Endpoint
	}
	return host
}

// checkRemote verifies the Secrets and that the endpoint answers over TLS
// with a certificate the trust bundle verifies for the expected name. An
// unreachable endpoint makes the issuer not Ready with a message saying so;
// it is checked again with backoff and whenever a Secret changes.
func (s *Signer) checkRemote(ctx context.Context, issuer types.NamespacedName, ns string, spec *relayv1.RemoteIssuerSpec) error {
	m, err := s.loadRemote(ctx, ns, spec)
	if err != nil {
		return err
	}
	if err := s.checkRemoteIdentity(ctx, ns, spec, m); err != nil {
		return err
	}
	cc, err := s.conn(issuer, spec, m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: issuance.ServiceName}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("issuance endpoint %s (server name %q) is unreachable: %s", spec.Endpoint, serverName(spec), status.Convert(err).Message())
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("issuance endpoint %s is reachable but not serving (%s)", spec.Endpoint, resp.Status)
	}
	return nil
}

// signRemote proves the relay identity for the CSR and forwards it. The call
// runs in the background: the reconcile that starts it returns at once
// (Pending), and the one woken when it finishes collects the answer, so no
// worker waits for the management cluster. A refusal by the management
// cluster fails the request with the management issuer's reason; an
// unreachable or busy endpoint is retried.
func (s *Signer) signRemote(ctx context.Context, cr signer.CertificateRequestObject, issuer types.NamespacedName, ns string, spec *relayv1.RemoteIssuerSpec) (signer.PEMBundle, error) {
	m, err := s.loadRemote(ctx, ns, spec)
	if err != nil {
		return signer.PEMBundle{}, signer.IssuerError{Err: err}
	}
	details, err := cr.GetCertificateDetails()
	if err != nil {
		return signer.PEMBundle{}, refused(&policy.Refusal{Reason: policy.ReasonInvalidCSR, Message: fmt.Sprintf("the request's usages are invalid: %v", err)})
	}
	block, _ := pem.Decode(details.CSR)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return signer.PEMBundle{}, refused(&policy.Refusal{Reason: policy.ReasonInvalidCSR, Message: "the request does not hold a PEM CERTIFICATE REQUEST"})
	}
	var usages []string
	for _, u := range append(apiutil.KeyUsageStrings(details.KeyUsage), apiutil.ExtKeyUsageStrings(details.ExtKeyUsage)...) {
		usages = append(usages, string(u))
	}
	req := &issuancev1.SignRequest{
		Cluster:         spec.Cluster,
		Csr:             details.CSR,
		Usages:          usages,
		DurationSeconds: int64(details.Duration / time.Second),
		IsCa:            details.IsCA,
		TrustBundle:     m.held,
	}
	// A token proof, or possession of the current certificate (renewal.go).
	cc, possession, err := s.prove(ctx, cr, issuer, spec, m, req, block.Bytes)
	if err != nil {
		return signer.PEMBundle{}, signer.IssuerError{Err: err}
	}
	res := s.call(cr, cc, req)
	if possession {
		res = s.afterPossession(ctx, cr, issuer, spec, m, req, block.Bytes, res)
	}
	switch {
	case res.full:
		return signer.PEMBundle{}, signer.PendingError{
			Err:          fmt.Errorf("%d remote signing calls are already in flight; waiting for a free one", s.maxRemoteCalls()),
			RequeueAfter: retryAfter(time.Since(cr.GetCreationTimestamp().Time)),
		}
	case res.inFlight:
		// Woken by RemoteDone when the call ends; the requeue is a fallback.
		return signer.PEMBundle{}, signer.PendingError{
			Err:          fmt.Errorf("forwarded to the issuance endpoint %s; waiting for the management cluster", spec.Endpoint),
			RequeueAfter: RemoteCallTimeout / 3,
		}
	}
	resp, err := res.resp, res.err
	if err == nil {
		metrics.Requests.WithLabelValues("signed", "").Inc()
		if err := s.followBundle(ctx, ns, spec, resp.Ca); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "the certificate was issued but the trust bundle Secret was not brought up to date")
		}
		return signer.PEMBundle{ChainPEM: resp.Certificate, CAPEM: resp.Ca}, nil
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.PermissionDenied:
		reason := issuance.ReasonOf(err)
		if reason == "" {
			reason = ReasonRefusedByManagement
		}
		return signer.PEMBundle{}, refused(&policy.Refusal{Reason: reason, Message: "the management cluster refused the request: " + st.Message()})
	default:
		return signer.PEMBundle{}, signer.PendingError{
			Err:          fmt.Errorf("issuance endpoint %s: %s (%s); will retry", spec.Endpoint, st.Message(), st.Code()),
			RequeueAfter: retryAfter(time.Since(cr.GetCreationTimestamp().Time)),
		}
	}
}

// followBundle keeps the workload cluster's trust bundle Secret (the one that
// verifies the endpoint, and that the agent sidecar mounts) equal to the
// ca.crt the management cluster returned with the last certificate: that is
// how a root rotation reaches the cluster with no step run there. The answer
// came over a connection verified with the current bundle. A bundle that does
// not parse, and a Secret that cert-manager writes, are left alone.
func (s *Signer) followBundle(ctx context.Context, ns string, spec *relayv1.RemoteIssuerSpec, caPEM []byte) error {
	certs, err := pki.DecodeX509CertificateSetBytes(caPEM)
	if err != nil || len(certs) == 0 {
		return nil
	}
	for _, c := range certs {
		if !c.IsCA {
			return nil
		}
	}
	name := orDefault(spec.TrustBundleSecretName, relayv1.DefaultRootSecretName)
	sec, err := s.getSecret(ctx, ns, name)
	if err != nil {
		return err
	}
	if sec.Annotations["cert-manager.io/certificate-name"] != "" || bytes.Equal(sec.Data["ca.crt"], caPEM) {
		return nil
	}
	base := sec.DeepCopy()
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data["ca.crt"] = caPEM
	if err := s.Client.Patch(ctx, sec, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("updating the trust bundle Secret %s/%s: %w", ns, name, err)
	}
	return nil
}

// retryAfter grows with the request's age, from 2 s to 60 s, with jitter so
// many clusters that lost the endpoint together do not return together.
func retryAfter(age time.Duration) time.Duration {
	d := min(max(age/4, 2*time.Second), 60*time.Second)
	return d/2 + rand.N(d/2+1)
}
