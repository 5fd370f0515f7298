// Package cmcontrollers is the one list of cert-manager controllers that
// relaytls runs from cert-manager's public packages: in the local test
// clusters (test/localcluster) and in the controller image built for kind
// (hack/images/cert-manager/controller). Importing it registers them.
//
// The set is the whole Certificate lifecycle, the approver, the CA and
// SelfSigned CertificateRequest signers, and the Issuer and ClusterIssuer
// controllers. ACME, Vault, Venafi, the ingress and Gateway shims and
// Kubernetes CSR signing are left out.
package cmcontrollers

import (
	// The controllers and issuer backends Names lists register themselves
	// when imported.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// Names returns the controllers this package registers, in start order; the
// caller owns the slice.
func Names() []string {
	return []string{
		"issuers", "clusterissuers",
		"certificates-trigger", "certificates-issuing", "certificates-key-manager",
		"certificates-request-manager", "certificates-readiness", "certificates-revision-manager",
		"certificaterequests-approver", "certificaterequests-issuer-ca", "certificaterequests-issuer-selfsigned",
	}
}
