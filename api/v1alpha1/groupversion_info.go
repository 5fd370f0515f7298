// Package v1alpha1 holds the relaytls.io/v1alpha1 API: RelayIssuer (namespaced)
// and RelayClusterIssuer (cluster-scoped), two kinds of one cert-manager
// external issuer that share one spec.
//
// +kubebuilder:object:generate=true
// +groupName=relaytls.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "relaytls.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this API with a runtime.Scheme.
	// Each types file registers its kinds with knownTypes.
	SchemeBuilder = runtime.NewSchemeBuilder()

	// AddToScheme adds the types of this API to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// knownTypes adds objs to a scheme under GroupVersion, with the meta/v1
// options types (list, get, watch) of the group version.
func knownTypes(objs ...runtime.Object) func(*runtime.Scheme) error {
	return func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, objs...)
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	}
}
