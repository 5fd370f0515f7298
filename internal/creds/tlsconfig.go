package creds

import (
	"crypto/tls"
	"errors"
	"time"

	"github.com/relaytls/relaytls/internal/access"
)

// TLSOptions are the protocol settings common to both roles.
type TLSOptions struct {
	// MinVersion is tls.VersionTLS13 (default) or tls.VersionTLS12, in which
	// case only AEAD cipher suites with forward secrecy are offered.
	MinVersion uint16
	// Now is the clock for peer verification (default time.Now).
	Now func() time.Time
}

func (o TLSOptions) base() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS13}
	if o.MinVersion == tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
	}
	return c
}

func (o TLSOptions) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// ServerTLS is the server role's config: the certificate comes from r's
// current generation at each handshake; with requireClient (mode mtls) the
// agent's chain is verified against r's current trust bundle, with
// client-auth usage and a cluster-name DNS SAN.
func ServerTLS(r *Reloader, requireClient bool, o TLSOptions) *tls.Config {
	c := o.base()
	// Every handshake is a full one, so a rotated certificate or bundle is
	// always used and checked.
	c.SessionTicketsDisabled = true
	c.NextProtos = []string{"h2"}
	c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		g := r.Current()
		if g.Cert == nil {
			return nil, errors.New("no server certificate loaded")
		}
		return g.Cert, nil
	}
	if requireClient {
		c.ClientAuth = tls.RequireAnyClientCert
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			_, err := access.VerifyClient(cs.PeerCertificates, r.Current().Roots, o.now())
			return err
		}
	}
	return c
}

// ClientTLS is the agent role's config: the server is verified against the
// current trust bundle of r and serverName; withCert presents r's current
// client certificate (mode mtls).
func ClientTLS(r *Reloader, serverName string, withCert bool, o TLSOptions) *tls.Config {
	c := o.base()
	c.ServerName = serverName
	// Verification is done by VerifyConnection against the bundle of the
	// moment, so that a rotated trust bundle applies to the next handshake.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		return access.VerifyServer(cs.PeerCertificates, r.Current().Roots, serverName, o.now())
	}
	if withCert {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if g := r.Current(); g.Cert != nil {
				return g.Cert, nil
			}
			return &tls.Certificate{}, nil
		}
	}
	return c
}
