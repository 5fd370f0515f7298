package v1alpha1

// Default Secret names and keys (SPEC section 2). Every one can be overridden
// in the issuer spec.
const (
	DefaultSigningSecretName = "relay-tls-signing-secret"
	DefaultRootSecretName    = "relay-root-tls-secret"
	DefaultTokenSecretName   = "relay-identity-token-secret"
	DefaultTokenSecretKey    = "token"
	// PreviousTokenSecretKey holds the root token being rotated out; proofs
	// made with it (or cluster tokens derived from it) are accepted until it
	// is removed.
	PreviousTokenSecretKey = "token.previous"
	// DefaultClusterListName is the Secret relay-issuer publishes for the
	// server sidecar: revoked clusters and token generations (SPEC section 8).
	DefaultClusterListName = "relay-cluster-list"
	// ClusterListKey is the Secret key holding the list.
	ClusterListKey = "clusters.json"
)

// Issuer condition types besides issuer-lib's Ready.
const (
	// IssuerConditionTokenScopeShared is a warning condition on a CA-mode
	// issuer with tokenScope Shared: any token holder can claim any cluster.
	IssuerConditionTokenScopeShared = "TokenScopeShared"
)

// Annotations that a CertificateRequest signed by a CA-mode issuer carries.
const (
	// ClusterAnnotation names the workload cluster the certificate is for; it
	// must be a DNS-1123 label and is the certificate's only DNS SAN.
	ClusterAnnotation = "relaytls.io/cluster"
	// IdentityProofAnnotation carries the identity proof of SPEC section 4.
	IdentityProofAnnotation = "relaytls.io/identity-proof"
)
