package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"

	"github.com/cert-manager/cert-manager/pkg/util/pki"

	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/test/testpki"
)

func mustKey[K crypto.Signer](k K, err error) crypto.Signer {
	if err != nil {
		panic(err)
	}
	return k
}

func reasonOf(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	if err != nil {
		return "not a refusal: " + err.Error()
	}
	return ""
}

func TestCheckRequest(t *testing.T) {
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	p521 := mustKey(ecdsa.GenerateKey(elliptic.P521(), rand.Reader))
	p384 := mustKey(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	rsa1024 := mustKey(rsa.GenerateKey(rand.Reader, 1024))
	rsa2048 := mustKey(rsa.GenerateKey(rand.Reader, 2048))
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	bcCA, err := pki.MarshalBasicConstraints(true, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A SAN extension holding a registeredID, which crypto/x509 does not surface.
	rawSAN, err := asn1.Marshal([]asn1.RawValue{
		{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("cluster-1")},
		{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: []byte{0x2a, 0x03}},
	})
	if err != nil {
		t.Fatal(err)
	}

	type testCase struct {
		name        string
		cluster     string
		csr         testpki.CSROptions
		isCA        bool
		keyUsage    x509.KeyUsage
		extKeyUsage []x509.ExtKeyUsage
		trustDomain string
		wantReason  string
	}
	ok := testpki.CSROptions{DNSNames: []string{"cluster-1"}}
	for _, tc := range []testCase{
		{name: "valid", cluster: "cluster-1", csr: ok, extKeyUsage: clientAuth},
		{name: "valid with matching common name", cluster: "cluster-1", csr: testpki.CSROptions{CommonName: "cluster-1", DNSNames: []string{"cluster-1"}}, extKeyUsage: clientAuth},
		{name: "valid P-384", cluster: "cluster-1", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, Key: p384}, extKeyUsage: clientAuth},
		{name: "valid RSA 2048", cluster: "cluster-1", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, Key: rsa2048}, extKeyUsage: clientAuth},
		{name: "valid Ed25519", cluster: "cluster-1", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, Key: edKey}, extKeyUsage: clientAuth},
		{name: "valid SPIFFE URI", cluster: "cluster-1", trustDomain: "relay.example", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, URIs: []string{"spiffe://relay.example/cluster/cluster-1"}}, extKeyUsage: clientAuth},
		{name: "missing cluster", cluster: "", csr: ok, extKeyUsage: clientAuth, wantReason: ReasonMissingCluster},
		{name: "cluster not a DNS label", cluster: "Cluster_1", csr: ok, extKeyUsage: clientAuth, wantReason: ReasonInvalidCluster},
		{name: "DNS SAN of another cluster", cluster: "cluster-2", csr: ok, extKeyUsage: clientAuth, wantReason: ReasonIdentityMismatch},
		{name: "SANs beyond the cluster", cluster: "cluster-1", csr: testpki.CSROptions{DNSNames: []string{"cluster-1", "evil.example"}}, extKeyUsage: clientAuth, wantReason: ReasonIdentityMismatch},
		{name: "no DNS SAN", cluster: "cluster-1", csr: testpki.CSROptions{CommonName: "cluster-1"}, extKeyUsage: clientAuth, wantReason: ReasonIdentityMismatch},
		{name: "URI SAN without trust domain", cluster: "cluster-1", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, URIs: []string{"spiffe://relay.example/cluster/cluster-1"}}, extKeyUsage: clientAuth, wantReason: ReasonIdentityMismatch},
		{name: "URI SAN of another cluster", cluster: "cluster-1", trustDomain: "relay.example", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, URIs: []string{"spiffe://relay.example/cluster/cluster-2"}}, extKeyUsage: clientAuth, wantReason: ReasonIdentityMismatch},
		{name: "common name of another cluster", cluster: "cluster-1", csr: testpki.CSROptions{CommonName: "admin", DNSNames: []string{"cluster-1"}}, extKeyUsage: clientAuth, wantReason: ReasonIdentityMismatch},
		{name: "organization in subject", cluster: "cluster-1", csr: testpki.CSROptions{Subject: &pkix.Name{Organization: []string{"system:masters"}}, DNSNames: []string{"cluster-1"}}, extKeyUsage: clientAuth, wantReason: ReasonIdentityMismatch},
		{name: "registered ID SAN", cluster: "cluster-1", csr: testpki.CSROptions{ExtraExtensions: []pkix.Extension{{Id: oidSubjectAltName, Value: rawSAN}}}, extKeyUsage: clientAuth, wantReason: ReasonIdentityMismatch},
		{name: "weak RSA key", cluster: "cluster-1", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, Key: rsa1024}, extKeyUsage: clientAuth, wantReason: ReasonUnsupportedKey},
		{name: "P-521 key", cluster: "cluster-1", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, Key: p521}, extKeyUsage: clientAuth, wantReason: ReasonUnsupportedKey},
		{name: "CA requested", cluster: "cluster-1", csr: ok, isCA: true, extKeyUsage: clientAuth, wantReason: ReasonCARequested},
		{name: "CA basic constraints in CSR", cluster: "cluster-1", csr: testpki.CSROptions{DNSNames: []string{"cluster-1"}, ExtraExtensions: []pkix.Extension{bcCA}}, extKeyUsage: clientAuth, wantReason: ReasonCARequested},
		{name: "cert sign usage", cluster: "cluster-1", csr: ok, keyUsage: x509.KeyUsageCertSign, extKeyUsage: clientAuth, wantReason: ReasonForbiddenUsage},
		{name: "server auth", cluster: "cluster-1", csr: ok, extKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, wantReason: ReasonForbiddenUsage},
		{name: "any usage", cluster: "cluster-1", csr: ok, extKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, wantReason: ReasonForbiddenUsage},
		{name: "no client auth", cluster: "cluster-1", csr: ok, keyUsage: x509.KeyUsageDigitalSignature, wantReason: ReasonMissingClientAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, _ := testpki.CSR(t, tc.csr)
			csr, err := ParseCSR(der)
			if err != nil {
				t.Fatalf("ParseCSR: %v", err)
			}
			err = CheckRequest(Request{Cluster: tc.cluster, CSR: csr, IsCA: tc.isCA, KeyUsage: tc.keyUsage, ExtKeyUsage: tc.extKeyUsage}, tc.trustDomain)
			if got := reasonOf(err); got != tc.wantReason {
				t.Fatalf("reason = %q (%v), want %q", got, err, tc.wantReason)
			}
		})
	}
}

func TestParseCSR(t *testing.T) {
	der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"cluster-1"}})
	if _, err := ParseCSR(der); err != nil {
		t.Fatalf("valid CSR refused: %v", err)
	}
	if got := reasonOf(func() error { _, err := ParseCSR([]byte("garbage")); return err }()); got != ReasonInvalidCSR {
		t.Fatalf("garbage: reason %q, want %q", got, ReasonInvalidCSR)
	}
	tampered := append([]byte(nil), der...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	if got := reasonOf(func() error { _, err := ParseCSR(tampered); return err }()); got != ReasonInvalidCSR {
		t.Fatalf("bad signature: reason %q, want %q", got, ReasonInvalidCSR)
	}
}

func TestCheckProof(t *testing.T) {
	tok := proof.Token("a-relay-identity-token-of-forty-three-chars")
	other := proof.Token("another-relay-identity-token-of-43-characte")
	der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"cluster-1"}})
	der2, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"cluster-1"}})
	good := proof.Identity(tok, "cluster-1", der)
	for _, tc := range []struct {
		name, cluster, presented, want string
		csr                            []byte
	}{
		{"valid", "cluster-1", good, "", der},
		{"no proof", "cluster-1", "", ReasonMissingIdentityProof, der},
		{"wrong token", "cluster-1", proof.Identity(other, "cluster-1", der), ReasonInvalidIdentityProof, der},
		{"proof for another CSR", "cluster-1", good, ReasonInvalidIdentityProof, der2},
		{"proof for another cluster", "cluster-2", good, ReasonInvalidIdentityProof, der},
		{"malformed", "cluster-1", "%%%", ReasonInvalidIdentityProof, der},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckProof([]proof.Token{tok}, tc.cluster, tc.csr, tc.presented)
			if got := reasonOf(err); got != tc.want {
				t.Fatalf("reason = %q (%v), want %q", got, err, tc.want)
			}
			if err != nil && (strings.Contains(err.Error(), good) || strings.Contains(err.Error(), string(tok))) {
				t.Fatalf("refusal %q echoes the token or proof", err)
			}
		})
	}
}
