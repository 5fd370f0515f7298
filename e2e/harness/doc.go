// Package harness runs relaytls the way a platform team would, on the
// clusters of package provider, for the end-to-end suite (e2e/suite) and the
// demo (e2e/demo): it builds the binaries once, installs a mode from the
// rendered deploy/ profiles, projects Secrets into kubelet-style directories
// as a pod's volumes would see them, and runs relay-issuer, relay-sidecar and
// the sample relay application as separate processes on 127.0.0.1.
package harness
