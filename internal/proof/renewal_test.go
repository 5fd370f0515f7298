package proof

import (
	"errors"
	"testing"
)

func TestRenewalAttestation(t *testing.T) {
	root := Token("root-token-of-the-management-cluster-000001")
	other := Token("another-root-token-of-some-other-install-02")
	csr := []byte("csr der bytes")
	att := RenewalAttestation(root, "cluster-1", "1a2b", csr)
	if err := VerifyRenewalAttestation([]Token{other, root}, "cluster-1", "1a2b", csr, att); err != nil {
		t.Fatalf("a valid attestation (second root, as during a rotation): %v", err)
	}
	for _, tc := range []struct {
		name, cluster, serial string
		csr                   []byte
		roots                 []Token
		att                   string
		want                  error
	}{
		{"another cluster", "cluster-2", "1a2b", csr, []Token{root}, att, ErrInvalidProof},
		{"another serial", "cluster-1", "1a2c", csr, []Token{root}, att, ErrInvalidProof},
		{"another CSR", "cluster-1", "1a2b", []byte("other"), []Token{root}, att, ErrInvalidProof},
		{"another root", "cluster-1", "1a2b", csr, []Token{other}, att, ErrInvalidProof},
		// A cluster token derived from the root cannot make one either.
		{"missing", "cluster-1", "1a2b", csr, []Token{root}, "", ErrMissingProof},
		{"malformed", "cluster-1", "1a2b", csr, []Token{root}, "not base64!", ErrMalformedProof},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := VerifyRenewalAttestation(tc.roots, tc.cluster, tc.serial, tc.csr, tc.att); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	ct, err := ClusterToken(root, "cluster-1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if forged := RenewalAttestation(ct, "cluster-1", "1a2b", csr); VerifyRenewalAttestation([]Token{root}, "cluster-1", "1a2b", csr, forged) == nil {
		t.Fatal("an attestation made with the cluster token was accepted")
	}
	if att == Identity(root, "cluster-1", csr) {
		t.Fatal("the attestation equals an identity proof: the contexts are not separated")
	}
}
