package controller

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/relaytls/relaytls/test/testpki"
)

// TestChainsTo covers what activation checks: a leaf under the root, and
// the root re-issued by cert-manager with the same key (the signing CA of
// mode 2), which crypto/x509 alone does not verify against the earlier root.
func TestChainsTo(t *testing.T) {
	root := testpki.Root(t, "relaytls root CA")
	other := testpki.Root(t, "relaytls root CA") // same subject, another key
	reissue := func(signer *testpki.Cert) []byte {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: root.Cert.Subject,
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Key.Public(), signer.Key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	leaf := testpki.Issue(t, root, testpki.Options{DNSNames: []string{"relay.example"}})
	for _, tc := range []struct {
		name  string
		chain []byte
		want  bool
	}{
		{"the root itself", root.CertPEM(), true},
		{"the root re-issued with its key", reissue(root), true},
		{"a root of the same name with another key", reissue(other), false},
		{"a leaf under the root", leaf.CertPEM(), true},
		{"a leaf under another root", testpki.Issue(t, other, testpki.Options{DNSNames: []string{"relay.example"}}).CertPEM(), false},
		{"garbage", []byte("not a certificate"), false},
	} {
		if got := chainsTo(tc.chain, root.Cert); got != tc.want {
			t.Errorf("%s: chainsTo = %v, want %v", tc.name, got, tc.want)
		}
	}
}
