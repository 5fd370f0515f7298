package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RelayClusterSpec is the management side's record of one workload cluster.
type RelayClusterSpec struct {
	// tokenGeneration enters the cluster's token (SPEC section 4). Bumping it
	// invalidates that cluster's old token and nothing else: the cluster gets
	// a fresh token (relayctl token --cluster NAME) that the old one cannot
	// stand in for.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +optional
	TokenGeneration int64 `json:"tokenGeneration,omitempty"`

	// revoked, when true, revokes the cluster: the issuer and the issuance
	// endpoint refuse it (reason ClusterRevoked) and the server sidecar cuts
	// and refuses its connections and resumes within one reload interval.
	// +optional
	Revoked bool `json:"revoked,omitempty"`

	// singleUseToken, when true, makes the cluster's token good for one
	// enrollment: once a certificate has been issued on a token proof, the
	// issuer advances tokenGeneration by itself, so the token the cluster
	// holds (and any copy that leaks later) is worthless, and the cluster
	// renews by proof of possession of its current client certificate
	// (SPEC section 4). A cluster whose certificate lapsed re-enrols with a
	// fresh token (relayctl token --cluster NAME gives the new generation's).
	// It applies to the auto client certificate modes (4 and 5) with
	// tokenScope PerCluster; in the tls modes the token is also the tunnel
	// credential and must stay valid. GitOps users who commit this
	// RelayCluster leave spec.tokenGeneration to the issuer (for example
	// with an ignoreDifferences entry), or a sync puts the used generation
	// back.
	// +optional
	SingleUseToken bool `json:"singleUseToken,omitempty"`
}

// RelayClusterStatus is what relay-issuer observed of the cluster.
type RelayClusterStatus struct {
	// conditions: Registered (the record is valid and admitted), Enrolled (a
	// certificate was issued for it).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// lastCertificateSerial is the serial number (hex) of the last
	// certificate issued for this cluster.
	// +optional
	LastCertificateSerial string `json:"lastCertificateSerial,omitempty"`

	// previousCertificateSerial is the serial (hex) of the certificate
	// issued before the last one. A renewal by possession is accepted from
	// the last certificate or from this one (whose renewal's answer may
	// have been lost), from no older one.
	// +optional
	PreviousCertificateSerial string `json:"previousCertificateSerial,omitempty"`

	// lastCertificateNotAfter is when that certificate expires.
	// +optional
	LastCertificateNotAfter *metav1.Time `json:"lastCertificateNotAfter,omitempty"`

	// lastTrustBundle is the trust bundle the cluster is known to hold: the
	// SHA-256 fingerprints (hex, of the DER) of its roots. A request that
	// came through the issuance endpoint records the bundle the cluster
	// reported holding when it asked (a bundle sent with a certificate is
	// held only once the cluster received it, which its next request shows);
	// any other request records the ca.crt returned with its certificate.
	// A root rotation activates only once every registered cluster's
	// lastTrustBundle holds the new root.
	// +optional
	LastTrustBundle []string `json:"lastTrustBundle,omitempty"`

	// lastCertificateRoots are the fingerprints of the roots of that bundle
	// the last certificate chains to. A root rotation retires the old root
	// only once no cluster's live certificate chains to it alone.
	// +optional
	LastCertificateRoots []string `json:"lastCertificateRoots,omitempty"`

	// previousCertificateRoots and previousCertificateNotAfter are those of
	// the certificate issued before the last one
	// (previousCertificateSerial). The cluster may still hold that one: an
	// answer lost on the way never replaced it. A root rotation retires the
	// old root only once neither certificate, while live, chains to it
	// alone.
	// +optional
	PreviousCertificateRoots []string `json:"previousCertificateRoots,omitempty"`
	// +optional
	PreviousCertificateNotAfter *metav1.Time `json:"previousCertificateNotAfter,omitempty"`

	// lastEnrollmentTime is when the last certificate was issued.
	// +optional
	LastEnrollmentTime *metav1.Time `json:"lastEnrollmentTime,omitempty"`

	// observedGeneration is the metadata.generation the status was written for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Condition types and reasons of a RelayCluster.
const (
	ClusterConditionRegistered = "Registered"
	ClusterConditionEnrolled   = "Enrolled"

	// ReasonClusterRevoked is the reason of a refusal for a revoked cluster,
	// on CertificateRequests, endpoint replies and the Registered condition.
	ReasonClusterRevoked = "ClusterRevoked"
	// ReasonClusterNotRegistered refuses a cluster that has no RelayCluster
	// when the issuer requires registration.
	ReasonClusterNotRegistered = "ClusterNotRegistered"
)

// Annotations of the renewal and single-use paths.
const (
	// RenewalOfAnnotation, on a CertificateRequest the issuance endpoint
	// created for a renewal by proof of possession, is the serial (hex) of
	// the client certificate the workload cluster presented.
	RenewalOfAnnotation = "relaytls.io/renewal-of"
	// RenewalAttestationAnnotation carries the endpoint's attestation that
	// it verified that certificate for this cluster and CSR: an HMAC made
	// with the root token, which workload clusters never hold, so no one
	// who can merely create CertificateRequests can claim a renewal.
	RenewalAttestationAnnotation = "relaytls.io/renewal-attestation"
	// TokenUsedByAnnotation, on a RelayCluster with singleUseToken, records
	// "<generation>/<CertificateRequest UID>": which request used the token
	// of that generation, so a retry of that same request is not refused.
	TokenUsedByAnnotation = "relaytls.io/token-used-by"
	// HeldTrustBundleAnnotation, on a CertificateRequest the issuance
	// endpoint created, lists the SHA-256 fingerprints (hex, comma
	// separated) of the roots the workload cluster reported holding in its
	// trust bundle when it asked; the issuer records them as the cluster's
	// status.lastTrustBundle. The report is the cluster's own claim: a
	// cluster that misreports harms only its own relay.
	HeldTrustBundleAnnotation = "relaytls.io/held-trust-bundle"
)

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=relaytls,shortName=rc
// +kubebuilder:printcolumn:name="Generation",type="integer",JSONPath=".spec.tokenGeneration"
// +kubebuilder:printcolumn:name="SingleUse",type="boolean",JSONPath=".spec.singleUseToken",priority=1
// +kubebuilder:printcolumn:name="Revoked",type="boolean",JSONPath=".spec.revoked"
// +kubebuilder:printcolumn:name="Registered",type="string",JSONPath=".status.conditions[?(@.type==\"Registered\")].status"
// +kubebuilder:printcolumn:name="Enrolled",type="string",JSONPath=".status.conditions[?(@.type==\"Enrolled\")].status"
// +kubebuilder:printcolumn:name="Serial",type="string",JSONPath=".status.lastCertificateSerial",priority=1
// +kubebuilder:printcolumn:name="Expires",type="date",JSONPath=".status.lastCertificateNotAfter"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"

// RelayCluster is one registered workload cluster, kept in the CA-mode
// issuer's Secret namespace; metadata.name is the cluster name (a DNS-1123
// label).
type RelayCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec RelayClusterSpec `json:"spec,omitempty"`
	// +optional
	Status RelayClusterStatus `json:"status,omitempty"`
}

// TokenGeneration is spec.tokenGeneration with its default applied.
func (c *RelayCluster) TokenGeneration() int64 {
	if c.Spec.TokenGeneration < 1 {
		return 1
	}
	return c.Spec.TokenGeneration
}

// +kubebuilder:object:root=true

// RelayClusterList is a list of RelayClusters.
type RelayClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RelayCluster `json:"items"`
}

func init() {
	SchemeBuilder.Register(knownTypes(&RelayCluster{}, &RelayClusterList{}))
}
