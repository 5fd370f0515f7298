package check

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/internal/testpki"
	"github.com/relaytls/relaytls/relayctl/modes"
)

// setup is a correct mode-4 setup from an in-memory PKI.
type setup struct {
	root, inter, server, client *testpki.Cert
}

func newSetup(t *testing.T) *setup {
	s := &setup{root: testpki.Root(t, "relay root")}
	s.inter = testpki.Intermediate(t, s.root, "relay intermediate")
	s.server = testpki.Issue(t, s.root, server("relay.example.com"))
	s.client = testpki.Issue(t, s.inter, testpki.Options{CommonName: "east", DNSNames: []string{"east"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return s
}

// eastToken is cluster east's own token under the management token.
var eastToken = func() []byte {
	ct, err := proof.ClusterToken(proof.Token("the-management-token-0123456789abcdef"), "east", 1)
	if err != nil {
		panic(err)
	}
	return ct
}()

func server(names ...string) testpki.Options {
	return testpki.Options{CommonName: names[0], DNSNames: names, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
}

func (s *setup) input() Input {
	mode, _ := modes.Parse("mtls-self-signed")
	return Input{
		Mode: mode,
		Management: &Side{RootSecret: "ns/relay-root-tls-secret", Root: []*x509.Certificate{s.root.Cert},
			Server:      &Cert{Secret: "ns/relay-server-tls-secret", Chain: []*x509.Certificate{s.server.Cert}},
			Signing:     &Cert{Secret: "ns/relay-tls-signing-secret", Chain: []*x509.Certificate{s.inter.Cert}},
			Token:       []byte("the-management-token-0123456789abcdef"),
			TokenSecret: "ns/relay-identity-token-secret"},
		Workload: &Side{RootSecret: "ns/relay-root-tls-secret", Root: []*x509.Certificate{s.root.Cert},
			Client:      &Cert{Secret: "ns/relay-tls-client-secret", Chain: []*x509.Certificate{s.client.Cert, s.inter.Cert}},
			Token:       eastToken,
			TokenSecret: "ns/relay-identity-token-secret"},
		DialAddress: "relay.example.com:9000",
		Cluster:     "east",
		Now:         time.Now(),
		MinLifetime: time.Hour,
	}
}

func TestEvaluate(t *testing.T) {
	s := newSetup(t)
	type testCase struct {
		name  string
		mod   func(in *Input)
		check string // the check that must report an error; "" for none
		want  string
	}
	other := testpki.Root(t, "someone else's root")
	for _, tc := range []testCase{
		{name: "correct setup"},
		{name: "wrong server SAN", mod: func(in *Input) { in.DialAddress = "relay.internal:9000" }, check: "server-san", want: `not "relay.internal"`},
		{name: "server IP not in SANs", mod: func(in *Input) { in.DialAddress = "10.0.0.7:9000" }, check: "server-san", want: "10.0.0.7"},
		{name: "client SAN is another cluster", mod: func(in *Input) { in.Cluster = "west" }, check: "client-san", want: "not exactly [west]"},
		{name: "bundle mismatch", mod: func(in *Input) { in.Workload.Root = []*x509.Certificate{other.Cert} }, check: "bundle", want: "differs from the management root"},
		{name: "server not from the root", mod: func(in *Input) {
			in.Management.Server.Chain = []*x509.Certificate{testpki.Issue(t, other, server("relay.example.com")).Cert}
		}, check: "chain", want: "does not verify against"},
		{name: "client without its intermediate", mod: func(in *Input) { in.Workload.Client.Chain = in.Workload.Client.Chain[:1] }, check: "chain", want: "relay-tls-client-secret does not verify"},
		{name: "too-short lifetime", mod: func(in *Input) {
			now := time.Now()
			c := testpki.Issue(t, s.inter, testpki.Options{DNSNames: []string{"east"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(9 * time.Minute)})
			in.Workload.Client.Chain = []*x509.Certificate{c.Cert, s.inter.Cert}
		}, check: "lifetime", want: "lives only 10m0s"},
		{name: "renewBefore not below duration", mod: func(in *Input) {
			in.Workload.Client.RenewBefore = 400 * 24 * time.Hour
			in.Workload.Client.Certificate = "relay-client"
		}, check: "lifetime", want: "renew it continuously"},
		{name: "expired", mod: func(in *Input) { in.Now = s.server.Cert.NotAfter.Add(time.Hour) }, check: "lifetime", want: "expired"},
		{name: "tokens differ", mod: func(in *Input) { in.Workload.Token = []byte("another-token-value-0123456789abcdef") }, check: "token", want: "is not the cluster token"},
		{name: "another cluster's token", mod: func(in *Input) { in.Cluster, in.Workload.Client = "west", nil }, check: "token", want: `cluster token of "west"`},
		{name: "an older generation", mod: func(in *Input) { in.TokenGeneration = 2 }, check: "token", want: "older tokenGeneration"},
		{name: "workload without token", mod: func(in *Input) { in.Workload.Token = nil }, check: "token", want: "no relay identity token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := s.input()
			if tc.mod != nil {
				tc.mod(&in)
			}
			r := Evaluate(in)
			var out bytes.Buffer
			r.Print(&out)
			if bytes.Contains(out.Bytes(), in.Management.Token) || (in.Workload.Token != nil && bytes.Contains(out.Bytes(), in.Workload.Token)) {
				t.Fatalf("the report prints a token:\n%s", out.String())
			}
			if tc.check == "" {
				if !r.OK() || len(r.Findings) != 0 {
					t.Fatalf("a correct setup has findings:\n%s", out.String())
				}
				for _, c := range []string{"server-san", "client-san", "bundle", "token", "chain", "lifetime"} {
					if !strings.Contains(out.String(), "ok       "+c) {
						t.Errorf("check %s did not run on a correct setup:\n%s", c, out.String())
					}
				}
				return
			}
			found := false
			for _, f := range r.Findings {
				if f.Check == tc.check && f.Severity == Error && strings.Contains(f.Problem, tc.want) {
					found = true
					if f.Fix == "" {
						t.Errorf("finding without a fix: %+v", f)
					}
				}
			}
			if !found || r.OK() {
				t.Fatalf("want an error from %s mentioning %q, got:\n%s", tc.check, tc.want, out.String())
			}
		})
	}
}
