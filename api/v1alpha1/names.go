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
	// DefaultTrustBundleSecretName is the Secret relay-issuer publishes with
	// the trust bundle (ca.crt) of a CA-mode issuer.
	DefaultTrustBundleSecretName = "relay-trust-bundle"
	// DefaultNewRootSecretName holds the new root during a root rotation.
	DefaultNewRootSecretName = "relay-root-tls-secret-next"
	// TelemetryRootSecretName is the collectors' root CA Secret; relay-issuer
	// creates it and keeps it equal to the trust bundle in the self-signed
	// modes (where the root Secret is made by a cert-manager Certificate).
	TelemetryRootSecretName = "telemetry-root-secret"
)

// Issuer condition types besides issuer-lib's Ready.
const (
	// IssuerConditionTokenScopeShared is a warning condition on a CA-mode
	// issuer with tokenScope Shared: any token holder can claim any cluster.
	IssuerConditionTokenScopeShared = "TokenScopeShared"
	// IssuerConditionRootRotation reports the declared root rotation: its
	// reason is the phase reached or what blocks the next one.
	IssuerConditionRootRotation = "RootRotation"
)

// Annotations that a CertificateRequest signed by a CA-mode issuer carries.
const (
	// ClusterAnnotation names the workload cluster the certificate is for; it
	// must be a DNS-1123 label and is the certificate's only DNS SAN.
	ClusterAnnotation = "relaytls.io/cluster"
	// IdentityProofAnnotation carries the identity proof of SPEC section 4.
	IdentityProofAnnotation = "relaytls.io/identity-proof"
)
