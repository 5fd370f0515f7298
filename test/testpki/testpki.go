// Package testpki makes in-memory CAs, intermediates, leaves and CSRs for
// tests, the way a user's own PKI would. It is for tests only.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// Cert is a certificate with its key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CertPEM is the certificate in PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// KeyPEM is the key in PKCS#8 PEM.
func (c *Cert) KeyPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Options shape a certificate. Zero values give a one-year validity from an
// hour ago, a fresh P-256 key and a random serial.
type Options struct {
	CommonName  string
	DNSNames    []string
	URIs        []string
	IsCA        bool
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	NotBefore   time.Time
	NotAfter    time.Time
	Key         crypto.Signer
}

// NewKey returns a new P-256 key.
func NewKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return k
}

func template(t testing.TB, o Options) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("serial: %v", err)
	}
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	if na.IsZero() {
		na = nb.Add(365 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName},
		DNSNames:              o.DNSNames,
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		IsCA:                  o.IsCA,
		KeyUsage:              o.KeyUsage,
		ExtKeyUsage:           o.ExtKeyUsage,
	}
	for _, u := range o.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatalf("uri %q: %v", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if o.IsCA && o.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	}
	return tmpl
}

// Issue makes a certificate signed by parent, or self-signed when parent is nil.
func Issue(t testing.TB, parent *Cert, o Options) *Cert {
	t.Helper()
	key := o.Key
	if key == nil {
		key = NewKey(t)
	}
	tmpl := template(t, o)
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return &Cert{Cert: c, Key: key}
}

// Root makes a self-signed root CA.
func Root(t testing.TB, name string) *Cert {
	return Issue(t, nil, Options{CommonName: name, IsCA: true})
}

// Intermediate makes an intermediate CA signed by parent.
func Intermediate(t testing.TB, parent *Cert, name string) *Cert {
	return Issue(t, parent, Options{CommonName: name, IsCA: true})
}

// CSROptions shape a CSR.
type CSROptions struct {
	CommonName string
	DNSNames   []string
	URIs       []string
	Subject    *pkix.Name
	Key        crypto.Signer
	// ExtraExtensions are added verbatim (basic constraints, raw SANs...).
	ExtraExtensions []pkix.Extension
}

// CSR makes a DER CSR and returns it with its key.
func CSR(t testing.TB, o CSROptions) ([]byte, crypto.Signer) {
	t.Helper()
	key := o.Key
	if key == nil {
		key = NewKey(t)
	}
	tmpl := &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: o.CommonName},
		DNSNames:        o.DNSNames,
		ExtraExtensions: o.ExtraExtensions,
	}
	if o.Subject != nil {
		tmpl.Subject = *o.Subject
	}
	for _, u := range o.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatalf("uri %q: %v", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("create CSR: %v", err)
	}
	return der, key
}

// CSRPEM encodes a DER CSR as PEM.
func CSRPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
