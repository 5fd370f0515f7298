// Package argocd holds the Argo CD health check of RelayIssuer and
// RelayClusterIssuer (relayissuer-health.lua) and the argocd-cm settings that
// install it (argocd-cm.yaml). The package's only Go code is its test, which
// runs the script with a Lua interpreter the way Argo CD does.
package argocd
