// Package render renders what deploy/ ships, with the real libraries a user's
// tools run: the relaytls Helm chart with Helm's own chart loader, schema
// validation and template engine, and the per-mode kustomize profiles with
// kustomize's krusty API. Its generator (cmd/gen) keeps the chart's copies of
// deploy/rbac and deploy/crds and the rendered profiles in step, and its
// tests apply every chart configuration and every profile to real local
// control planes with cert-manager.
//
// It is a nested Go module (with a replace to the root module) so that Helm's
// and kustomize's dependencies never move the root module's pinned stack.
package render
