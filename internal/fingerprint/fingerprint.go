// Package fingerprint names certificates by the SHA-256 of their DER in
// lowercase hex: the form RelayCluster status.lastTrustBundle, the issuer's
// status.rootRotation and the issuance endpoint's trustBundle use.
package fingerprint

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"slices"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
)

// Of is the certificate's fingerprint.
func Of(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// OfCerts are the certificates' fingerprints, in order, each once.
func OfCerts(certs []*x509.Certificate) []string {
	out := make([]string, 0, len(certs))
	for _, c := range certs {
		if fp := Of(c); !slices.Contains(out, fp) {
			out = append(out, fp)
		}
	}
	return out
}

// OfPEM are the fingerprints of a PEM bundle's certificates, in order, each
// once; nil when it does not parse.
func OfPEM(bundlePEM []byte) []string {
	certs, err := pki.DecodeX509CertificateSetBytes(bundlePEM)
	if err != nil {
		return nil
	}
	return OfCerts(certs)
}
