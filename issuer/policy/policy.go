// Package policy decides whether a relay client certificate request may be
// signed (SPEC section 5). It is pure: it looks only at the parsed request and
// the issuer's settings, and returns a *Refusal naming the rule that failed.
package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cert-manager/cert-manager/pkg/util/pki"

	"github.com/relaytls/relaytls/internal/proof"
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// GeneralName tags (RFC 5280 4.2.1.6) a relay client certificate may carry.
const (
	tagDNSName = 2
	tagURI     = 6
)

// checkSANKinds refuses SAN kinds that crypto/x509 does not surface (other
// names, directory names, registered IDs), so none can slip through.
func checkSANKinds(csr *x509.CertificateRequest) error {
	for _, e := range csr.Extensions {
		if !e.Id.Equal(oidSubjectAltName) {
			continue
		}
		var names []asn1.RawValue
		if rest, err := asn1.Unmarshal(e.Value, &names); err != nil || len(rest) > 0 {
			return refuse(ReasonInvalidCSR, "the CSR's subject alternative name extension does not parse")
		}
		for _, n := range names {
			if n.Class != asn1.ClassContextSpecific || (n.Tag != tagDNSName && n.Tag != tagURI) {
				return refuse(ReasonIdentityMismatch, "the CSR has a subject alternative name of kind %d; only DNS names and a SPIFFE URI are allowed", n.Tag)
			}
		}
	}
	return nil
}

// Reasons set on a refused CertificateRequest's InvalidRequest condition.
// Each rule has its own, so an operator can tell refusals apart at a glance.
const (
	ReasonMissingCluster       = "MissingClusterAnnotation"
	ReasonInvalidCluster       = "InvalidClusterName"
	ReasonMissingIdentityProof = "MissingIdentityProof"
	ReasonInvalidIdentityProof = "InvalidIdentityProof"
	ReasonInvalidCSR           = "InvalidCSR"
	ReasonUnsupportedKey       = "UnsupportedKey"
	ReasonIdentityMismatch     = "IdentityMismatch"
	ReasonCARequested          = "CARequested"
	ReasonForbiddenUsage       = "ForbiddenUsage"
	ReasonMissingClientAuth    = "MissingClientAuthUsage"
	ReasonInvalidDuration      = "InvalidDuration"
	// ReasonInvalidTrustBundle: the trust bundle a call to the issuance
	// endpoint reported is not a short list of distinct SHA-256
	// fingerprints.
	ReasonInvalidTrustBundle = "InvalidTrustBundle"
	// ReasonClusterRevoked: the cluster's RelayCluster has spec.revoked.
	ReasonClusterRevoked = "ClusterRevoked"
	// ReasonClusterNotRegistered: the issuer requires registration and the
	// cluster has no RelayCluster.
	ReasonClusterNotRegistered = "ClusterNotRegistered"
	// ReasonStaleTokenGeneration: the proof was made with a token of an
	// older generation of this cluster (its tokenGeneration was bumped).
	ReasonStaleTokenGeneration = "StaleTokenGeneration"
	// ReasonTokenScopeMismatch: the proof was made for the other token scope
	// (the root token against a per-cluster issuer, or the reverse).
	ReasonTokenScopeMismatch = "TokenScopeMismatch"
	// ReasonRenewalCertificateInvalid: a renewal by proof of possession
	// presented a client certificate that is not a valid, current relay
	// client certificate of this issuer (expired, not yet valid, a CA, no
	// explicit client auth usage, not chaining to the issuer's root), or a
	// request claims a renewal without the endpoint's attestation.
	ReasonRenewalCertificateInvalid = "RenewalCertificateInvalid"
	// ReasonRenewalIdentityMismatch: the presented certificate, the cluster
	// the call names and the new CSR do not all name the same cluster.
	ReasonRenewalIdentityMismatch = "RenewalIdentityMismatch"
	// ReasonRenewalCertificateSuperseded: the certificate presented for a
	// renewal by possession was renewed since, more than once: it is neither
	// the cluster's last certificate nor the one before it.
	ReasonRenewalCertificateSuperseded = "RenewalCertificateSuperseded"
)

// RSA key sizes accepted. The upper bound keeps a request from costing the
// signer unbounded work.
const (
	MinRSABits = 2048
	MaxRSABits = 8192
)

// Refusal is a request the issuer will not sign. Message never contains a
// token or a proof.
type Refusal struct {
	Reason  string
	Message string
}

func (r *Refusal) Error() string { return r.Message }

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Request is what the policy looks at.
type Request struct {
	// Cluster is the relaytls.io/cluster annotation ("" when absent).
	Cluster string
	// CSR is the parsed certificate signing request; its signature must
	// already have been checked with ParseCSR.
	CSR *x509.CertificateRequest
	// IsCA, KeyUsage and ExtKeyUsage are what the CertificateRequest asks for.
	IsCA        bool
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
}

// ParseCSR parses a DER CSR and checks its self-signature.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, refuse(ReasonInvalidCSR, "the CSR does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse(ReasonInvalidCSR, "the CSR's signature does not verify: %v", err)
	}
	return csr, nil
}

// CheckCluster checks the cluster annotation.
func CheckCluster(cluster string) error {
	if cluster == "" {
		return refuse(ReasonMissingCluster, "the CertificateRequest has no relaytls.io/cluster annotation naming the workload cluster")
	}
	if err := proof.ValidateCluster(cluster); err != nil {
		return refuse(ReasonInvalidCluster, "the relaytls.io/cluster annotation is invalid: %v", err)
	}
	return nil
}

// Identity is what a cluster's identity proof is checked against.
type Identity struct {
	// Scope is the issuer's token scope.
	Scope proof.Scope
	// Roots are the root tokens: token and, during a rotation, token.previous.
	Roots []proof.Token
	// Generation is the cluster's token generation (1 when unregistered).
	Generation int64
}

// CheckClusterProof checks an identity proof with the keys of the named
// cluster only (SPEC section 4): in PerCluster scope the cluster tokens
// derived for its name and generation, in Shared scope the root tokens.
// A refused proof made with an older generation or for the other scope gets
// its own reason.
func CheckClusterProof(id Identity, cluster string, csrDER []byte, presented string) error {
	keys, err := proof.Keys(id.Scope, id.Roots, cluster, id.Generation)
	if err != nil {
		return refuse(ReasonInvalidIdentityProof, "the identity proof cannot be checked: %v", err)
	}
	err = CheckProof(keys, cluster, csrDER, presented)
	var r *Refusal
	if err == nil || !errors.As(err, &r) || r.Reason != ReasonInvalidIdentityProof || proof.VerifyIdentity(keys, cluster, csrDER, presented) != proof.ErrInvalidProof {
		return err
	}
	check := func(k []proof.Token) error { return proof.VerifyIdentity(k, cluster, csrDER, presented) }
	switch proof.Explain(id.Scope, id.Roots, cluster, id.Generation, check) {
	case proof.MismatchStaleGeneration:
		return refuse(ReasonStaleTokenGeneration, "the identity proof for cluster %q was made with a token of an older generation; the cluster's tokenGeneration is now %d: give it its new token (relayctl token --cluster %s)", cluster, id.Generation, cluster)
	case proof.MismatchScope:
		if id.Scope == proof.ScopeShared {
			return refuse(ReasonTokenScopeMismatch, "the identity proof for cluster %q was made with a per-cluster token, but this issuer has tokenScope Shared", cluster)
		}
		return refuse(ReasonTokenScopeMismatch, "the identity proof for cluster %q was made with the shared root token, but this issuer has tokenScope PerCluster: the cluster must hold its own cluster token (relayctl token --cluster %s)", cluster, cluster)
	}
	return err
}

// CheckProof checks the identity proof against the issuer's tokens.
func CheckProof(tokens []proof.Token, cluster string, csrDER []byte, presented string) error {
	switch err := proof.VerifyIdentity(tokens, cluster, csrDER, presented); err {
	case nil:
		return nil
	case proof.ErrMissingProof:
		return refuse(ReasonMissingIdentityProof, "the CertificateRequest has no relaytls.io/identity-proof annotation; this issuer requires an identity proof made with the relay identity token")
	case proof.ErrMalformedProof:
		return refuse(ReasonInvalidIdentityProof, "the identity proof was refused: it is not a base64url-encoded HMAC-SHA256")
	default:
		return refuse(ReasonInvalidIdentityProof, "the identity proof was refused: it was not made with the relay identity token for cluster %q and this CSR", cluster)
	}
}

// CheckRequest applies the key, identity and usage rules.
func CheckRequest(req Request, trustDomain string) error {
	if err := CheckCluster(req.Cluster); err != nil {
		return err
	}
	if err := checkKey(req.CSR.PublicKey); err != nil {
		return err
	}
	if err := checkIdentity(req.CSR, req.Cluster, trustDomain); err != nil {
		return err
	}
	return checkUsages(req)
}

func checkKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return refuse(ReasonUnsupportedKey, "the ECDSA key uses curve %s; only P-256 and P-384 are accepted", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < MinRSABits {
			return refuse(ReasonUnsupportedKey, "the RSA key has %d bits; at least %d are required", bits, MinRSABits)
		}
		if bits > MaxRSABits {
			return refuse(ReasonUnsupportedKey, "the RSA key has %d bits; at most %d are accepted", bits, MaxRSABits)
		}
	default:
		return refuse(ReasonUnsupportedKey, "the key type %T is not accepted; use ECDSA P-256/P-384, Ed25519 or RSA >= %d bits", pub, MinRSABits)
	}
	return nil
}

// SPIFFEID is the URI SAN a trust domain allows for a cluster.
func SPIFFEID(trustDomain, cluster string) string {
	return "spiffe://" + trustDomain + "/cluster/" + cluster
}

func checkIdentity(csr *x509.CertificateRequest, cluster, trustDomain string) error {
	if err := checkSANKinds(csr); err != nil {
		return err
	}
	if len(csr.DNSNames) != 1 || csr.DNSNames[0] != cluster {
		return refuse(ReasonIdentityMismatch, "the CSR's DNS names are %s; exactly one, the cluster name %q, is allowed", list(csr.DNSNames), cluster)
	}
	if n := len(csr.IPAddresses); n > 0 {
		return refuse(ReasonIdentityMismatch, "the CSR has %d IP address SAN(s); a relay client certificate has none", n)
	}
	if len(csr.EmailAddresses) > 0 {
		return refuse(ReasonIdentityMismatch, "the CSR has email SANs %s; a relay client certificate has none", list(csr.EmailAddresses))
	}
	switch len(csr.URIs) {
	case 0:
	case 1:
		want := SPIFFEID(trustDomain, cluster)
		if trustDomain == "" || csr.URIs[0].String() != want {
			if trustDomain == "" {
				return refuse(ReasonIdentityMismatch, "the CSR has URI SAN %q but this issuer has no trustDomain, so no URI SAN is allowed", csr.URIs[0].String())
			}
			return refuse(ReasonIdentityMismatch, "the CSR has URI SAN %q; only %q is allowed", csr.URIs[0].String(), want)
		}
	default:
		return refuse(ReasonIdentityMismatch, "the CSR has %d URI SANs; at most one is allowed", len(csr.URIs))
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != cluster {
		return refuse(ReasonIdentityMismatch, "the CSR's common name is %q; it must be empty or the cluster name %q", cn, cluster)
	}
	subj := csr.Subject
	if len(subj.Organization)+len(subj.OrganizationalUnit)+len(subj.Country)+len(subj.Province)+
		len(subj.Locality)+len(subj.StreetAddress)+len(subj.PostalCode)+len(subj.ExtraNames) > 0 || subj.SerialNumber != "" {
		return refuse(ReasonIdentityMismatch, "the CSR's subject %q has attributes other than the common name; the identity is the cluster name alone", subj.String())
	}
	return nil
}

func checkUsages(req Request) error {
	if req.IsCA {
		return refuse(ReasonCARequested, "the request asks for a CA certificate; this issuer signs relay client certificates only")
	}
	for _, e := range req.CSR.Extensions {
		if !e.Id.Equal(oidBasicConstraints) {
			continue
		}
		if isCA, _, err := pki.UnmarshalBasicConstraints(e.Value); err != nil || isCA {
			return refuse(ReasonCARequested, "the CSR asks for CA basic constraints; this issuer signs relay client certificates only")
		}
	}
	if req.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return refuse(ReasonForbiddenUsage, "the request asks for the cert sign or CRL sign key usage, which a relay client certificate may not have")
	}
	for _, u := range req.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			return refuse(ReasonForbiddenUsage, "the request asks for the server auth usage; a relay client certificate has client auth only")
		case x509.ExtKeyUsageAny:
			return refuse(ReasonForbiddenUsage, "the request asks for the any extended key usage; a relay client certificate has client auth only")
		}
	}
	if !slices.Contains(req.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return refuse(ReasonMissingClientAuth, "the request's usages do not include client auth; add \"client auth\" to the Certificate's usages")
	}
	return nil
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return "[" + strings.Join(s, ", ") + "]"
}
