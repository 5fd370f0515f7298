package signer

import (
	"crypto/x509"
	"encoding/pem"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/fingerprint"
)

// Fingerprint is the SHA-256 of a certificate's DER, in lower-case hex: the
// form RelayCluster status.lastTrustBundle and status.rootRotation use.
func Fingerprint(c *x509.Certificate) string { return fingerprint.Of(c) }

// Fingerprints of every certificate of a PEM bundle that parses, in order.
func Fingerprints(bundlePEM []byte) []string { return fingerprint.OfPEM(bundlePEM) }

// UnionCerts is every certificate of the sets, once each (by fingerprint),
// in the order first seen.
func UnionCerts(sets ...[]*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	seen := map[string]bool{}
	for _, set := range sets {
		for _, c := range set {
			fp := Fingerprint(c)
			if seen[fp] {
				continue
			}
			seen[fp] = true
			out = append(out, c)
		}
	}
	return out
}

// EncodeCerts is the PEM encoding of certificates, one after another.
func EncodeCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// TrustBundleSecretName is the name of the trust bundle Secret of a CA-mode
// issuer spec, its default applied.
func TrustBundleSecretName(spec *relayv1.CAIssuerSpec) string {
	return orDefault(spec.TrustBundleSecretName, relayv1.DefaultTrustBundleSecretName)
}

// RootSecretName is the name of the root Secret of a CA-mode issuer spec.
func RootSecretName(spec *relayv1.CAIssuerSpec) string {
	return orDefault(spec.RootSecretName, relayv1.DefaultRootSecretName)
}

// NewRootSecretName is the name of the Secret holding the new root of a
// declared rotation ("" when none is declared).
func NewRootSecretName(spec *relayv1.CAIssuerSpec) string {
	if spec.RootRotation == nil {
		return ""
	}
	return orDefault(spec.RootRotation.NewRootSecretName, relayv1.DefaultNewRootSecretName)
}

// bundleCerts reads the ca.crt of the published trust bundle Secret; a
// missing Secret or key is an empty bundle.
func bundleCerts(s *corev1.Secret) ([]*x509.Certificate, error) {
	if s == nil || len(s.Data["ca.crt"]) == 0 {
		return nil, nil
	}
	certs, err := pki.DecodeX509CertificateSetBytes(s.Data["ca.crt"])
	if err != nil {
		return nil, secretError(s, "ca.crt is not a PEM certificate bundle: %v", err)
	}
	return certs, nil
}
