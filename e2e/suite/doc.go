// Package suite is relaytls's end-to-end suite: for each of the six relay
// security modes, two clusters (management and workload) from package
// provider with the real cert-manager, relaytls installed from the rendered
// deploy/ profiles, Secrets projected as kubelet would, and relay-issuer,
// relay-sidecar and the sample relay application running as separate
// processes on 127.0.0.1. The tests are in suite_test.go; run them with
//
//	go test -count=1 -timeout 20m ./e2e/suite/
//
// (`make e2e`; `make test` runs them with everything else).
// RELAYTLS_E2E_PROVIDER=kind runs them on kind clusters instead.
package suite
