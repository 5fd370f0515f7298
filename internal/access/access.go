// Package access holds the relay sidecar's access checks as plain functions:
// verifying a peer certificate against the current trust bundle, deriving
// an agent's identity from its certificate, checking that both sides run
// the same mode, checking the channel-bound tunnel proof, and naming the
// reason of a refused handshake. Every refusal is a *Refusal with a short
// reason label (for metrics) and a message for humans; none carries a token,
// a proof or key bytes.
package access

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/relaytls/relaytls/internal/proof"
)

// Mode is the security mode of the relay.
type Mode string

const (
	ModeInsecure Mode = "insecure"
	ModeTLS      Mode = "tls"
	ModeMTLS     Mode = "mtls"
)

// ParseMode accepts exactly the three modes.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeInsecure, ModeTLS, ModeMTLS:
		return m, nil
	}
	return "", fmt.Errorf("--mode=%q is not one of insecure, tls, mtls", s)
}

// Refusal reasons.
const (
	ReasonNoClientCert    = "no_client_cert"
	ReasonUntrusted       = "untrusted"
	ReasonExpired         = "expired"
	ReasonNotYetValid     = "not_yet_valid"
	ReasonWrongUsage      = "wrong_usage"
	ReasonNoEKU           = "no_extended_key_usage"
	ReasonPeerIsCA        = "peer_is_ca"
	ReasonRevoked         = "cluster_revoked"
	ReasonStaleGeneration = "stale_token_generation"
	ReasonScopeMismatch   = "token_scope_mismatch"
	ReasonNoIdentity      = "no_identity"
	ReasonServerName      = "server_name_mismatch"
	ReasonModeMismatch    = "mode_mismatch"
	ReasonMissingCluster  = "missing_cluster"
	ReasonBadCluster      = "bad_cluster"
	ReasonClusterMismatch = "cluster_mismatch"
	ReasonMissingProof    = "missing_proof"
	ReasonMalformedProof  = "malformed_proof"
	ReasonInvalidProof    = "invalid_proof"
	ReasonNoMaterial      = "no_valid_material"
	ReasonNotTLS          = "not_tls"
	ReasonTLSOnInsecure   = "tls_on_insecure"
	ReasonPeerExpired     = "peer_certificate_expired"
	ReasonClosed          = "closed_early"
	ReasonTLS             = "tls_error"
	ReasonOther           = "other"
)

// Refusal is a refused peer.
type Refusal struct {
	Reason string
	Msg    string
}

func (r *Refusal) Error() string { return r.Msg }

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason of a refusal in err's chain, or a
// classification of a TLS handshake error.
func ReasonOf(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return ClassifyHandshake(err)
}

// ClassifyHandshake names the reason of a failed TLS handshake.
func ClassifyHandshake(err error) string {
	if err == nil {
		return ""
	}
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return ReasonNotTLS
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ReasonClosed
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "client didn't provide a certificate"), strings.Contains(msg, "certificate required"):
		return ReasonNoClientCert
	case strings.Contains(msg, "unknown certificate authority"), strings.Contains(msg, "unknown authority"):
		return ReasonUntrusted
	case strings.Contains(msg, "expired"):
		return ReasonExpired
	case strings.Contains(msg, "tls:"):
		return ReasonTLS
	case strings.HasSuffix(msg, "EOF"), strings.HasSuffix(msg, `EOF"`), strings.Contains(msg, "connection reset"):
		return ReasonClosed
	}
	return ReasonOther
}

func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, name string, now time.Time) error {
	leaf := certs[0]
	serial := leaf.SerialNumber.Text(16)
	if now.Before(leaf.NotBefore) {
		return refuse(ReasonNotYetValid, "certificate (serial %s) is not valid before %s", serial, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return refuse(ReasonExpired, "certificate (serial %s) expired at %s", serial, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	// SPEC section 6: the usage must be explicit. A certificate with no
	// extended key usage (which crypto/x509 would take for any usage) or with
	// only "any" is refused, and so is a CA certificate as a peer identity.
	if len(leaf.ExtKeyUsage) == 0 {
		return refuse(ReasonNoEKU, "certificate (serial %s) has no extended key usage; a relay %s certificate must carry %s explicitly", serial, peerRole(usage), usageName(usage))
	}
	if !hasUsage(leaf, usage) {
		return refuse(ReasonWrongUsage, "certificate (serial %s) lacks the %s extended key usage", serial, usageName(usage))
	}
	if leaf.IsCA {
		return refuse(ReasonPeerIsCA, "certificate (serial %s, subject %q) is a CA certificate; a relay %s certificate must not be a CA", serial, leaf.Subject.String(), peerRole(usage))
	}
	if roots == nil {
		return refuse(ReasonNoMaterial, "no trust bundle is loaded to verify the peer")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: name,
	})
	if err == nil {
		return nil
	}
	var hn x509.HostnameError
	if errors.As(err, &hn) {
		return refuse(ReasonServerName, "server certificate (serial %s) is not valid for %q (it names %v)", serial, name, leaf.DNSNames)
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return refuse(ReasonUntrusted, "certificate (serial %s, issuer %q) does not chain to the trust bundle", serial, leaf.Issuer.CommonName)
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) && ci.Reason == x509.IncompatibleUsage {
		return refuse(ReasonWrongUsage, "certificate (serial %s) chain does not allow %s", serial, usageName(usage))
	}
	return refuse(ReasonUntrusted, "certificate (serial %s) does not verify: %v", serial, err)
}

// hasUsage reports whether the leaf names usage explicitly ("any" does not
// count).
func hasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	for _, x := range c.ExtKeyUsage {
		if x == u {
			return true
		}
	}
	return false
}

func peerRole(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageClientAuth {
		return "agent (client)"
	}
	return "server"
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageClientAuth {
		return "client-auth"
	}
	return "server-auth"
}

// VerifyClient checks an agent's certificate chain (leaf first) against
// roots at now and returns the agent's identity: its DNS SAN.
func VerifyClient(certs []*x509.Certificate, roots *x509.CertPool, now time.Time) (string, error) {
	if len(certs) == 0 {
		return "", refuse(ReasonNoClientCert, "the agent presented no client certificate (mode mtls requires one)")
	}
	if err := verifyChain(certs, roots, x509.ExtKeyUsageClientAuth, "", now); err != nil {
		return "", err
	}
	return IdentityOf(certs[0])
}

// IdentityOf is the agent identity of a client certificate: its first DNS
// SAN, which must be a DNS-1123 label (a cluster name).
func IdentityOf(leaf *x509.Certificate) (string, error) {
	if len(leaf.DNSNames) == 0 {
		return "", refuse(ReasonNoIdentity, "client certificate (serial %s) has no DNS SAN naming the cluster", leaf.SerialNumber.Text(16))
	}
	id := leaf.DNSNames[0]
	if err := proof.ValidateCluster(id); err != nil {
		return "", refuse(ReasonNoIdentity, "client certificate (serial %s): %v", leaf.SerialNumber.Text(16), err)
	}
	return id, nil
}

// VerifyServer checks the server's chain against roots for serverName.
func VerifyServer(certs []*x509.Certificate, roots *x509.CertPool, serverName string, now time.Time) error {
	if len(certs) == 0 {
		return refuse(ReasonUntrusted, "the server presented no certificate")
	}
	return verifyChain(certs, roots, x509.ExtKeyUsageServerAuth, serverName, now)
}

// CheckMode refuses an agent whose declared mode differs from the server's.
func CheckMode(server Mode, agent string) error {
	if agent == "" {
		return refuse(ReasonModeMismatch, "the agent did not declare its mode; this server runs --mode=%s", server)
	}
	if Mode(agent) != server {
		return refuse(ReasonModeMismatch, "mode mismatch: the agent runs --mode=%s but this server runs --mode=%s", agent, server)
	}
	return nil
}

// CheckCluster validates a declared cluster name.
func CheckCluster(cluster string) error {
	if cluster == "" {
		return refuse(ReasonMissingCluster, "the agent did not send its cluster name")
	}
	if err := proof.ValidateCluster(cluster); err != nil {
		return refuse(ReasonBadCluster, "%v", err)
	}
	return nil
}

// CheckProof verifies a tunnel proof for cluster on a connection whose TLS
// exporter value is exporter.
func CheckProof(tokens []proof.Token, cluster string, exporter []byte, presented string) error {
	err := proof.VerifyTunnel(tokens, cluster, exporter, presented)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, proof.ErrMissingProof):
		return refuse(ReasonMissingProof, "cluster %q sent no tunnel proof (mode tls requires the relay identity token)", cluster)
	case errors.Is(err, proof.ErrMalformedProof):
		return refuse(ReasonMalformedProof, "cluster %q sent a malformed tunnel proof", cluster)
	case errors.Is(err, proof.ErrInvalidProof):
		return refuse(ReasonInvalidProof, "cluster %q sent a tunnel proof that does not match the relay identity token for this TLS session (wrong token, or a proof replayed from another session)", cluster)
	case errors.Is(err, proof.ErrNoToken):
		return refuse(ReasonNoMaterial, "this server has no relay identity token loaded")
	}
	return refuse(ReasonOther, "tunnel proof check failed")
}

// CheckTunnelProof verifies a tunnel proof with the cluster's keys and, when
// it fails, names a proof made with an older token generation or for the
// other token scope (roots are the server's root tokens, used for that
// explanation only).
func CheckTunnelProof(keys []proof.Token, scope proof.Scope, roots []proof.Token, cluster string, generation int64, exporter []byte, presented string) error {
	err := CheckProof(keys, cluster, exporter, presented)
	var r *Refusal
	if err == nil || !errors.As(err, &r) || r.Reason != ReasonInvalidProof {
		return err
	}
	check := func(k []proof.Token) error { return proof.VerifyTunnel(k, cluster, exporter, presented) }
	switch proof.Explain(scope, roots, cluster, generation, check) {
	case proof.MismatchStaleGeneration:
		return refuse(ReasonStaleGeneration, "cluster %q sent a tunnel proof made with a token of an older generation (now %d); give the cluster its new token", cluster, generation)
	case proof.MismatchScope:
		return refuse(ReasonScopeMismatch, "cluster %q sent a tunnel proof for the other token scope (this server runs --token-scope=%s)", cluster, scopeFlag(scope))
	}
	return err
}

func scopeFlag(s proof.Scope) string {
	if s == proof.ScopeShared {
		return "shared"
	}
	return "per-cluster"
}
