// Package profiles holds the kustomize profiles of the six relay security
// modes, deploy/profiles/<mode>/{management,workload}, as rendered from the
// Helm chart by deploy/render's generator, and gives Go code (relayctl, the
// integration and end-to-end tests) the very manifests a GitOps repository
// points at, so nothing installs a second, hand-written copy.
package profiles

import (
	"embed"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/manifest"
)

//go:embed */*/relaytls.yaml
var files embed.FS

// Modes are the relay security modes of SPEC section 3, in order (defined
// in api/v1alpha1).
var Modes = relayv1.Modes()

// Roles are the cluster roles.
var Roles = []string{"management", "workload"}

// Namespace is the namespace the profiles install into.
const Namespace = "relaytls-system"

// Manifest returns the rendered manifests of a profile.
func Manifest(mode, role string) ([]byte, error) {
	if !slices.Contains(Modes, mode) {
		return nil, fmt.Errorf("unknown mode %q; the modes are %s", mode, strings.Join(Modes, ", "))
	}
	if !slices.Contains(Roles, role) {
		return nil, fmt.Errorf("unknown role %q; the roles are management and workload", role)
	}
	return files.ReadFile(mode + "/" + role + "/relaytls.yaml")
}

// Objects returns the objects of a profile, in order.
func Objects(mode, role string) ([]*unstructured.Unstructured, error) {
	b, err := Manifest(mode, role)
	if err != nil {
		return nil, err
	}
	objs, err := manifest.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("profile %s/%s: %w", mode, role, err)
	}
	return objs, nil
}

// identityKinds are the kinds of relay-issuer's identity and permissions.
var identityKinds = []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}

// IssuerIdentity returns the namespace, ServiceAccount and RBAC that
// relay-issuer runs under in a profile: exactly what a cluster installed
// from the profile (or the chart) grants it.
func IssuerIdentity(mode, role string) ([]*unstructured.Unstructured, error) {
	objs, err := Objects(mode, role)
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if slices.Contains(identityKinds, o.GetKind()) {
			out = append(out, o)
		}
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("profile %s/%s runs no relay-issuer (no ServiceAccount or RBAC)", mode, role)
	}
	return out, nil
}
