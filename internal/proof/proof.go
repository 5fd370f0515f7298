// Package proof computes and checks the relay identity proofs of SPEC section 4.
//
// The relay identity token never crosses the network. Its holder proves
// possession with an HMAC-SHA256 over a context string that binds the proof
// to one thing: a CSR (identity proof, carried on a CertificateRequest) or a
// TLS session (tunnel proof, carried in gRPC metadata). Proofs are compared in
// constant time. Nothing in this package logs or returns a token or a proof in
// an error message.
package proof

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	identityContext = "relaytls-identity-proof/v1\n"
	tunnelContext   = "relaytls-tunnel-proof/v1\n"

	// ExporterLabel is the TLS exporter label whose 32-byte value binds a
	// tunnel proof to one TLS connection.
	ExporterLabel = "EXPORTER-relaytls-tunnel"
	// ExporterLength is the number of exporter bytes the tunnel proof uses.
	ExporterLength = 32

	// MinTokenLength is the shortest token accepted, in bytes after trimming.
	// A generated token carries 32 bytes of entropy (43 base64url characters).
	MinTokenLength = 32
)

var (
	// ErrNoToken is returned when a token is empty after trimming.
	ErrNoToken = errors.New("the relay identity token is empty")
	// ErrShortToken is returned when a token is shorter than MinTokenLength.
	ErrShortToken = fmt.Errorf("the relay identity token is shorter than %d bytes; make one with 32 random bytes, for example `head -c 32 /dev/urandom | base64`, or let relaytls generate it", MinTokenLength)
	// ErrMissingProof is returned when no proof was presented.
	ErrMissingProof = errors.New("no identity proof was presented")
	// ErrMalformedProof is returned when a proof is not base64url of 32 bytes.
	ErrMalformedProof = errors.New("the identity proof is not a base64url-encoded HMAC-SHA256")
	// ErrInvalidProof is returned when a proof does not match any token.
	ErrInvalidProof = errors.New("the identity proof does not match the relay identity token")
)

// Token is a relay identity token. Its String and GoString methods redact it,
// so it cannot leak through a formatted log line by accident.
type Token []byte

// ParseToken trims the content of a token Secret key and checks its length.
func ParseToken(raw []byte) (Token, error) {
	t := []byte(strings.TrimSpace(string(raw)))
	if len(t) == 0 {
		return nil, ErrNoToken
	}
	if len(t) < MinTokenLength {
		return nil, ErrShortToken
	}
	return Token(t), nil
}

// String redacts the token.
func (Token) String() string { return "[redacted]" }

// GoString redacts the token.
func (Token) GoString() string { return "[redacted]" }

// ValidateCluster checks that a cluster name is a DNS-1123 label.
func ValidateCluster(cluster string) error {
	if cluster == "" {
		return errors.New("cluster name is empty")
	}
	if errs := validation.IsDNS1123Label(cluster); len(errs) > 0 {
		return fmt.Errorf("cluster name %q is not a DNS-1123 label: %s", cluster, strings.Join(errs, "; "))
	}
	return nil
}

func mac(token Token, parts ...string) []byte {
	h := hmac.New(sha256.New, token)
	for _, p := range parts {
		h.Write([]byte(p))
	}
	return h.Sum(nil)
}

func encode(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// CSRDigest is hex(SHA-256(CSR DER)).
func CSRDigest(csrDER []byte) string {
	sum := sha256.Sum256(csrDER)
	return hex.EncodeToString(sum[:])
}

// Identity computes the identity proof for a CSR (DER) and a cluster name.
func Identity(token Token, cluster string, csrDER []byte) string {
	return encode(mac(token, identityContext, cluster, "\n", CSRDigest(csrDER)))
}

// Tunnel computes the tunnel proof for a cluster name and the TLS exporter
// value of the connection it is sent on.
func Tunnel(token Token, cluster string, exporter []byte) string {
	return encode(mac(token, tunnelContext, cluster, "\n", string(exporter)))
}

// VerifyIdentity checks an identity proof against every token in tokens (a
// rotation may keep an old and a new token valid at once). It returns nil when
// one matches. Each comparison is constant time and every token is tried, so
// the time taken does not tell which token matched.
func VerifyIdentity(tokens []Token, cluster string, csrDER []byte, presented string) error {
	return verify(tokens, presented, func(t Token) []byte {
		return mac(t, identityContext, cluster, "\n", CSRDigest(csrDER))
	})
}

// VerifyTunnel checks a tunnel proof against every token in tokens.
func VerifyTunnel(tokens []Token, cluster string, exporter []byte, presented string) error {
	return verify(tokens, presented, func(t Token) []byte {
		return mac(t, tunnelContext, cluster, "\n", string(exporter))
	})
}

func verify(tokens []Token, presented string, expected func(Token) []byte) error {
	if len(tokens) == 0 {
		return ErrNoToken
	}
	if strings.TrimSpace(presented) == "" {
		return ErrMissingProof
	}
	got, err := base64.RawURLEncoding.DecodeString(presented)
	if err != nil || len(got) != sha256.Size {
		return ErrMalformedProof
	}
	ok := 0
	for _, t := range tokens {
		ok |= boolToInt(hmac.Equal(got, expected(t)))
	}
	if ok == 0 {
		return ErrInvalidProof
	}
	return nil
}

func boolToInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// GenerateToken returns a new token with 32 bytes of entropy from crypto/rand,
// encoded as base64url without padding (43 characters).
func GenerateToken() (Token, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("reading random bytes for a relay identity token: %w", err)
	}
	return Token(encode(b)), nil
}
