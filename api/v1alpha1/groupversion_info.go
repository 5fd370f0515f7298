// Package v1alpha1 holds the relaytls.io/v1alpha1 API: RelayIssuer (namespaced)
// and RelayClusterIssuer (cluster-scoped), two kinds of one cert-manager
// external issuer that share one spec.
//
// +kubebuilder:object:generate=true
// +groupName=relaytls.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "relaytls.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this API with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this API to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
