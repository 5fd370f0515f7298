package proof

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

var (
	tokenA = Token("a-relay-identity-token-of-forty-three-chars")
	tokenB = Token("another-relay-identity-token-of-43-characte")
)

// TestIdentityMatchesSpec recomputes the proof from the SPEC's formula with
// the standard library, so a change to the wire format cannot pass silently.
func TestIdentityMatchesSpec(t *testing.T) {
	csr := []byte("not really a CSR, but bytes are bytes")
	sum := sha256.Sum256(csr)
	h := hmac.New(sha256.New, tokenA)
	fmt.Fprintf(h, "relaytls-identity-proof/v1\n%s\n%s", "cluster-1", hex.EncodeToString(sum[:]))
	want := base64.RawURLEncoding.EncodeToString(h.Sum(nil))
	if got := Identity(tokenA, "cluster-1", csr); got != want {
		t.Fatalf("Identity = %q, want %q", got, want)
	}
	if strings.ContainsAny(want, "=+/") {
		t.Fatalf("proof %q is not unpadded base64url", want)
	}
}

func TestTunnelMatchesSpec(t *testing.T) {
	exp := []byte("0123456789abcdef0123456789abcdef")
	h := hmac.New(sha256.New, tokenA)
	fmt.Fprintf(h, "relaytls-tunnel-proof/v1\n%s\n%s", "cluster-1", exp)
	want := base64.RawURLEncoding.EncodeToString(h.Sum(nil))
	if got := Tunnel(tokenA, "cluster-1", exp); got != want {
		t.Fatalf("Tunnel = %q, want %q", got, want)
	}
}

func TestVerifyIdentity(t *testing.T) {
	csr := []byte("csr-1")
	good := Identity(tokenA, "cluster-1", csr)
	type testCase struct {
		name      string
		tokens    []Token
		cluster   string
		csr       []byte
		presented string
		want      error
	}
	for _, tc := range []testCase{
		{name: "valid", tokens: []Token{tokenA}, cluster: "cluster-1", csr: csr, presented: good},
		{name: "valid with a second token", tokens: []Token{tokenB, tokenA}, cluster: "cluster-1", csr: csr, presented: good},
		{name: "wrong token", tokens: []Token{tokenB}, cluster: "cluster-1", csr: csr, presented: good, want: ErrInvalidProof},
		{name: "other cluster", tokens: []Token{tokenA}, cluster: "cluster-2", csr: csr, presented: good, want: ErrInvalidProof},
		{name: "other CSR", tokens: []Token{tokenA}, cluster: "cluster-1", csr: []byte("csr-2"), presented: good, want: ErrInvalidProof},
		{name: "tunnel proof is not an identity proof", tokens: []Token{tokenA}, cluster: "cluster-1", csr: csr, presented: Tunnel(tokenA, "cluster-1", csr), want: ErrInvalidProof},
		{name: "missing", tokens: []Token{tokenA}, cluster: "cluster-1", csr: csr, presented: "", want: ErrMissingProof},
		{name: "not base64url", tokens: []Token{tokenA}, cluster: "cluster-1", csr: csr, presented: "***", want: ErrMalformedProof},
		{name: "padded", tokens: []Token{tokenA}, cluster: "cluster-1", csr: csr, presented: good + "=", want: ErrMalformedProof},
		{name: "truncated", tokens: []Token{tokenA}, cluster: "cluster-1", csr: csr, presented: good[:20], want: ErrMalformedProof},
		{name: "no tokens configured", tokens: nil, cluster: "cluster-1", csr: csr, presented: good, want: ErrNoToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyIdentity(tc.tokens, tc.cluster, tc.csr, tc.presented)
			if !errors.Is(err, tc.want) {
				t.Fatalf("VerifyIdentity = %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), good) {
				t.Fatalf("error %q echoes the proof", err)
			}
		})
	}
}

func TestVerifyTunnel(t *testing.T) {
	e1 := []byte("exporter-of-session-one-32-bytes")
	e2 := []byte("exporter-of-session-two-32-bytes")
	p := Tunnel(tokenA, "c1", e1)
	if err := VerifyTunnel([]Token{tokenA}, "c1", e1, p); err != nil {
		t.Fatalf("valid tunnel proof refused: %v", err)
	}
	if err := VerifyTunnel([]Token{tokenA}, "c1", e2, p); !errors.Is(err, ErrInvalidProof) {
		t.Fatalf("proof replayed on another session: got %v, want ErrInvalidProof", err)
	}
}

func TestParseToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		want error
	}{
		{"trimmed", "  " + string(tokenA) + "\n", nil},
		{"empty", "", ErrNoToken},
		{"whitespace", " \n\t", ErrNoToken},
		{"short", "tooshort", ErrShortToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseToken([]byte(tc.raw))
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseToken = %v, want %v", err, tc.want)
			}
			if err == nil && string(tok) != string(tokenA) {
				t.Fatalf("token not trimmed: %q", string(tok))
			}
		})
	}
}

func TestTokenIsRedactedWhenFormatted(t *testing.T) {
	for _, s := range []string{fmt.Sprint(tokenA), fmt.Sprintf("%v %s %+v %#v", tokenA, tokenA, tokenA, tokenA)} {
		if strings.Contains(s, string(tokenA)) {
			t.Fatalf("formatted token leaks: %q", s)
		}
	}
}

func TestGenerateToken(t *testing.T) {
	a, err := GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 43 {
		t.Fatalf("generated token has %d characters, want 43 (32 bytes base64url)", len(a))
	}
	if string(a) == string(b) {
		t.Fatal("two generated tokens are equal")
	}
	if _, err := ParseToken(a); err != nil {
		t.Fatalf("a generated token does not parse: %v", err)
	}
}

func TestValidateCluster(t *testing.T) {
	for name, ok := range map[string]bool{
		"cluster-1": true, "a": true, "": false, "Cluster": false, "-x": false,
		"a.b": false, strings.Repeat("a", 64): false, strings.Repeat("a", 63): true,
	} {
		if err := ValidateCluster(name); (err == nil) != ok {
			t.Errorf("ValidateCluster(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}
