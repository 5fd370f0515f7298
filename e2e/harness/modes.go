package harness

import (
	"fmt"
	"strconv"
	"strings"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
)

// Mode is one of the six relay security modes of SPEC section 3.
type Mode struct {
	// Number is the mode's number in SPEC section 3 (1-6).
	Number int
	// Profile is the deploy/profiles directory of the mode.
	Profile string
	// Sidecar is relay-sidecar's --mode.
	Sidecar string
	// Title describes the mode.
	Title string
}

// Modes are the six modes, in SPEC order.
var Modes = []Mode{
	{1, relayv1.ModeInsecure, "insecure", "insecure (plaintext h2c, cluster name only)"},
	{2, relayv1.ModeTLSSelfSigned, "tls", "TLS, self-signed server certificate, relay identity token"},
	{3, relayv1.ModeTLSBYOServer, "tls", "TLS, bring-your-own server certificate, relay identity token"},
	{4, relayv1.ModeMTLSSelfSigned, "mtls", "mTLS, self-signed CAs, client certificates issued after token bootstrap"},
	{5, relayv1.ModeMTLSBYOCA, "mtls", "mTLS, bring-your-own CAs, client certificates issued after token bootstrap"},
	{6, relayv1.ModeMTLSBYOClient, "mtls", "mTLS, bring-your-own CAs and client certificates, no tokens"},
}

// ModeByName finds a mode by number ("4") or profile name
// ("mtls-self-signed").
func ModeByName(s string) (Mode, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 1 && n <= len(Modes) {
		return Modes[n-1], nil
	}
	for _, m := range Modes {
		if m.Profile == s {
			return m, nil
		}
	}
	names := make([]string, len(Modes))
	for i, m := range Modes {
		names[i] = fmt.Sprintf("%d/%s", m.Number, m.Profile)
	}
	return Mode{}, fmt.Errorf("unknown mode %q; the modes are %s", s, strings.Join(names, ", "))
}

// String is "4 (mtls-self-signed)".
func (m Mode) String() string { return fmt.Sprintf("%d (%s)", m.Number, m.Profile) }

// UsesToken reports whether the agent side holds the relay identity token.
func (m Mode) UsesToken() bool { return m.Number >= 2 && m.Number <= 5 }

// Enrolls reports whether the workload cluster gets its client certificate
// through the issuance endpoint (modes 4 and 5).
func (m Mode) Enrolls() bool { return m.Number == 4 || m.Number == 5 }
