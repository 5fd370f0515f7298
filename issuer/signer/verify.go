package signer

import (
	"context"
	"errors"
	"fmt"

	issuerapi "github.com/cert-manager/issuer-lib/api/v1alpha1"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
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
	obj, ok := iss.(relayv1.RelayIssuerObject)
	if !ok {
		return fmt.Errorf("unexpected issuer type %T", iss)
	}
	// The inventory rules and the proof with the named cluster's keys, the
	// same check Sign makes (identity.go).
	if err := s.VerifyIdentity(ctx, obj, cluster, csrDER, presented); err != nil {
		var r *policy.Refusal
		if errors.As(err, &r) {
			return err
		}
		return fmt.Errorf("the issuer's identity material cannot be read: %w", err)
	}
	return nil
}
