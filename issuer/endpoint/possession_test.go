package endpoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/relaytls/relaytls/issuer/issuance"
	issuancev1 "github.com/relaytls/relaytls/issuer/issuance/v1"
	"github.com/relaytls/relaytls/issuer/policy"
	"github.com/relaytls/relaytls/test/testpki"
)

func withPeer(certs ...*x509.Certificate) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4000},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: certs}},
	})
}

// TestPossessionNeedsACertificate: a call without a token proof is a
// renewal only when the caller presented a certificate; otherwise it is
// refused as missing its proof.
func TestPossessionNeedsACertificate(t *testing.T) {
	s := newTestServer(t, Config{})
	der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"c1"}})
	req := &issuancev1.SignRequest{Cluster: "c1", Csr: testpki.CSRPEM(der)}
	if _, err := s.validate(req, false); status.Code(err) != codes.InvalidArgument || issuance.ReasonOf(err) != policy.ReasonMissingIdentityProof {
		t.Fatalf("no proof and no certificate: got %v, want InvalidArgument %s", err, policy.ReasonMissingIdentityProof)
	}
	c, err := s.validate(req, true)
	if err != nil || !c.possession {
		t.Fatalf("no proof with a certificate: got %+v, %v; want a renewal by possession", c, err)
	}
	if got := peerChain(context.Background()); got != nil {
		t.Fatalf("peerChain without a peer: %v", got)
	}
	leaf := testpki.Root(t, "leaf").Cert
	if got := peerChain(withPeer(leaf)); len(got) != 1 || !got[0].Equal(leaf) {
		t.Fatalf("peerChain: got %d certificates, want the presented one", len(got))
	}
}

// TestPossessionWithoutVerifier: a verifier that cannot check possession
// refuses such calls instead of forwarding them unchecked.
func TestPossessionWithoutVerifier(t *testing.T) {
	s := newTestServer(t, Config{}) // acceptAll checks token proofs only
	der, _ := testpki.CSR(t, testpki.CSROptions{DNSNames: []string{"c1"}})
	c := &checked{der: der, possession: true}
	err := s.verifyPossession(context.Background(), nil, &issuancev1.SignRequest{Cluster: "c1"}, c, []*x509.Certificate{testpki.Root(t, "x").Cert})
	if status.Code(err) != codes.PermissionDenied || c.renewalOf != "" || c.attestation != "" {
		t.Fatalf("got %v (renewalOf %q); want PermissionDenied and nothing recorded", err, c.renewalOf)
	}
}
