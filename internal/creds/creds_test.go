package creds

import (
	"crypto/x509"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/test/kubeletdir"
	"github.com/relaytls/relaytls/test/testpki"
)

type fixture struct {
	ca, other *testpki.CA
	certs     *kubeletdir.Dir
	bundle    *kubeletdir.Dir
	src       Sources
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := testpki.NewCA("relay root", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA("someone else", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certs, err := kubeletdir.New(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := kubeletdir.New(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.Write(map[string][]byte{"ca.crt": ca.PEM}); err != nil {
		t.Fatal(err)
	}
	return &fixture{ca: ca, other: other, certs: certs, bundle: bundle,
		src: Sources{CertDir: certs.Path(), BundleFile: bundle.File("ca.crt")}}
}

func issue(t *testing.T, ca *testpki.CA, l testpki.Leaf) *testpki.Issued {
	t.Helper()
	is, err := ca.Issue(l)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func clientLeaf() testpki.Leaf {
	return testpki.Leaf{DNSNames: []string{"cluster-a"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}

func files(is *testpki.Issued) map[string][]byte {
	return map[string][]byte{"tls.crt": is.CertPEM, "tls.key": is.KeyPEM}
}

func TestBrokenGenerationsKeepLastGood(t *testing.T) {
	f := newFixture(t)
	good := issue(t, f.ca, clientLeaf())
	if err := f.certs.Write(files(good)); err != nil {
		t.Fatal(err)
	}
	var results []string
	r, err := NewReloader(f.src, Expect{Role: RoleAgent, Names: []string{"cluster-a"}},
		Options{OnResult: func(res, reason string) { results = append(results, res+":"+reason) }})
	if err != nil {
		t.Fatal(err)
	}
	goodSerial := r.Current().Serial()

	other := issue(t, f.ca, clientLeaf())
	expired := issue(t, f.ca, testpki.Leaf{DNSNames: []string{"cluster-a"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	future := issue(t, f.ca, testpki.Leaf{DNSNames: []string{"cluster-a"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)})
	serverOnly := issue(t, f.ca, testpki.Leaf{DNSNames: []string{"cluster-a"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	otherCA := issue(t, f.other, clientLeaf())
	wrongName := issue(t, f.ca, testpki.Leaf{DNSNames: []string{"cluster-b"}, Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	for _, tc := range []struct {
		name   string
		write  func() error
		reason string
		msg    string
	}{
		{"empty certificate", func() error {
			return f.certs.Write(map[string][]byte{"tls.crt": nil, "tls.key": good.KeyPEM})
		}, ReasonEmpty, "tls.crt is empty"},
		{"garbage certificate", func() error {
			return f.certs.Write(map[string][]byte{"tls.crt": []byte("not a certificate\x00\x01"), "tls.key": good.KeyPEM})
		}, ReasonParse, "no PEM certificate"},
		{"garbage key", func() error {
			return f.certs.Write(map[string][]byte{"tls.crt": good.CertPEM, "tls.key": []byte("garbage")})
		}, ReasonParse, "no PEM private key"},
		{"key that does not parse", func() error {
			return f.certs.Write(map[string][]byte{"tls.crt": good.CertPEM, "tls.key": []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")})
		}, ReasonParse, "the private key does not parse"},
		{"certificate that does not parse", func() error {
			return f.certs.Write(map[string][]byte{"tls.crt": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "tls.key": good.KeyPEM})
		}, ReasonParse, "the certificate does not parse"},
		{"key not matching", func() error {
			return f.certs.Write(map[string][]byte{"tls.crt": good.CertPEM, "tls.key": other.KeyPEM})
		}, ReasonKeyMismatch, "does not match"},
		{"expired", func() error { return f.certs.Write(files(expired)) }, ReasonExpired, "expired at"},
		{"not yet valid", func() error { return f.certs.Write(files(future)) }, ReasonNotYetValid, "not valid before"},
		{"server-auth only", func() error { return f.certs.Write(files(serverOnly)) }, ReasonUsage, "client-auth"},
		{"other CA", func() error { return f.certs.Write(files(otherCA)) }, ReasonUntrusted, "does not chain to the trust bundle"},
		{"wrong name", func() error { return f.certs.Write(files(wrongName)) }, ReasonName, `"cluster-a"`},
		{"half-written swap", func() error { return f.certs.WriteHalf(files(other)) }, ReasonParse, "tls.key"},
		{"missing key file", func() error {
			return f.certs.Write(map[string][]byte{"tls.crt": other.CertPEM})
		}, ReasonRead, "tls.key"},
		{"garbage bundle", func() error {
			if err := f.certs.Write(files(good)); err != nil {
				return err
			}
			return f.bundle.Write(map[string][]byte{"ca.crt": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")})
		}, ReasonBundle, "does not parse"},
		{"half-written bundle", func() error {
			return f.bundle.WriteHalf(map[string][]byte{"a": []byte("x"), "ca.crt": testpki.Bundle(f.ca, f.other)})
		}, ReasonParse, "trailing data"},
		{"empty bundle", func() error { return f.bundle.Write(map[string][]byte{"ca.crt": []byte("\n")}) }, ReasonEmpty, "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.write(); err != nil {
				t.Fatal(err)
			}
			before := len(results)
			err := r.Reload()
			if err == nil {
				t.Fatal("bad generation accepted")
			}
			if got := ReasonOf(err); got != tc.reason {
				t.Errorf("reason %q, want %q (%v)", got, tc.reason, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error leaks key material: %q", err)
			}
			if r.Current().Serial() != goodSerial {
				t.Fatalf("current serial %s, want the last good %s", r.Current().Serial(), goodSerial)
			}
			if len(results) != before+1 || results[len(results)-1] != "failure:"+tc.reason {
				t.Errorf("results %v, want one failure:%s", results[before:], tc.reason)
			}
			// The same bad material is not reported twice.
			_ = r.Reload()
			if len(results) != before+1 {
				t.Errorf("same bad material counted again: %v", results[before:])
			}
		})
	}

	// Valid material is picked up again.
	if err := f.bundle.Write(map[string][]byte{"ca.crt": f.ca.PEM}); err != nil {
		t.Fatal(err)
	}
	if err := f.certs.Write(files(other)); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Current().Serial(), other.Cert.SerialNumber.Text(16); got != want {
		t.Fatalf("serial %s, want %s", got, want)
	}
}

func TestInitialLoadRefusesBadMaterial(t *testing.T) {
	f := newFixture(t)
	if err := f.certs.Write(files(issue(t, f.other, clientLeaf()))); err != nil {
		t.Fatal(err)
	}
	_, err := NewReloader(f.src, Expect{Role: RoleAgent}, Options{})
	if ReasonOf(err) != ReasonUntrusted {
		t.Fatalf("got %v, want an untrusted refusal", err)
	}
}

func TestTokenValidation(t *testing.T) {
	d, err := kubeletdir.New(filepath.Join(t.TempDir(), "token"))
	if err != nil {
		t.Fatal(err)
	}
	src := Sources{TokenFile: d.File("token")}
	for _, tc := range []struct {
		name, token, reason string
	}{
		{"empty", "  \n", ReasonToken},
		{"short", "abc", ReasonToken},
		{"good", strings.Repeat("k", 43) + "\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Write(map[string][]byte{"token": []byte(tc.token)}); err != nil {
				t.Fatal(err)
			}
			g, err := Load(src, Expect{}, time.Now())
			if tc.reason == "" {
				if err != nil || len(g.Token) != 43 {
					t.Fatalf("good token: %v", err)
				}
				return
			}
			if ReasonOf(err) != tc.reason {
				t.Fatalf("got %v, want reason %s", err, tc.reason)
			}
			if strings.Contains(err.Error(), tc.token) && strings.TrimSpace(tc.token) != "" {
				t.Fatalf("error leaks the token: %v", err)
			}
		})
	}
}

func TestRunPicksUpAtomicSwaps(t *testing.T) {
	f := newFixture(t)
	if err := f.certs.Write(files(issue(t, f.ca, clientLeaf()))); err != nil {
		t.Fatal(err)
	}
	// A long poll interval: only the watcher can see the swaps in time.
	r, err := NewReloader(f.src, Expect{Role: RoleAgent}, Options{Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var swaps atomic.Int64
	r.Subscribe(func(old, cur *Generation) { swaps.Add(1) })
	ctx := t.Context()
	go r.Run(ctx)
	for i := range 5 {
		next := issue(t, f.ca, clientLeaf())
		if err := f.certs.Write(files(next)); err != nil {
			t.Fatal(err)
		}
		want := next.Cert.SerialNumber.Text(16)
		deadline := time.Now().Add(10 * time.Second)
		for r.Current().Serial() != want {
			if time.Now().After(deadline) {
				t.Fatalf("rotation %d: serial %s never loaded", i, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Subscribers run right after the swap is visible.
	deadline := time.Now().Add(10 * time.Second)
	for swaps.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d swaps notified, want 5", swaps.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPreviousToken: during a token rotation the Secret also holds
// token.previous (SPEC section 4); the generation carries both, proofs made
// from either verify, a bad previous token is refused without leaking it,
// and once it is removed only the new token verifies.
func TestPreviousToken(t *testing.T) {
	d, err := kubeletdir.New(filepath.Join(t.TempDir(), "token"))
	if err != nil {
		t.Fatal(err)
	}
	src := Sources{TokenFile: d.File("token")}
	newTok, oldTok := strings.Repeat("n", 43), strings.Repeat("o", 43)
	const cluster = "east"
	exporter := []byte(strings.Repeat("e", 32))
	// A tunnel proof as an agent that still holds the old cluster token
	// makes it, and one made with the new.
	proofWith := func(root string) string {
		ct, err := proof.ClusterToken(proof.Token(root), cluster, proof.DefaultGeneration)
		if err != nil {
			t.Fatal(err)
		}
		return proof.Tunnel(ct, cluster, exporter)
	}
	verifies := func(g *Generation, presented string) bool {
		keys, err := proof.Keys(proof.ScopePerCluster, g.VerifyTokens(), cluster, proof.DefaultGeneration)
		if err != nil {
			t.Fatal(err)
		}
		return proof.VerifyTunnel(keys, cluster, exporter, presented) == nil
	}

	if err := d.Write(map[string][]byte{"token": []byte(newTok + "\n"), PreviousTokenFile: []byte(oldTok + "\n")}); err != nil {
		t.Fatal(err)
	}
	g, err := Load(src, Expect{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if string(g.Token) != newTok || string(g.PreviousToken) != oldTok || len(g.VerifyTokens()) != 2 {
		t.Fatalf("during the rotation: token %d bytes, previous %d bytes, %d verify tokens; want both", len(g.Token), len(g.PreviousToken), len(g.VerifyTokens()))
	}
	if !verifies(g, proofWith(newTok)) || !verifies(g, proofWith(oldTok)) {
		t.Fatal("during the rotation a proof from the new or the previous token is refused")
	}
	if verifies(g, proofWith(strings.Repeat("x", 43))) {
		t.Fatal("a proof from an unrelated token verifies")
	}

	if err := d.Write(map[string][]byte{"token": []byte(newTok), PreviousTokenFile: []byte("zq9Wq")}); err != nil {
		t.Fatal(err)
	}
	_, err = Load(src, Expect{}, time.Now())
	if ReasonOf(err) != ReasonToken || !strings.Contains(err.Error(), PreviousTokenFile) {
		t.Fatalf("a short previous token: got %v; want reason %s naming %s", err, ReasonToken, PreviousTokenFile)
	}
	if strings.Contains(err.Error(), "zq9Wq") || strings.Contains(err.Error(), newTok) {
		t.Fatalf("the error leaks a token: %v", err)
	}

	// The rotation ends: token.previous is removed.
	if err := d.Write(map[string][]byte{"token": []byte(newTok)}); err != nil {
		t.Fatal(err)
	}
	g2, err := Load(src, Expect{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if g2.PreviousToken != nil || len(g2.VerifyTokens()) != 1 || g2.Fingerprint == g.Fingerprint {
		t.Fatalf("after the rotation: previous %v, %d verify tokens; want only the token and a new fingerprint", g2.PreviousToken != nil, len(g2.VerifyTokens()))
	}
	if verifies(g2, proofWith(oldTok)) {
		t.Fatal("after the rotation a proof from the previous token still verifies")
	}
	if !verifies(g2, proofWith(newTok)) {
		t.Fatal("after the rotation a proof from the token is refused")
	}
}
