// Package modes describes the six relay security modes of SPEC section 3 as
// relayctl needs them: which Secrets the user brings in each cluster role,
// whether agents enroll for client certificates, and the reserved names.
package modes

import (
	"fmt"
	"slices"
	"strings"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/deploy/profiles"
)

// Mode is one relay security mode.
type Mode struct {
	// Name as the chart, the profiles and relayctl spell it.
	Name string
	// Number in SPEC section 3.
	Number int
	// Token: the relay identity token is used.
	Token bool
	// SelfSigned: cert-manager builds the PKI in the management cluster.
	SelfSigned bool
	// AutoClient: agents get client certificates through the relay.
	AutoClient bool
	// BYOServer: the user brings the server certificate.
	BYOServer bool
	// BYOClient: the user brings the agents' client certificates.
	BYOClient bool
}

var all = []Mode{
	{Name: relayv1.ModeInsecure, Number: 1},
	{Name: relayv1.ModeTLSSelfSigned, Number: 2, Token: true, SelfSigned: true},
	{Name: relayv1.ModeTLSBYOServer, Number: 3, Token: true, BYOServer: true},
	{Name: relayv1.ModeMTLSSelfSigned, Number: 4, Token: true, SelfSigned: true, AutoClient: true},
	{Name: relayv1.ModeMTLSBYOCA, Number: 5, Token: true, AutoClient: true, BYOServer: true},
	{Name: relayv1.ModeMTLSBYOClient, Number: 6, BYOServer: true, BYOClient: true},
}

// Secret names of SPEC section 2 (defined in api/v1alpha1).
const (
	RootSecret           = relayv1.DefaultRootSecretName
	SigningSecret        = relayv1.DefaultSigningSecretName
	ServerSecret         = relayv1.ServerSecretName
	CustomServerSecret   = relayv1.CustomServerSecretName
	TokenSecret          = relayv1.DefaultTokenSecretName
	ClientSecret         = relayv1.ClientSecretName
	BYOClientSecret      = relayv1.BYOClientSecretName
	ClientCertificate    = relayv1.ClientCertificateName
	RelayIssuerName      = "relay"
	ConfigMapName        = "relaytls-config"
	GeneratedAnnotation  = "relaytls.io/generated"
	IssuanceDefaultPort  = "9443"
	ReservedServerSecret = ServerSecret
)

// All returns the modes in SPEC order.
func All() []Mode { return slices.Clone(all) }

// Names lists the mode names.
func Names() []string {
	var n []string
	for _, m := range all {
		n = append(n, m.Name)
	}
	return n
}

// Parse finds a mode by name (or by its SPEC number).
func Parse(name string) (Mode, error) {
	for _, m := range all {
		if m.Name == name || fmt.Sprint(m.Number) == name {
			return m, nil
		}
	}
	return Mode{}, fmt.Errorf("unknown mode %q; the modes are %s (or 1-6)", name, strings.Join(Names(), ", "))
}

// ServerSecretName is the server certificate Secret of the mode, given the
// user's choice (empty for the default). A bring-your-own mode that names
// the reserved relay-server-tls-secret is refused.
func (m Mode) ServerSecretName(chosen string) (string, error) {
	if !m.BYOServer {
		if chosen != "" && chosen != ServerSecret {
			return "", fmt.Errorf("mode %s makes the server certificate itself, in Secret %s; --server-secret does not apply", m.Name, ServerSecret)
		}
		return ServerSecret, nil
	}
	if chosen == "" {
		return CustomServerSecret, nil
	}
	if chosen == ReservedServerSecret {
		return "", fmt.Errorf("--server-secret %s: that name is reserved for the self-signed modes; mode %s brings its own server certificate, store it in another Secret (default %s)", chosen, m.Name, CustomServerSecret)
	}
	return chosen, nil
}

// UserSecret is a Secret the user must bring.
type UserSecret struct {
	Name string
	// Keys the Secret must have.
	Keys []string
	// What it holds, for messages.
	What string
}

// UserSecrets lists the Secrets the user brings in role ("management" or
// "workload"), given the server Secret name.
func (m Mode) UserSecrets(role, serverSecret string) []UserSecret {
	var out []UserSecret
	add := func(name, what string, keys ...string) {
		out = append(out, UserSecret{Name: name, Keys: keys, What: what})
	}
	if role == "management" {
		switch m.Name {
		case relayv1.ModeTLSBYOServer:
			add(serverSecret, "the relay server certificate from your PKI", "tls.crt", "tls.key")
			add(TokenSecret, "the relay identity token", "token")
		case relayv1.ModeMTLSBYOCA:
			add(RootSecret, "your root CA certificate", "ca.crt")
			add(SigningSecret, "your intermediate CA that signs agent certificates", "tls.crt", "tls.key")
			add(serverSecret, "the relay server certificate from your PKI", "tls.crt", "tls.key")
			add(TokenSecret, "the relay identity token", "token")
		case relayv1.ModeMTLSBYOClient:
			add(RootSecret, "your root CA certificate that agent certificates chain to", "ca.crt")
			add(serverSecret, "the relay server certificate from your PKI", "tls.crt", "tls.key")
		}
		return out
	}
	switch {
	case m.Token:
		add(RootSecret, "the management cluster's root CA certificate (relayctl register copies it)", "ca.crt")
		add(TokenSecret, "the relay identity token (relayctl register copies it)", "token")
	case m.BYOClient:
		add(RootSecret, "your root CA certificate that the server certificate chains to", "ca.crt")
		add(BYOClientSecret, "this agent's client certificate from your PKI", "tls.crt", "tls.key")
	}
	return out
}

// Namespace is where relaytls lives.
const Namespace = profiles.Namespace
