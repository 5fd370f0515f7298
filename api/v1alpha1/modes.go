package v1alpha1

// The six relay security modes (SPEC section 3), by the name the chart, the
// kustomize profiles, relayctl and the tests use. Mode N is Modes()[N-1].
const (
	// ModeInsecure: plaintext h2c, the cluster name unchecked (labs only).
	ModeInsecure = "insecure"
	// ModeTLSSelfSigned: TLS with a server certificate cert-manager issues
	// from a root made in the management cluster; agents prove their
	// cluster with the relay identity token.
	ModeTLSSelfSigned = "tls-self-signed"
	// ModeTLSBYOServer: as ModeTLSSelfSigned with the user's server
	// certificate.
	ModeTLSBYOServer = "tls-byo-server"
	// ModeMTLSSelfSigned: mutual TLS; agents get client certificates from a
	// CA-mode RelayIssuer after a token-proved enrollment.
	ModeMTLSSelfSigned = "mtls-self-signed"
	// ModeMTLSBYOCA: as ModeMTLSSelfSigned with the user's root,
	// intermediate and server certificate.
	ModeMTLSBYOCA = "mtls-byo-ca"
	// ModeMTLSBYOClient: mutual TLS with the user's server and client
	// certificates; no token.
	ModeMTLSBYOClient = "mtls-byo-client"
)

// Modes returns the six mode names in SPEC order.
func Modes() []string {
	return []string{ModeInsecure, ModeTLSSelfSigned, ModeTLSBYOServer, ModeMTLSSelfSigned, ModeMTLSBYOCA, ModeMTLSBYOClient}
}

// Secret and Certificate names of SPEC section 2 besides the issuer's
// defaults (DefaultRootSecretName, DefaultSigningSecretName,
// DefaultTokenSecretName).
const (
	// ServerSecretName holds the relay server certificate that cert-manager
	// issues in the self-signed modes; the bring-your-own modes may not use
	// the name.
	ServerSecretName = "relay-server-tls-secret"
	// CustomServerSecretName is the default Secret of the user's server
	// certificate in the bring-your-own modes.
	CustomServerSecretName = "relay-server-tls-secret-custom"
	// ClientSecretName holds a workload cluster's client certificate issued
	// through the relay (modes 4 and 5).
	ClientSecretName = "relay-tls-client-secret"
	// BYOClientSecretName holds a workload cluster's client certificate from
	// the user's PKI (mode 6).
	BYOClientSecretName = "relay-client-tls-secret"
	// ClientCertificateName is the Certificate that ClientSecretName comes
	// from.
	ClientCertificateName = "relay-client"
)
