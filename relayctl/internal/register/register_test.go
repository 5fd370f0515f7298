package register

import (
	"strings"
	"testing"
	"time"
)

func TestExplain(t *testing.T) {
	type testCase struct {
		name string
		s    state
		want string
	}
	for _, tc := range []testCase{
		{"refused proof", state{issuer: "RelayIssuer relay: Ready=True", request: "CertificateRequest relay-client-1: Ready=False", requestMsg: "Failed the management cluster refused the request: InvalidIdentityProof: the identity proof does not match"}, "run relayctl register again"},
		{"endpoint down", state{issuer: "RelayIssuer relay: Ready=False", issuerMsg: "Pending issuance endpoint 10.0.0.1:9443 unreachable: connection refused"}, "check --endpoint"},
		{"bad server certificate", state{issuer: "RelayIssuer relay: Ready=False", issuerMsg: "Pending issuance endpoint 127.0.0.1:1 (server name \"relay.b\") is unreachable: connection error: tls: failed to verify certificate: x509: certificate is valid for relay.a, not relay.b"}, "--server-name"},
		{"no issuer running", state{issuer: "RelayIssuer relay: no Ready condition yet"}, "does not run in the workload cluster"},
		{"no request", state{issuer: "RelayIssuer relay: Ready=True Checked", cert: "Certificate relay-client: Ready=False"}, "no CertificateRequest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.s.explain()
			if !strings.Contains(got, tc.want) || !strings.Contains(got, "Last seen:") {
				t.Errorf("explain() = %q, want it to mention %q", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	type testCase struct {
		name string
		o    Options
		want string
	}
	for _, tc := range []testCase{
		{"no cluster", Options{}, "--cluster is required"},
		{"bad cluster", Options{Cluster: "East"}, "--cluster"},
		{"bad endpoint", Options{Cluster: "east", Endpoint: "relay.example.com"}, "--endpoint"},
		{"renewBefore too long", Options{Cluster: "east", Duration: time.Hour, RenewBefore: 2 * time.Hour}, "--renew-before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	ok := Options{Cluster: "east", Endpoint: "relay.example.com:9443"}
	if err := ok.Validate(); err != nil || ok.Timeout <= 0 {
		t.Errorf("valid options: %v (timeout %s)", err, ok.Timeout)
	}
}
