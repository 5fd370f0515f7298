// Package argocd holds the Argo CD health checks of the relaytls kinds, in
// Argo CD's own layout: resource_customizations/relaytls.io/<Kind>/health.lua
// with its health_test.yaml and testdata/, and the argocd-cm settings that
// install them (argocd-cm.yaml). The package's only Go code is its test,
// which runs every health_test.yaml case with a Lua interpreter the way Argo
// CD does, comparing status and message exactly.
package argocd
