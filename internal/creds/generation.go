// Package creds loads, validates and reloads TLS material (certificate and
// key, trust bundle, identity token) from kubelet-style Secret mounts, keeps
// the last good generation in an atomic.Pointer, and builds the tls.Config
// of each role from it. The relay sidecar uses it for every role;
// relay-issuer uses it for the serving certificate of its issuance endpoint.
//
// A generation is read as one consistent snapshot (the files of a Secret
// directory are read through one resolution of its ..data symlink) and is
// validated before it replaces the current one: the key matches the
// certificate, the certificate is within its dates, has the usage of its
// role, chains to the trust bundle and names the expected identity. A bad
// generation is refused with an *Error naming the problem and the current
// generation stays in use.
package creds

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/relaytls/relaytls/internal/proof"
)

// Role says what the loaded certificate is used for.
type Role string

const (
	// RoleServer material serves TLS (server-auth usage).
	RoleServer Role = "server"
	// RoleAgent material is a client certificate (client-auth usage).
	RoleAgent Role = "agent"
)

// Sources says where each piece of material lives. Empty fields are not
// loaded.
type Sources struct {
	// CertDir holds tls.crt and tls.key (a Secret mount).
	CertDir string
	// BundleFile is the trust bundle (PEM CA certificates).
	BundleFile string
	// TokenFile holds the relay identity token. A token.previous file
	// beside it (the Secret's key of that name, during a token rotation,
	// SPEC section 4) is read too when present.
	TokenFile string
}

// PreviousTokenFile is the file, beside the token file, holding the token
// being rotated out.
const PreviousTokenFile = "token.previous"

// Expect is what a generation must satisfy besides being well formed.
type Expect struct {
	Role Role
	// Names, when not empty, must all be DNS SANs of the certificate (the
	// server name for a server, the cluster name for an agent).
	Names []string
}

// Generation is one validated set of material.
type Generation struct {
	// Cert is the certificate chain and key (nil when no CertDir).
	Cert *tls.Certificate
	// Leaf is Cert's parsed leaf.
	Leaf *x509.Certificate
	// Roots is the trust bundle as a pool, BundleCerts the same certs.
	Roots       *x509.CertPool
	BundleCerts []*x509.Certificate
	// Token is the relay identity token (nil when no TokenFile). Proofs are
	// always made with it.
	Token proof.Token
	// PreviousToken is the token being rotated out (token.previous beside
	// the token file), nil when there is none. Proofs made with it are
	// accepted until it is removed; none is ever made with it.
	PreviousToken proof.Token
	// Fingerprint identifies the raw bytes this generation was read from.
	Fingerprint [32]byte
	// LoadedAt is when it was validated.
	LoadedAt time.Time
}

// VerifyTokens are the tokens a presented proof is checked against: the
// token, then the previous one during a rotation. Nil without a token.
func (g *Generation) VerifyTokens() []proof.Token {
	if g == nil || len(g.Token) == 0 {
		return nil
	}
	if len(g.PreviousToken) == 0 {
		return []proof.Token{g.Token}
	}
	return []proof.Token{g.Token, g.PreviousToken}
}

// Serial is the leaf serial in hex, or "" without a certificate.
func (g *Generation) Serial() string {
	if g == nil || g.Leaf == nil {
		return ""
	}
	return g.Leaf.SerialNumber.Text(16)
}

// ExpiredAt reports whether the leaf is past its NotAfter at now.
func (g *Generation) ExpiredAt(now time.Time) bool {
	return g != nil && g.Leaf != nil && now.After(g.Leaf.NotAfter)
}

// Reasons, used as the reason label of the reload metric.
const (
	ReasonRead        = "read_error"
	ReasonEmpty       = "empty"
	ReasonParse       = "parse_error"
	ReasonKeyMismatch = "key_mismatch"
	ReasonExpired     = "expired"
	ReasonNotYetValid = "not_yet_valid"
	ReasonUsage       = "wrong_usage"
	ReasonUntrusted   = "untrusted"
	ReasonName        = "name_mismatch"
	ReasonBundle      = "bad_bundle"
	ReasonToken       = "bad_token"
	ReasonNotCA       = "not_ca"
)

// Error is a refused generation: Reason is a short label, Msg says what is
// wrong and in which file. It never contains key or token bytes.
type Error struct {
	Reason string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func errf(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason label of err, or "other".
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return "other"
}

// raw is the bytes of one generation before parsing.
type raw struct {
	cert, key, bundle, token, previous []byte
	certPath, keyPath                  string
}

func (r *raw) fingerprint() [32]byte {
	h := sha256.New()
	for _, b := range [][]byte{r.cert, r.key, r.bundle, r.token, r.previous} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// readRaw reads every source. The files of CertDir are read through one
// resolution of its ..data symlink; if ..data moves while reading, the read
// is retried so that tls.crt and tls.key always come from one generation.
func readRaw(src Sources) (*raw, error) {
	r := &raw{}
	if src.CertDir != "" {
		if err := readDir(src, r); err != nil {
			return nil, err
		}
	}
	if src.BundleFile != "" && r.bundle == nil {
		b, err := os.ReadFile(src.BundleFile)
		if err != nil {
			return nil, errf(ReasonRead, "reading trust bundle %s: %v", src.BundleFile, err)
		}
		r.bundle = b
	}
	if src.TokenFile != "" {
		b, err := os.ReadFile(src.TokenFile)
		if err != nil {
			return nil, errf(ReasonRead, "reading token file %s: %v", src.TokenFile, err)
		}
		r.token = b
		prev := filepath.Join(filepath.Dir(src.TokenFile), PreviousTokenFile)
		switch b, err := os.ReadFile(prev); {
		case err == nil:
			r.previous = b
		case !errors.Is(err, fs.ErrNotExist):
			return nil, errf(ReasonRead, "reading the previous token file %s: %v", prev, err)
		}
	}
	return r, nil
}

func readDir(src Sources, r *raw) error {
	dataLink := filepath.Join(src.CertDir, "..data")
	sameDirBundle := src.BundleFile != "" && filepath.Clean(filepath.Dir(src.BundleFile)) == filepath.Clean(src.CertDir)
	r.certPath = filepath.Join(src.CertDir, "tls.crt")
	r.keyPath = filepath.Join(src.CertDir, "tls.key")
	var lastErr error
	for range 5 {
		target, linkErr := os.Readlink(dataLink)
		base := src.CertDir
		if linkErr == nil {
			base = target
			if !filepath.IsAbs(base) {
				base = filepath.Join(src.CertDir, target)
			}
		}
		cert, err1 := os.ReadFile(filepath.Join(base, "tls.crt"))
		key, err2 := os.ReadFile(filepath.Join(base, "tls.key"))
		var bundle []byte
		var err3 error
		if sameDirBundle {
			bundle, err3 = os.ReadFile(filepath.Join(base, filepath.Base(src.BundleFile)))
		}
		if linkErr == nil {
			// The generation moved under us: read the new one whole.
			if again, err := os.Readlink(dataLink); err != nil || again != target {
				lastErr = errf(ReasonRead, "%s kept changing while it was read", dataLink)
				continue
			}
		}
		switch {
		case err1 != nil:
			return errf(ReasonRead, "reading %s: %v", r.certPath, err1)
		case err2 != nil:
			return errf(ReasonRead, "reading %s: %v", r.keyPath, err2)
		case err3 != nil:
			return errf(ReasonRead, "reading trust bundle %s: %v", src.BundleFile, err3)
		}
		r.cert, r.key = cert, key
		if sameDirBundle {
			r.bundle = bundle
		}
		return nil
	}
	return lastErr
}

// Load reads and validates one generation at now.
func Load(src Sources, exp Expect, now time.Time) (*Generation, error) {
	r, err := readRaw(src)
	if err != nil {
		return nil, err
	}
	return validate(src, r, exp, now)
}

func validate(src Sources, r *raw, exp Expect, now time.Time) (*Generation, error) {
	g := &Generation{Fingerprint: r.fingerprint(), LoadedAt: now}
	if src.BundleFile != "" {
		certs, err := parseBundle(src.BundleFile, r.bundle)
		if err != nil {
			return nil, err
		}
		g.BundleCerts = certs
		g.Roots = x509.NewCertPool()
		for _, c := range certs {
			g.Roots.AddCert(c)
		}
	}
	if src.TokenFile != "" {
		t, err := proof.ParseToken(r.token)
		if err != nil {
			return nil, errf(ReasonToken, "token file %s: %v", src.TokenFile, err)
		}
		g.Token = t
		if r.previous != nil {
			prev := filepath.Join(filepath.Dir(src.TokenFile), PreviousTokenFile)
			p, err := proof.ParseToken(r.previous)
			if err != nil {
				return nil, errf(ReasonToken, "previous token file %s: %v", prev, err)
			}
			g.PreviousToken = p
		}
	}
	if src.CertDir != "" {
		if err := validateCert(g, r, exp, now); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func parseBundle(path string, b []byte) ([]*x509.Certificate, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errf(ReasonEmpty, "trust bundle %s is empty", path)
	}
	var certs []*x509.Certificate
	rest := b
	for i := 1; ; i++ {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, errf(ReasonBundle, "trust bundle %s: PEM block %d is a %q, not a CERTIFICATE", path, i, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, errf(ReasonBundle, "trust bundle %s: certificate %d does not parse: %v", path, i, err)
		}
		if !c.IsCA {
			return nil, errf(ReasonNotCA, "trust bundle %s: certificate %d (%s) is not a CA", path, i, c.Subject)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errf(ReasonParse, "trust bundle %s: trailing data that is not PEM (truncated or garbage)", path)
	}
	if len(certs) == 0 {
		return nil, errf(ReasonParse, "trust bundle %s holds no PEM certificate", path)
	}
	return certs, nil
}

func validateCert(g *Generation, r *raw, exp Expect, now time.Time) error {
	if len(bytes.TrimSpace(r.cert)) == 0 {
		return errf(ReasonEmpty, "%s is empty", r.certPath)
	}
	if len(bytes.TrimSpace(r.key)) == 0 {
		return errf(ReasonEmpty, "%s is empty", r.keyPath)
	}
	if blk, _ := pem.Decode(r.cert); blk == nil || blk.Type != "CERTIFICATE" {
		return errf(ReasonParse, "%s holds no PEM certificate (garbage or truncated)", r.certPath)
	}
	if blk, _ := pem.Decode(r.key); blk == nil || !bytes.Contains([]byte(blk.Type), []byte("PRIVATE KEY")) {
		return errf(ReasonParse, "%s holds no PEM private key (garbage or truncated)", r.keyPath)
	}
	pair, err := tls.X509KeyPair(r.cert, r.key)
	if err != nil {
		// err is not passed on: the message is about the files, never
		// about key bytes (keyPairProblem).
		if bytes.Contains([]byte(err.Error()), []byte("does not match")) {
			return errf(ReasonKeyMismatch, "%s does not match the certificate in %s", r.keyPath, r.certPath)
		}
		return errf(ReasonParse, "%s and %s do not form a key pair: %s", r.certPath, r.keyPath, keyPairProblem(r.cert))
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return errf(ReasonParse, "%s: %v", r.certPath, err)
		}
	}
	if now.Before(leaf.NotBefore) {
		return errf(ReasonNotYetValid, "%s (serial %s) is not valid before %s", r.certPath, leaf.SerialNumber.Text(16), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return errf(ReasonExpired, "%s (serial %s) expired at %s", r.certPath, leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	usage := x509.ExtKeyUsageServerAuth
	if exp.Role == RoleAgent {
		usage = x509.ExtKeyUsageClientAuth
	}
	if leaf.IsCA {
		return errf(ReasonUsage, "%s (serial %s) is a CA certificate; a %s certificate must not be a CA", r.certPath, leaf.SerialNumber.Text(16), exp.Role)
	}
	if !HasUsage(leaf, usage) {
		return errf(ReasonUsage, "%s (serial %s) lacks the %s extended key usage a %s needs", r.certPath, leaf.SerialNumber.Text(16), usageName(usage), exp.Role)
	}
	for _, n := range exp.Names {
		if !slices.Contains(leaf.DNSNames, n) {
			return errf(ReasonName, "%s (serial %s) does not name %q in its DNS SANs (it has %v)", r.certPath, leaf.SerialNumber.Text(16), n, leaf.DNSNames)
		}
	}
	if g.Roots != nil {
		inter := x509.NewCertPool()
		for _, der := range pair.Certificate[1:] {
			if c, err := x509.ParseCertificate(der); err == nil {
				inter.AddCert(c)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots: g.Roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{usage},
		}); err != nil {
			return errf(ReasonUntrusted, "%s (serial %s, issuer %q) does not chain to the trust bundle: %v", r.certPath, leaf.SerialNumber.Text(16), leaf.Issuer.CommonName, err)
		}
	}
	pair.Leaf = leaf
	g.Cert = &pair
	g.Leaf = leaf
	return nil
}

// keyPairProblem says which half of a pair that tls.X509KeyPair refused is
// at fault, without its error text: a private key's parse error is not
// repeated, so no part of a key can reach a log. The certificate is public,
// so its parse error is named. certPEM starts with a CERTIFICATE block
// (validateCert checked).
func keyPairProblem(certPEM []byte) string {
	if blk, _ := pem.Decode(certPEM); blk != nil {
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Sprintf("the certificate does not parse: %v", err)
		}
	}
	return "the private key does not parse (PKCS#1, PKCS#8 or SEC 1 DER in PEM expected) or is of a type the certificate cannot use"
}

// HasUsage reports whether c names usage explicitly. A certificate with no
// extended key usage, or with only "any", does not: the peer would refuse it
// (SPEC section 6), so it is refused before it is swapped in.
func HasUsage(c *x509.Certificate, usage x509.ExtKeyUsage) bool {
	return slices.Contains(c.ExtKeyUsage, usage)
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageClientAuth {
		return "client-auth"
	}
	return "server-auth"
}
