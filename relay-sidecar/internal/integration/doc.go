// Package integration holds the relay sidecar's loopback tests: both roles
// with real TLS and real gRPC, the sample relay application streaming
// through them, credentials projected the way kubelet does, and network
// faults from a loopback fault proxy. It has no non-test code.
package integration
