package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RelayIssuerSpec is the spec shared by RelayIssuer and RelayClusterIssuer.
// Exactly one of ca or remote is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.ca) != has(self.remote)",message="exactly one of ca or remote must be set"
type RelayIssuerSpec struct {
	// ca makes this issuer sign CertificateRequests itself with the relay's
	// intermediate CA, after checking the relay identity proof. Used in the
	// management cluster.
	// +optional
	CA *CAIssuerSpec `json:"ca,omitempty"`

	// remote makes this issuer forward CertificateRequests, with an identity
	// proof, to the management cluster's issuance endpoint. Used in workload
	// clusters.
	// +optional
	Remote *RemoteIssuerSpec `json:"remote,omitempty"`
}

// CAIssuerSpec configures an issuer that signs with a CA held in a Secret.
// The Secrets live in the RelayIssuer's namespace, or in the cluster resource
// namespace for a RelayClusterIssuer.
//
// +kubebuilder:validation:XValidation:rule="!has(self.generateToken) || !self.generateToken || has(self.tokenSecretRef)",message="generateToken requires tokenSecretRef"
type CAIssuerSpec struct {
	// signingSecretName is the Secret holding the intermediate CA that signs:
	// tls.crt (the CA certificate, optionally followed by its chain up to but
	// excluding the root) and tls.key.
	// +kubebuilder:default=relay-tls-signing-secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SigningSecretName string `json:"signingSecretName,omitempty"`

	// rootSecretName is the Secret whose ca.crt is the root CA. It becomes the
	// ca.crt of every certificate this issuer signs, and the signing CA must
	// chain to it.
	// +kubebuilder:default=relay-root-tls-secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	RootSecretName string `json:"rootSecretName,omitempty"`

	// tokenSecretRef names the Secret and key holding the relay identity
	// token. When set, every CertificateRequest must carry an identity proof
	// made with this token for the CSR and cluster it names
	// (relaytls.io/identity-proof). When absent, no proof is asked for, but
	// the identity rules (cluster annotation, SANs, usages) still hold.
	// +optional
	TokenSecretRef *TokenSecretRef `json:"tokenSecretRef,omitempty"`

	// generateToken makes the issuer create the token Secret named by
	// tokenSecretRef, with a random token of 32 bytes, when it does not exist.
	// An existing Secret is never changed.
	// +optional
	GenerateToken bool `json:"generateToken,omitempty"`

	// maxDuration caps the lifetime of the certificates this issuer signs. A
	// certificate never outlives the signing CA either.
	// +kubebuilder:default="720h"
	// +optional
	MaxDuration *metav1.Duration `json:"maxDuration,omitempty"`

	// tokenScope says what a workload cluster's token is. PerCluster (the
	// default): each cluster holds only its cluster token, derived from the
	// root token in tokenSecretRef, its name and its RelayCluster's
	// tokenGeneration, so a token proves one cluster and no other. Shared:
	// every cluster holds the root token itself (the seed's literal flow), and
	// any holder can claim any cluster name; the issuer then reports a
	// TokenScopeShared warning condition.
	// +kubebuilder:validation:Enum=PerCluster;Shared
	// +kubebuilder:default=PerCluster
	// +optional
	TokenScope TokenScope `json:"tokenScope,omitempty"`

	// requireRegistration makes the issuer sign only for clusters that have a
	// RelayCluster in the issuer's Secret namespace and are not revoked. The
	// shipped profiles turn it on. When off, an unregistered cluster is
	// treated as generation 1 and never revoked; a registered one is still
	// checked.
	// +optional
	RequireRegistration bool `json:"requireRegistration,omitempty"`

	// trustDomain, when set, allows (but does not require) one URI SAN of the
	// form spiffe://<trustDomain>/cluster/<cluster name>.
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[a-z0-9._-]+$`
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`

	// trustBundleSecretName is the Secret relay-issuer publishes, in the
	// issuer's Secret namespace, with the trust bundle (ca.crt): every root
	// a live certificate of this issuer may chain to. It is the ca.crt of
	// every certificate the issuer signs, and what the server sidecar
	// verifies agents against. Outside a root rotation it equals the root
	// Secret's ca.crt; during one it holds the old and the new root.
	// +kubebuilder:default=relay-trust-bundle
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	TrustBundleSecretName string `json:"trustBundleSecretName,omitempty"`

	// rootRotation declares a rotation of the root CA (README "Rotating the
	// root"). Set it in Git, or with relayctl rotate-root, and move phase
	// forward: Prepare, then Activate, then Retire. Each phase is refused,
	// with the reason in status.rootRotation and the RootRotation
	// condition, while a registered cluster would lose trust.
	// +optional
	RootRotation *RootRotation `json:"rootRotation,omitempty"`
}

// RootRotationPhase is the phase a root rotation is asked to reach.
// +kubebuilder:validation:Enum=Prepare;Activate;Retire
type RootRotationPhase string

// Root rotation phases, in order.
const (
	// RootRotationPrepare adds the new root to the trust bundle that every
	// renewal returns; nothing is signed under it yet.
	RootRotationPrepare RootRotationPhase = "Prepare"
	// RootRotationActivate re-issues the intermediate and the server
	// certificate under the new root, once every registered cluster was
	// given a bundle holding it.
	RootRotationActivate RootRotationPhase = "Activate"
	// RootRotationRetire removes the old root from the bundle, once no live
	// leaf chains to it.
	RootRotationRetire RootRotationPhase = "Retire"
)

// PhaseIndex orders the phases: 1 Prepare, 2 Activate, 3 Retire, 0 otherwise.
func PhaseIndex(p RootRotationPhase) int {
	switch p {
	case RootRotationPrepare:
		return 1
	case RootRotationActivate:
		return 2
	case RootRotationRetire:
		return 3
	}
	return 0
}

// RootRotation is a declared root rotation.
type RootRotation struct {
	// name identifies this rotation (for example the month it starts,
	// "2026-07"). A rotation with another name is refused while this one
	// has not reached Retire.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +required
	Name string `json:"name"`

	// phase is the phase the rotation is asked to reach. relay-issuer moves
	// through the phases in order and never past this one.
	// +required
	Phase RootRotationPhase `json:"phase"`

	// newRootSecretName is the Secret that holds the new root. When the
	// root Secret is made by a cert-manager Certificate (the self-signed
	// modes), relay-issuer makes this one with a copy of that Certificate
	// (named <root Certificate>-next). Otherwise (bring-your-own modes) the
	// user places the new root's ca.crt here.
	// +kubebuilder:default=relay-root-tls-secret-next
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	NewRootSecretName string `json:"newRootSecretName,omitempty"`
}

// RelayIssuerStatus is the status of a RelayIssuer or RelayClusterIssuer.
type RelayIssuerStatus struct {
	// conditions: Ready (issuer-lib), TokenScopeShared and RootRotation.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// rootRotation is the progress of the declared root rotation.
	// +optional
	RootRotation *RootRotationStatus `json:"rootRotation,omitempty"`
}

// RootRotationStatus is what relay-issuer has done of a root rotation.
type RootRotationStatus struct {
	// name of the rotation.
	Name string `json:"name"`
	// phase is the last phase reached (completed).
	// +optional
	Phase RootRotationPhase `json:"phase,omitempty"`
	// oldRoots are the SHA-256 fingerprints (hex, of the DER) of the roots
	// being rotated out.
	// +optional
	OldRoots []string `json:"oldRoots,omitempty"`
	// newRoot is the fingerprint of the new root, once it is known and valid.
	// +optional
	NewRoot string `json:"newRoot,omitempty"`
	// source is CertManager (relay-issuer made the new root with a
	// cert-manager Certificate) or User (the user placed it).
	// +optional
	Source string `json:"source,omitempty"`
	// activatedAt is when the signing CA was first seen chaining to the new
	// root: every leaf issued after it chains to the new root.
	// +optional
	ActivatedAt *metav1.Time `json:"activatedAt,omitempty"`
	// waitingFor names the clusters (or objects) holding the next phase back.
	// +optional
	WaitingFor []string `json:"waitingFor,omitempty"`
	// message says what happens next, or why the rotation cannot advance.
	// +optional
	Message string `json:"message,omitempty"`
}

// TokenScope is PerCluster or Shared.
type TokenScope string

// Token scopes.
const (
	TokenScopePerCluster TokenScope = "PerCluster"
	TokenScopeShared     TokenScope = "Shared"
)

// TokenSecretRef names a key of a Secret holding a relay identity token.
type TokenSecretRef struct {
	// name of the Secret.
	// +kubebuilder:default=relay-identity-token-secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Name string `json:"name,omitempty"`

	// key of the token in the Secret's data.
	// +kubebuilder:default=token
	// +kubebuilder:validation:MinLength=1
	// +optional
	Key string `json:"key,omitempty"`
}

// RemoteIssuerSpec configures an issuer that forwards to the management
// cluster's issuance endpoint.
type RemoteIssuerSpec struct {
	// endpoint is the host:port of the issuance endpoint.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +required
	Endpoint string `json:"endpoint"`

	// serverName is the name the endpoint's certificate must carry. Defaults
	// to the host part of endpoint.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ServerName string `json:"serverName,omitempty"`

	// trustBundleSecretName is the Secret whose ca.crt verifies the endpoint.
	// +kubebuilder:default=relay-root-tls-secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	TrustBundleSecretName string `json:"trustBundleSecretName,omitempty"`

	// tokenSecretRef names the Secret and key holding the relay identity
	// token that proofs are made with. The token itself is never sent.
	// +kubebuilder:default={name: relay-identity-token-secret, key: token}
	// +optional
	TokenSecretRef *TokenSecretRef `json:"tokenSecretRef,omitempty"`

	// cluster is this workload cluster's name: a DNS-1123 label, the DNS SAN
	// of its relay client certificate.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +required
	Cluster string `json:"cluster"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=cert-manager;relaytls
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].status"
// +kubebuilder:printcolumn:name="Reason",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].reason"
// +kubebuilder:printcolumn:name="Message",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].message"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"

// RelayIssuer is a namespaced cert-manager issuer for relay client
// certificates. Its Secrets live in its own namespace.
type RelayIssuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec RelayIssuerSpec `json:"spec"`
	// +optional
	Status RelayIssuerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=cert-manager;relaytls
// +kubebuilder:printcolumn:name="Ready",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].status"
// +kubebuilder:printcolumn:name="Reason",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].reason"
// +kubebuilder:printcolumn:name="Message",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].message"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"

// RelayClusterIssuer is a cluster-scoped cert-manager issuer for relay client
// certificates. Its Secrets live in the issuer's cluster resource namespace.
type RelayClusterIssuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec RelayIssuerSpec `json:"spec"`
	// +optional
	Status RelayIssuerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// RelayIssuerList is a list of RelayIssuers.
type RelayIssuerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RelayIssuer `json:"items"`
}

// +kubebuilder:object:root=true

// RelayClusterIssuerList is a list of RelayClusterIssuers.
type RelayClusterIssuerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RelayClusterIssuer `json:"items"`
}

func init() {
	SchemeBuilder.Register(knownTypes(&RelayIssuer{}, &RelayIssuerList{}, &RelayClusterIssuer{}, &RelayClusterIssuerList{}))
}
