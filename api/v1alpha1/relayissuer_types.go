package v1alpha1

import (
	"github.com/cert-manager/issuer-lib/api/v1alpha1"
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
	Status v1alpha1.IssuerStatus `json:"status,omitempty"`
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
	Status v1alpha1.IssuerStatus `json:"status,omitempty"`
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
