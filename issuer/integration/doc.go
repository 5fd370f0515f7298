// Package integration holds relay-issuer's integration tests: the issuer runs
// against a real kube-apiserver and etcd with cert-manager's real controllers,
// webhook and approver (test/localcluster), as its own ServiceAccount bound to
// the RBAC that deploy/rbac ships.
package integration
