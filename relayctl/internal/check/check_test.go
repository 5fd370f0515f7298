package check

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/relayctl/modes"
	"github.com/relaytls/relaytls/test/testpki"
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

// TestEvaluateMidRotation: during a root rotation the workload bundle holds
// the old and the new root (or still the old one alone, until its next
// renewal), and certificates may chain to either; none of that is an error.
// A root foreign to the rotation still is.
func TestEvaluateMidRotation(t *testing.T) {
	s := newSetup(t)
	next := testpki.Root(t, "relay root (next)")
	nextInter := testpki.Intermediate(t, next, "relay intermediate (next)")
	both := []*x509.Certificate{s.root.Cert, next.Cert}
	rotation := func(in *Input) {
		in.Management.Rotation = &Rotation{BundleSecret: "ns/relay-trust-bundle", Bundle: both,
			Roots: []string{sha256Hex(s.root.Cert), sha256Hex(next.Cert)}}
	}
	underNew := func(in *Input) {
		in.Management.Server.Chain = []*x509.Certificate{testpki.Issue(t, next, server("relay.example.com")).Cert}
		in.Management.Signing.Chain = []*x509.Certificate{nextInter.Cert}
		c := testpki.Issue(t, nextInter, testpki.Options{CommonName: "east", DNSNames: []string{"east"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		in.Workload.Client.Chain = []*x509.Certificate{c.Cert, nextInter.Cert}
	}
	other := testpki.Root(t, "someone else's root")
	for _, tc := range []struct {
		name    string
		mod     func(in *Input)
		warning string // a bundle warning is wanted
		err     string // a bundle error is wanted
	}{
		{name: "prepare: the workload holds old and new", mod: func(in *Input) { rotation(in); in.Workload.Root = both }},
		{name: "prepare: the workload has not renewed yet", mod: rotation, warning: "not yet the root rotation's trust bundle"},
		{name: "activate: every certificate under the new root", mod: func(in *Input) { rotation(in); underNew(in); in.Workload.Root = both }},
		{name: "retire: the management root moved, the workload not yet", mod: func(in *Input) {
			rotation(in)
			underNew(in)
			in.Management.Root = []*x509.Certificate{next.Cert}
			in.Management.Rotation.Bundle = []*x509.Certificate{next.Cert}
			in.Workload.Root = both
		}, warning: "not yet the root rotation's trust bundle"},
		{name: "a foreign root in the workload bundle", mod: func(in *Input) {
			rotation(in)
			in.Workload.Root = []*x509.Certificate{s.root.Cert, other.Cert}
		}, err: "differs from the management root"},
		{name: "without a rotation the new root is foreign", mod: func(in *Input) { in.Workload.Root = both }, err: "differs from the management root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := s.input()
			tc.mod(&in)
			r := Evaluate(in)
			var out bytes.Buffer
			r.Print(&out)
			var bundleErr, bundleWarn string
			for _, f := range r.Findings {
				switch {
				case f.Severity == Error && f.Check == "bundle":
					bundleErr = f.Problem
				case f.Severity == Error:
					t.Fatalf("unexpected error finding:\n%s", out.String())
				case f.Check == "bundle":
					bundleWarn = f.Problem
					if f.Fix == "" {
						t.Errorf("warning without a fix: %+v", f)
					}
				}
			}
			if tc.err != "" {
				if !strings.Contains(bundleErr, tc.err) {
					t.Fatalf("want a bundle error mentioning %q:\n%s", tc.err, out.String())
				}
				return
			}
			if bundleErr != "" || !r.OK() {
				t.Fatalf("a mid-rotation setup is reported as an error:\n%s", out.String())
			}
			if tc.warning != "" && !strings.Contains(bundleWarn, tc.warning) {
				t.Fatalf("want a bundle warning mentioning %q:\n%s", tc.warning, out.String())
			}
			if tc.warning == "" && bundleWarn != "" {
				t.Fatalf("unexpected bundle warning:\n%s", out.String())
			}
		})
	}
}

func sha256Hex(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
