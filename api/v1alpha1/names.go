package v1alpha1

// Default Secret names and keys (SPEC section 2). Every one can be overridden
// in the issuer spec.
const (
	DefaultSigningSecretName = "relay-tls-signing-secret"
	DefaultRootSecretName    = "relay-root-tls-secret"
	DefaultTokenSecretName   = "relay-identity-token-secret"
	DefaultTokenSecretKey    = "token"
)

// Annotations that a CertificateRequest signed by a CA-mode issuer carries.
const (
	// ClusterAnnotation names the workload cluster the certificate is for; it
	// must be a DNS-1123 label and is the certificate's only DNS SAN.
	ClusterAnnotation = "relaytls.io/cluster"
	// IdentityProofAnnotation carries the identity proof of SPEC section 4.
	IdentityProofAnnotation = "relaytls.io/identity-proof"
)
