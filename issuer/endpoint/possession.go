package endpoint

import (
	"context"
	"crypto/x509"
	"errors"

	issuerapi "github.com/cert-manager/issuer-lib/api/v1alpha1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/metrics"
	"github.com/relaytls/relaytls/issuer/policy"
)

// Renewal by proof of possession (SPEC section 4): a call with no token
// proof whose caller presented a client certificate over mTLS asks to renew
// the cluster that certificate was issued to. The endpoint requests, but
// does not require, a client certificate in the handshake; the certificate
// is verified here, per call, by the PossessionVerifier, and the request it
// creates records the serial (relaytls.io/renewal-of) with an attestation
// the CA-mode issuer checks.

// PossessionVerifier checks a renewal call: chain (leaf first) was presented
// by the caller over mTLS, cluster is the name the call gives and csrDER the
// new CSR. It returns the leaf's serial (hex) and the attestation to put on
// the CertificateRequest. A refused call gets a *policy.Refusal; any other
// error means the check could not be made. The signer implements it.
type PossessionVerifier interface {
	VerifyPossession(ctx context.Context, iss issuerapi.Issuer, cluster string, csrDER []byte, chain []*x509.Certificate) (serial, attestation string, err error)
}

// peerChain is the certificate chain the caller presented, if any. Its
// signature over the handshake was checked by TLS, so the caller holds the
// leaf's key.
func peerChain(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.PeerCertificates
}

// verifyPossession checks a renewal call and fills in what its request
// records. A refusal is a PermissionDenied with the verifier's reason.
func (s *Server) verifyPossession(ctx context.Context, iss issuerapi.Issuer, req *issuancev1.SignRequest, c *checked, chain []*x509.Certificate) error {
	pv, ok := s.verify.(PossessionVerifier)
	if !ok {
		return issuance.Refusal(codes.PermissionDenied, policy.ReasonMissingIdentityProof, "this endpoint does not accept renewals by possession; the request needs an identity proof")
	}
	serial, attestation, err := pv.VerifyPossession(ctx, iss, req.Cluster, c.der, chain)
	if err != nil {
		var r *policy.Refusal
		if !errors.As(err, &r) {
			s.log.Error(err, "checking a renewal by possession", "cluster", req.Cluster)
			return issuance.Refusal(codes.Unavailable, "", "the management cluster cannot check renewals right now; retry later")
		}
		return issuance.Refusal(codes.PermissionDenied, r.Reason, r.Message)
	}
	c.renewalOf, c.attestation = serial, attestation
	return nil
}

// countRenewal counts a renewal call by possession.
func countRenewal(err error) {
	metrics.Renewals.WithLabelValues(enrollmentResult(err), issuance.ReasonOf(err)).Inc()
}
