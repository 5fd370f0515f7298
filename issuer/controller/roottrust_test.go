package controller

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/test/testpki"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// TestOnOldRoot covers the retire gate for one cluster: its last
// certificate, and the one before it while live, since the answer that
// carried the last one may have been lost.
func TestOnOldRoot(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	live := &metav1.Time{Time: now.Add(time.Hour)}
	expired := &metav1.Time{Time: now.Add(-time.Second)}
	const oldRoot, newRoot = "0ld", "new"
	for _, tc := range []struct {
		name string
		s    relayv1.RelayClusterStatus
		want bool
	}{
		{"never enrolled", relayv1.RelayClusterStatus{}, false},
		{"last under the old root", relayv1.RelayClusterStatus{LastCertificateNotAfter: live, LastCertificateRoots: []string{oldRoot}}, true},
		{"last under the old root, expired", relayv1.RelayClusterStatus{LastCertificateNotAfter: expired, LastCertificateRoots: []string{oldRoot}}, false},
		{"first certificate under the new root", relayv1.RelayClusterStatus{LastCertificateNotAfter: live, LastCertificateRoots: []string{newRoot}}, false},
		{"one renewal after activation: the one before is live under the old root", relayv1.RelayClusterStatus{
			LastCertificateSerial: "2", LastCertificateNotAfter: live, LastCertificateRoots: []string{newRoot},
			PreviousCertificateSerial: "1", PreviousCertificateNotAfter: live, PreviousCertificateRoots: []string{oldRoot}}, true},
		{"the one before expired", relayv1.RelayClusterStatus{
			LastCertificateSerial: "2", LastCertificateNotAfter: live, LastCertificateRoots: []string{newRoot},
			PreviousCertificateSerial: "1", PreviousCertificateNotAfter: expired, PreviousCertificateRoots: []string{oldRoot}}, false},
		{"two renewals after activation", relayv1.RelayClusterStatus{
			LastCertificateSerial: "3", LastCertificateNotAfter: live, LastCertificateRoots: []string{newRoot},
			PreviousCertificateSerial: "2", PreviousCertificateNotAfter: live, PreviousCertificateRoots: []string{oldRoot, newRoot}}, false},
		{"previous recorded by an older relay-issuer (no expiry)", relayv1.RelayClusterStatus{
			LastCertificateSerial: "2", LastCertificateNotAfter: live, LastCertificateRoots: []string{newRoot},
			PreviousCertificateSerial: "1"}, false},
	} {
		if got := onOldRoot(tc.s, newRoot, now); got != tc.want {
			t.Errorf("%s: onOldRoot = %v, want %v", tc.name, got, tc.want)
		}
	}
}
