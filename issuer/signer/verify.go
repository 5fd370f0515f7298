package signer

import (
	"context"
	"errors"
	"fmt"

	issuerapi "github.com/cert-manager/issuer-lib/api/v1alpha1"

	"github.com/relaytls/relaytls/issuer/policy"
)

// VerifyProof checks an identity proof for a cluster and a CSR (DER) the way
// Sign will check it for a CA-mode issuer, without signing anything. The
// issuance endpoint calls it before it creates a CertificateRequest, so a call
// whose proof fails leaves nothing behind; Sign still decides again.
//
// A bad proof returns a *policy.Refusal; a token Secret that cannot be read
// returns another error (the caller retries). An issuer that requires no
// proof, or is not in CA mode, is refused: only proof-checking issuers may be
// the target of the endpoint.
func (s *Signer) VerifyProof(ctx context.Context, iss issuerapi.Issuer, cluster string, csrDER []byte, presented string) error {
	full, err := specOf(iss)
	if err != nil {
		return err
	}
	if full.CA == nil || full.CA.TokenSecretRef == nil {
		return errors.New("the issuer does not check identity proofs (it needs spec.ca.tokenSecretRef)")
	}
	tokens, err := s.loadTokens(ctx, SecretNamespace(iss, s.ClusterResourceNamespace), full.CA)
	if err != nil {
		return fmt.Errorf("the issuer's token cannot be read: %w", err)
	}
	return policy.CheckProof(tokens, cluster, csrDER, presented)
}
