package signer

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/relaytls/relaytls/test/testpki"
)

func secret(name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "relaytls-system", Name: name}, Data: data}
}

func TestLoadCA(t *testing.T) {
	now := time.Now()
	root := testpki.Root(t, "relay root")
	otherRoot := testpki.Root(t, "other root")
	inter := testpki.Intermediate(t, root, "relay intermediate")
	notCA := testpki.Issue(t, root, testpki.Options{CommonName: "leaf", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	expired := testpki.Issue(t, root, testpki.Options{CommonName: "old", IsCA: true, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	future := testpki.Issue(t, root, testpki.Options{CommonName: "future", IsCA: true, NotBefore: now.Add(time.Hour)})
	noCertSign := testpki.Issue(t, root, testpki.Options{CommonName: "no-sign", IsCA: true, KeyUsage: x509.KeyUsageDigitalSignature})

	signing := func(c *testpki.Cert, keyOf *testpki.Cert) *corev1.Secret {
		return secret("relay-tls-signing-secret", map[string][]byte{"tls.crt": c.CertPEM(), "tls.key": keyOf.KeyPEM(t)})
	}
	rootSecret := secret("relay-root-tls-secret", map[string][]byte{"ca.crt": root.CertPEM()})

	type testCase struct {
		name    string
		signing *corev1.Secret
		root    *corev1.Secret
		wantErr string // substring; "" means success
	}
	for _, tc := range []testCase{
		{name: "intermediate chaining to root", signing: signing(inter, inter), root: rootSecret},
		{name: "intermediate with root appended in tls.crt", signing: secret("relay-tls-signing-secret", map[string][]byte{"tls.crt": append(inter.CertPEM(), root.CertPEM()...), "tls.key": inter.KeyPEM(t)}), root: rootSecret},
		{name: "root signing directly", signing: signing(root, root), root: rootSecret},
		{name: "missing tls.key", signing: secret("relay-tls-signing-secret", map[string][]byte{"tls.crt": inter.CertPEM()}), root: rootSecret, wantErr: "Secret relaytls-system/relay-tls-signing-secret: has no tls.key"},
		{name: "missing tls.crt", signing: secret("relay-tls-signing-secret", map[string][]byte{"tls.key": inter.KeyPEM(t)}), root: rootSecret, wantErr: "Secret relaytls-system/relay-tls-signing-secret: has no tls.crt"},
		{name: "garbage tls.crt", signing: secret("relay-tls-signing-secret", map[string][]byte{"tls.crt": []byte("garbage"), "tls.key": inter.KeyPEM(t)}), root: rootSecret, wantErr: "tls.crt is not a PEM certificate chain"},
		{name: "garbage tls.key", signing: secret("relay-tls-signing-secret", map[string][]byte{"tls.crt": inter.CertPEM(), "tls.key": []byte("garbage")}), root: rootSecret, wantErr: "tls.key is not a PEM private key"},
		{name: "key does not match", signing: signing(inter, root), root: rootSecret, wantErr: "tls.key does not match the certificate in tls.crt"},
		{name: "not a CA", signing: signing(notCA, notCA), root: rootSecret, wantErr: "is not a CA"},
		{name: "CA without cert sign", signing: signing(noCertSign, noCertSign), root: rootSecret, wantErr: "lacks the cert sign key usage"},
		{name: "expired", signing: signing(expired, expired), root: rootSecret, wantErr: "expired at"},
		{name: "not yet valid", signing: signing(future, future), root: rootSecret, wantErr: "is not valid before"},
		{name: "other root", signing: signing(inter, inter), root: secret("relay-root-tls-secret", map[string][]byte{"ca.crt": otherRoot.CertPEM()}), wantErr: "does not chain to ca.crt of Secret relaytls-system/relay-root-tls-secret"},
		{name: "root without ca.crt", signing: signing(inter, inter), root: secret("relay-root-tls-secret", map[string][]byte{"tls.crt": root.CertPEM()}), wantErr: "Secret relaytls-system/relay-root-tls-secret: has no ca.crt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, err := LoadCA(tc.signing, tc.root, now)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("LoadCA: %v", err)
				}
				if !ca.Chain[0].Equal(ca.Cert) {
					t.Fatalf("chain starts with %q, not the signing cert %q", ca.Chain[0].Subject, ca.Cert.Subject)
				}
				for _, c := range ca.Chain[1:] {
					if c.Equal(root.Cert) {
						t.Fatalf("chain repeats the root after the signing cert")
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadCA error = %v, want it to contain %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("error leaks key material: %v", err)
			}
		})
	}
}

func TestLoadToken(t *testing.T) {
	tok := "a-relay-identity-token-of-forty-three-chars"
	for _, tc := range []struct {
		name, key string
		data      map[string][]byte
		wantErr   string
	}{
		{"valid", "token", map[string][]byte{"token": []byte(tok + "\n")}, ""},
		{"missing key", "token", map[string][]byte{"other": []byte(tok)}, "has no token"},
		{"whitespace", "token", map[string][]byte{"token": []byte(" \n")}, "holds only whitespace"},
		{"short", "token", map[string][]byte{"token": []byte("short")}, "shorter than 32 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadToken(secret("relay-identity-token-secret", tc.data), tc.key)
			if tc.wantErr == "" {
				if err != nil || string(got) != tok {
					t.Fatalf("LoadToken = %v, want the trimmed token", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadToken error = %v, want %q", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), "relaytls-system/relay-identity-token-secret") {
				t.Fatalf("error does not name the Secret: %v", err)
			}
		})
	}
}
