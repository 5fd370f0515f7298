package v1alpha1

import (
	"github.com/cert-manager/issuer-lib/api/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +kubebuilder:object:generate=false

// RelayIssuerObject is what both kinds share: issuer-lib's Issuer plus the
// common spec. The signer works on it, never on a concrete kind.
type RelayIssuerObject interface {
	v1alpha1.Issuer
	GetSpec() *RelayIssuerSpec
}

var (
	_ RelayIssuerObject = &RelayIssuer{}
	_ RelayIssuerObject = &RelayClusterIssuer{}
)

// GetConditions returns the status conditions.
func (i *RelayIssuer) GetConditions() []metav1.Condition { return i.Status.Conditions }

// GetIssuerTypeIdentifier returns "relayissuers.relaytls.io".
func (i *RelayIssuer) GetIssuerTypeIdentifier() string { return "relayissuers.relaytls.io" }

// GetSpec returns the spec.
func (i *RelayIssuer) GetSpec() *RelayIssuerSpec { return &i.Spec }

// GetConditions returns the status conditions.
func (i *RelayClusterIssuer) GetConditions() []metav1.Condition { return i.Status.Conditions }

// GetIssuerTypeIdentifier returns "relayclusterissuers.relaytls.io".
func (i *RelayClusterIssuer) GetIssuerTypeIdentifier() string {
	return "relayclusterissuers.relaytls.io"
}

// GetSpec returns the spec.
func (i *RelayClusterIssuer) GetSpec() *RelayIssuerSpec { return &i.Spec }
