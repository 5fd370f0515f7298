package fingerprint

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"testing"

	"github.com/relaytls/relaytls/test/testpki"
)

func TestFingerprints(t *testing.T) {
	a, b := testpki.Root(t, "a"), testpki.Root(t, "b")
	sum := sha256.Sum256(a.Cert.Raw)
	if got := Of(a.Cert); got != hex.EncodeToString(sum[:]) || len(got) != 64 {
		t.Fatalf("Of = %s", got)
	}
	bundle := append(append(a.CertPEM(), b.CertPEM()...), a.CertPEM()...)
	if got, want := OfPEM(bundle), []string{Of(a.Cert), Of(b.Cert)}; !slices.Equal(got, want) {
		t.Fatalf("OfPEM = %v; want %v (in order, each once)", got, want)
	}
	if got := OfPEM([]byte("not PEM")); got != nil {
		t.Fatalf("OfPEM of garbage = %v", got)
	}
}
