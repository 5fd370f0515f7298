package signer

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"

	"github.com/relaytls/relaytls/internal/proof"
)

// CA is the signing material of a CA-mode issuer, checked to be usable.
type CA struct {
	// Cert is the intermediate that signs; Chain is Cert followed by any
	// further intermediates from tls.crt, never the root.
	Cert  *x509.Certificate
	Chain []*x509.Certificate
	Key   crypto.Signer
	// RootPEM is the trust bundle handed out as every ca.crt: the root
	// Secret's ca.crt together with every root of the published trust bundle
	// Secret (during a root rotation, the old and the new root).
	RootPEM []byte
}

// secretError names a Secret and what is wrong with it.
func secretError(s *corev1.Secret, format string, args ...any) error {
	//lint:ignore ST1005 the message starts with the Kubernetes kind it names
	return fmt.Errorf("Secret %s/%s: %s", s.Namespace, s.Name, fmt.Sprintf(format, args...))
}

func secretKey(s *corev1.Secret, key string) ([]byte, error) {
	v, ok := s.Data[key]
	if !ok || len(v) == 0 {
		return nil, secretError(s, "has no %s", key)
	}
	return v, nil
}

// LoadCA checks the signing and root Secrets and returns the signing
// material: the certificate and key match, the certificate is a CA that may
// sign certificates, is valid at now, and chains to the root's ca.crt.
// Every error names the Secret and the problem, and never contains key bytes.
func LoadCA(signing, root *corev1.Secret, now time.Time) (*CA, error) {
	return LoadCAWithBundle(signing, root, nil, now)
}

// LoadCAWithBundle is LoadCA with the published trust bundle Secret (nil when
// it does not exist yet): its roots join the root Secret's, both as what the
// signing CA may chain to and as the ca.crt handed out.
func LoadCAWithBundle(signing, root, bundle *corev1.Secret, now time.Time) (*CA, error) {
	crtPEM, err := secretKey(signing, corev1.TLSCertKey)
	if err != nil {
		return nil, err
	}
	keyPEM, err := secretKey(signing, corev1.TLSPrivateKeyKey)
	if err != nil {
		return nil, err
	}
	rootPEM, err := secretKey(root, "ca.crt")
	if err != nil {
		return nil, err
	}

	certs, err := pki.DecodeX509CertificateChainBytes(crtPEM)
	if err != nil {
		return nil, secretError(signing, "tls.crt is not a PEM certificate chain: %v", err)
	}
	key, err := pki.DecodePrivateKeyBytes(keyPEM)
	if err != nil {
		// The parse error may quote the input, so it is not passed on.
		return nil, secretError(signing, "tls.key is not a PEM private key (PKCS#1, PKCS#8 or SEC 1)")
	}
	ca := certs[0]
	if ok, err := pki.PublicKeyMatchesCertificate(key.Public(), ca); err != nil || !ok {
		return nil, secretError(signing, "tls.key does not match the certificate in tls.crt (subject %q)", ca.Subject.String())
	}
	if !ca.IsCA || !ca.BasicConstraintsValid {
		return nil, secretError(signing, "the certificate in tls.crt (subject %q) is not a CA", ca.Subject.String())
	}
	if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, secretError(signing, "the CA certificate in tls.crt (subject %q) lacks the cert sign key usage", ca.Subject.String())
	}
	if now.Before(ca.NotBefore) {
		return nil, secretError(signing, "the CA certificate in tls.crt is not valid before %s", ca.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(ca.NotAfter) {
		return nil, secretError(signing, "the CA certificate in tls.crt expired at %s", ca.NotAfter.UTC().Format(time.RFC3339))
	}

	roots, err := pki.DecodeX509CertificateSetBytes(rootPEM)
	if err != nil {
		return nil, secretError(root, "ca.crt is not a PEM certificate bundle: %v", err)
	}
	published, err := bundleCerts(bundle)
	if err != nil {
		return nil, err
	}
	roots = UnionCerts(roots, published)
	if len(published) > 0 {
		rootPEM = EncodeCerts(roots)
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	var chain []*x509.Certificate
	inter := x509.NewCertPool()
	for _, c := range certs {
		if isSelfSigned(c) {
			continue // a root in tls.crt is the root Secret's business, never part of the chain
		}
		chain = append(chain, c)
		inter.AddCert(c)
	}
	if len(chain) == 0 {
		chain = []*x509.Certificate{ca} // signing directly with the root
	}
	if _, err := ca.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("the CA certificate in Secret %s/%s tls.crt does not chain to ca.crt of Secret %s/%s: %v",
			signing.Namespace, signing.Name, root.Namespace, root.Name, err)
	}
	return &CA{Cert: ca, Chain: chain, Key: key, RootPEM: rootPEM}, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}

// LoadToken reads and checks the relay identity token from a Secret key.
func LoadToken(s *corev1.Secret, key string) (proof.Token, error) {
	raw, err := secretKey(s, key)
	if err != nil {
		return nil, err
	}
	t, err := proof.ParseToken(raw)
	switch {
	case errors.Is(err, proof.ErrNoToken):
		return nil, secretError(s, "key %s holds only whitespace", key)
	case err != nil:
		return nil, secretError(s, "key %s: %v", key, err)
	}
	return t, nil
}
