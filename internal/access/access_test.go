package access

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/test/testpki"
)

func TestVerifyClient(t *testing.T) {
	ca, err := testpki.NewCA("root", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA("other", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	leaf := func(ca *testpki.CA, l testpki.Leaf) []*x509.Certificate {
		is, err := ca.Issue(l)
		if err != nil {
			t.Fatal(err)
		}
		return []*x509.Certificate{is.Cert}
	}
	now := time.Now()
	for _, tc := range []struct {
		name   string
		certs  []*x509.Certificate
		id     string
		reason string
	}{
		{"good", leaf(ca, testpki.Leaf{DNSNames: []string{"cluster-a"}, Usages: client}), "cluster-a", ""},
		{"no cert", nil, "", ReasonNoClientCert},
		{"other CA", leaf(other, testpki.Leaf{DNSNames: []string{"cluster-a"}, Usages: client}), "", ReasonUntrusted},
		{"expired", leaf(ca, testpki.Leaf{DNSNames: []string{"cluster-a"}, Usages: client, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}), "", ReasonExpired},
		{"not yet valid", leaf(ca, testpki.Leaf{DNSNames: []string{"cluster-a"}, Usages: client, NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}), "", ReasonNotYetValid},
		{"server auth only", leaf(ca, testpki.Leaf{DNSNames: []string{"cluster-a"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), "", ReasonWrongUsage},
		{"no DNS SAN", leaf(ca, testpki.Leaf{Usages: client}), "", ReasonNoIdentity},
		{"SAN not a label", leaf(ca, testpki.Leaf{DNSNames: []string{"a.b.example"}, Usages: client}), "", ReasonNoIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := VerifyClient(tc.certs, roots, now)
			if tc.reason == "" {
				if err != nil || id != tc.id {
					t.Fatalf("got %q, %v; want %q", id, err, tc.id)
				}
				return
			}
			if got := ReasonOf(err); got != tc.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.reason)
			}
		})
	}
}

func TestVerifyServerName(t *testing.T) {
	ca, _ := testpki.NewCA("root", time.Hour)
	is, _ := ca.Issue(testpki.Leaf{DNSNames: []string{"relay.example"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if err := VerifyServer([]*x509.Certificate{is.Cert}, roots, "relay.example", time.Now()); err != nil {
		t.Fatal(err)
	}
	err := VerifyServer([]*x509.Certificate{is.Cert}, roots, "other.example", time.Now())
	if ReasonOf(err) != ReasonServerName || !strings.Contains(err.Error(), `"other.example"`) {
		t.Fatalf("got %v", err)
	}
}

func TestCheckModeAndCluster(t *testing.T) {
	for _, tc := range []struct {
		server Mode
		agent  string
		ok     bool
	}{
		{ModeTLS, "tls", true}, {ModeTLS, "mtls", false}, {ModeInsecure, "tls", false}, {ModeMTLS, "", false},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.server, tc.agent), func(t *testing.T) {
			err := CheckMode(tc.server, tc.agent)
			if (err == nil) != tc.ok {
				t.Fatalf("got %v", err)
			}
			if err != nil && (ReasonOf(err) != ReasonModeMismatch || !strings.Contains(err.Error(), string(tc.server))) {
				t.Fatalf("refusal does not name the modes: %v", err)
			}
		})
	}
	if ReasonOf(CheckCluster("")) != ReasonMissingCluster || ReasonOf(CheckCluster("UPPER")) != ReasonBadCluster || CheckCluster("ok-1") != nil {
		t.Fatal("cluster checks")
	}
	if _, err := ParseMode("plaintext"); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

func TestCheckProof(t *testing.T) {
	tok, _ := proof.GenerateToken()
	ekm := []byte("0123456789abcdef0123456789abcdef")
	good := proof.Tunnel(tok, "cluster-a", ekm)
	for _, tc := range []struct {
		name, presented, reason string
		exporter                []byte
	}{
		{"good", good, "", ekm},
		{"missing", "", ReasonMissingProof, ekm},
		{"malformed", "!!", ReasonMalformedProof, ekm},
		{"other session", good, ReasonInvalidProof, []byte("another exporter value, 32 bytes")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckProof([]proof.Token{tok}, "cluster-a", tc.exporter, tc.presented)
			if ReasonOf(err) != tc.reason && !(tc.reason == "" && err == nil) {
				t.Fatalf("got %v, want reason %q", err, tc.reason)
			}
			if err != nil && (strings.Contains(err.Error(), string(tok)) || strings.Contains(err.Error(), good)) {
				t.Fatal("refusal leaks the token or proof")
			}
		})
	}
}

func TestClassifyHandshake(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, ReasonNotTLS},
		{errors.New("tls: client didn't provide a certificate"), ReasonNoClientCert},
		{errors.New("remote error: tls: certificate required"), ReasonNoClientCert},
		{fmt.Errorf("wrapped: %w", &Refusal{Reason: ReasonExpired, Msg: "x"}), ReasonExpired},
		{errors.New(`error reading server preface: EOF`), ReasonClosed},
		{errors.New("remote error: tls: bad certificate"), ReasonTLS},
		{errors.New("something else"), ReasonOther},
	} {
		if got := ClassifyHandshake(tc.err); got != tc.want {
			t.Errorf("%v: got %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestPeerCertificateAttacks: certificates a reviewer would try as a relay
// identity (SPEC section 6), each refused with its own reason.
func TestPeerCertificateAttacks(t *testing.T) {
	root := testpki.Root(t, "relay root")
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	now := time.Now()
	type testCase struct {
		name   string
		cert   *testpki.Cert
		server bool
		reason string
	}
	for _, tc := range []testCase{
		{name: "client cert with no EKU", cert: testpki.Issue(t, root, testpki.Options{DNSNames: []string{"cluster-a"}}), reason: ReasonNoEKU},
		{name: "client cert with only the any EKU", cert: testpki.Issue(t, root, testpki.Options{DNSNames: []string{"cluster-a"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}), reason: ReasonWrongUsage},
		{name: "CA certificate with client auth", cert: testpki.Issue(t, root, testpki.Options{DNSNames: []string{"cluster-a"}, IsCA: true, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), reason: ReasonPeerIsCA},
		{name: "server cert with no EKU", server: true, cert: testpki.Issue(t, root, testpki.Options{DNSNames: []string{"relay.example"}}), reason: ReasonNoEKU},
		{name: "server cert with client auth only", server: true, cert: testpki.Issue(t, root, testpki.Options{DNSNames: []string{"relay.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), reason: ReasonWrongUsage},
		{name: "good client cert", cert: testpki.Issue(t, root, testpki.Options{DNSNames: []string{"cluster-a"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})},
		{name: "good server cert", server: true, cert: testpki.Issue(t, root, testpki.Options{DNSNames: []string{"relay.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain := []*x509.Certificate{tc.cert.Cert}
			var err error
			if tc.server {
				err = VerifyServer(chain, roots, "relay.example", now)
			} else {
				_, err = VerifyClient(chain, roots, now)
			}
			if got := ReasonOf(err); got != tc.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.reason)
			}
		})
	}
}
