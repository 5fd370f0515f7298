package signer

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
	"github.com/cert-manager/issuer-lib/controllers/signer"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/policy"
)

// Renewal by proof of possession (SPEC section 4), workload side. A remote
// issuer renews by presenting the cluster's current client certificate over
// mTLS to the issuance endpoint, with no token proof, when it holds one that
// can: the Secret relay-tls-client-secret (SPEC section 2) in the request's
// namespace holds a key and certificate for this cluster that chain to the
// trust bundle and are valid for at least MinPossessionValidity more. It
// falls back to the token otherwise, and when the endpoint refuses the
// certificate. So after the first enrollment a cluster needs no token.

// DefaultClientSecretName is the Secret whose certificate a remote issuer
// presents to renew by possession.
const DefaultClientSecretName = "relay-tls-client-secret"

// MinPossessionValidity is how long the current certificate must still be
// valid to be presented; one closer to its end renews with the token.
const MinPossessionValidity = time.Minute

// clientCert is a client certificate that can renew by possession.
type clientCert struct {
	cert        tls.Certificate
	leaf        *x509.Certificate
	fingerprint [32]byte
}

// possessionState holds the remote issuers' mTLS connections, one per
// issuer, rebuilt when the endpoint, trust bundle or client certificate
// changes.
type possessionState struct {
	mu    sync.Mutex
	conns map[types.NamespacedName]*remoteConn
}

func (s *Signer) possessionConns() *possessionState {
	s.possessionOnce.Do(func() { s.possession = &possessionState{conns: map[types.NamespacedName]*remoteConn{}} })
	return s.possession
}

// loadRemoteToken reads the remote issuer's cluster token. Its absence is
// not an error by itself: a cluster may renew by possession without one.
func (s *Signer) loadRemoteToken(ctx context.Context, ns string, spec *relayv1.RemoteIssuerSpec) (proof.Token, error) {
	ref := spec.TokenSecretRef
	if ref == nil {
		ref = &relayv1.TokenSecretRef{}
	}
	name, key := tokenRef(ref)
	sec, err := s.getSecret(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return LoadToken(sec, key)
}

// currentClientCert reads the client Secret in ns and returns its
// certificate when it can renew cluster by possession, or why it cannot.
func (s *Signer) currentClientCert(ctx context.Context, ns, cluster string, m *remoteMaterial) (*clientCert, error) {
	sec, err := s.getSecret(ctx, ns, DefaultClientSecretName)
	if err != nil {
		return nil, err
	}
	crtPEM, err := secretKey(sec, "tls.crt")
	if err != nil {
		return nil, err
	}
	keyPEM, err := secretKey(sec, "tls.key")
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(crtPEM, keyPEM)
	if err != nil {
		// The parse error may quote the key; it is not passed on.
		return nil, secretError(sec, "tls.crt and tls.key are not a matching PEM certificate and key")
	}
	chain, err := pki.DecodeX509CertificateChainBytes(crtPEM)
	if err != nil {
		return nil, secretError(sec, "tls.crt: %v", err)
	}
	leaf := chain[0]
	now := s.now()
	id, err := access.VerifyClient(chain, m.roots, now)
	if err != nil {
		return nil, secretError(sec, "%v", err)
	}
	if id != cluster || len(leaf.DNSNames) != 1 {
		return nil, secretError(sec, "the certificate (serial %s) is for %v, not for cluster %q", leaf.SerialNumber.Text(16), leaf.DNSNames, cluster)
	}
	if left := leaf.NotAfter.Sub(now); left < MinPossessionValidity {
		return nil, secretError(sec, "the certificate (serial %s) expires at %s, too soon to renew with it", leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	pair.Leaf = leaf
	return &clientCert{cert: pair, leaf: leaf, fingerprint: sha256.Sum256(leaf.Raw)}, nil
}

// possessionConn returns the issuer's mTLS connection presenting c.
func (s *Signer) possessionConn(issuer types.NamespacedName, spec *relayv1.RemoteIssuerSpec, m *remoteMaterial, c *clientCert) (*grpc.ClientConn, error) {
	key := fmt.Sprintf("%s|%s|%x|%x", spec.Endpoint, serverName(spec), m.bundleDigest, c.fingerprint)
	st := s.possessionConns()
	st.mu.Lock()
	defer st.mu.Unlock()
	if old, ok := st.conns[issuer]; ok {
		if old.key == key {
			return old.cc, nil
		}
		old.cc.Close()
		delete(st.conns, issuer)
	}
	cc, err := dialEndpoint(spec, m, []tls.Certificate{c.cert})
	if err != nil {
		return nil, err
	}
	st.conns[issuer] = &remoteConn{key: key, cc: cc}
	return cc, nil
}

func (s *Signer) closePossession() {
	st := s.possessionConns()
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, c := range st.conns {
		c.cc.Close()
		delete(st.conns, k)
	}
}

// prove chooses how req proves the cluster's identity: possession of the
// current client certificate when there is one that can renew, else a token
// proof. It returns the connection to send req on and whether it renews by
// possession. With neither, the error names both problems.
func (s *Signer) prove(ctx context.Context, cr signer.CertificateRequestObject, issuer types.NamespacedName, spec *relayv1.RemoteIssuerSpec, m *remoteMaterial, req *issuancev1.SignRequest, csrDER []byte) (*grpc.ClientConn, bool, error) {
	c, whyNot := s.currentClientCert(ctx, cr.GetNamespace(), spec.Cluster, m)
	if c != nil {
		cc, err := s.possessionConn(issuer, spec, m, c)
		if err != nil {
			return nil, false, err
		}
		req.Proof = ""
		return cc, true, nil
	}
	if m.token == nil {
		return nil, false, fmt.Errorf("cluster %q can neither prove its identity with a token (%v) nor renew by possession (%v)", spec.Cluster, m.tokenErr, whyNot)
	}
	req.Proof = proof.Identity(m.token, spec.Cluster, csrDER)
	cc, err := s.conn(issuer, spec, m)
	return cc, false, err
}

// renewalRefused reports whether a refusal is of the certificate presented
// for a renewal (not of the cluster), so the token may still succeed.
func renewalRefused(reason string) bool {
	return reason == policy.ReasonRenewalCertificateInvalid || reason == policy.ReasonRenewalIdentityMismatch
}

// afterPossession handles the answer to a renewal by possession: when the
// endpoint refused the certificate and the issuer holds a token, the same
// request is sent again with a token proof.
func (s *Signer) afterPossession(ctx context.Context, cr signer.CertificateRequestObject, issuer types.NamespacedName, spec *relayv1.RemoteIssuerSpec, m *remoteMaterial, req *issuancev1.SignRequest, csrDER []byte, res callResult) callResult {
	if res.inFlight || res.full || res.err == nil || m.token == nil || !renewalRefused(issuance.ReasonOf(res.err)) {
		return res
	}
	ctrl.LoggerFrom(ctx).Info("the management cluster refused the client certificate for a renewal; retrying with the token", "cluster", spec.Cluster, "reason", issuance.ReasonOf(res.err))
	withToken := proto.Clone(req).(*issuancev1.SignRequest)
	withToken.Proof = proof.Identity(m.token, spec.Cluster, csrDER)
	cc, err := s.conn(issuer, spec, m)
	if err != nil {
		return res
	}
	return s.call(cr, cc, withToken)
}

// checkRemoteIdentity is the readiness rule of a remote issuer's identity:
// it holds a token, or a client certificate that can renew by possession.
func (s *Signer) checkRemoteIdentity(ctx context.Context, ns string, spec *relayv1.RemoteIssuerSpec, m *remoteMaterial) error {
	if m.token != nil {
		return nil
	}
	if _, err := s.currentClientCert(ctx, ns, spec.Cluster, m); err != nil {
		return fmt.Errorf("%v; and no client certificate can renew by possession: %v", m.tokenErr, err)
	}
	return nil
}
