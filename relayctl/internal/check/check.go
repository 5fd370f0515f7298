// Package check validates a relay setup from the certificates and Secrets
// of both clusters: the server certificate names the address agents dial,
// the client certificate names its cluster, chains verify, trust bundles and
// tokens agree, and lifetimes leave room for renewal. Every finding says
// what is wrong and how to fix it; nothing secret is ever part of one.
//
// Evaluate is pure (material in, findings out); Gather reads the material
// from the clusters.
package check

import (
	"bytes"
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/relaytls/relaytls/internal/fingerprint"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/relayctl/modes"
)

// Severity of a finding.
type Severity string

const (
	Error   Severity = "error"
	Warning Severity = "warning"
)

// Finding is one problem with its fix.
type Finding struct {
	Severity Severity `json:"severity"`
	// Check is the check's short name (server-san, client-san, chain,
	// bundle, token, lifetime).
	Check   string `json:"check"`
	Problem string `json:"problem"`
	Fix     string `json:"fix"`
}

// Cert is a certificate chain read from a Secret, with the cert-manager
// Certificate that manages it, if any.
type Cert struct {
	// Secret is namespace/name, for messages.
	Secret string
	// Chain is tls.crt: leaf first.
	Chain []*x509.Certificate
	// RenewBefore of the managing Certificate; zero when unknown.
	RenewBefore time.Duration
	// Certificate is the managing Certificate's name, if any.
	Certificate string
}

// Leaf is the chain's first certificate.
func (c *Cert) Leaf() *x509.Certificate { return c.Chain[0] }

// Side is what one cluster holds.
type Side struct {
	// RootSecret is namespace/name of the trust bundle Secret.
	RootSecret string
	// Root is its ca.crt.
	Root []*x509.Certificate
	// Server (management) and Client (workload) certificates, and the
	// management's signing CA.
	Server, Client, Signing *Cert
	// Token is the relay identity token, trimmed; nil when absent.
	Token []byte
	// TokenSecret is namespace/name of the token Secret.
	TokenSecret string
	// Rotation is set on the management side while a root rotation is
	// declared or on record on its CA-mode issuer.
	Rotation *Rotation
}

// Rotation is what a management cluster holds during a root rotation: the
// trust bundle relay-issuer publishes (which the server verifies clients
// against and which renewals return) and the fingerprints of the roots being
// rotated, old and new.
type Rotation struct {
	// BundleSecret is namespace/name of the trust bundle Secret; Bundle its
	// ca.crt.
	BundleSecret string
	Bundle       []*x509.Certificate
	// Roots are the SHA-256 fingerprints (hex, of the DER) of the old roots
	// and the new root (status.rootRotation).
	Roots []string
}

// Input is a whole setup.
type Input struct {
	Mode modes.Mode
	// Management and Workload; either may be nil when not checked.
	Management, Workload *Side
	// DialAddress is the host:port agents dial; empty skips the SAN check.
	DialAddress string
	// Cluster is the workload cluster's name.
	Cluster string
	// TokenGeneration is the cluster's token generation (0 means 1).
	TokenGeneration int64
	// Now is the time the lifetimes are judged at.
	Now time.Time
	// MinLifetime is the shortest acceptable certificate lifetime.
	MinLifetime time.Duration
}

// Report is the result: findings and what passed.
type Report struct {
	Findings []Finding `json:"findings"`
	Passed   []string  `json:"passed"`
}

// OK reports whether no finding is an error.
func (r *Report) OK() bool {
	for _, f := range r.Findings {
		if f.Severity == Error {
			return false
		}
	}
	return true
}

// Print writes the report for people.
func (r *Report) Print(w io.Writer) {
	for _, p := range r.Passed {
		fmt.Fprintf(w, "ok       %s\n", p)
	}
	for _, f := range r.Findings {
		fmt.Fprintf(w, "%-8s %s: %s\n         fix: %s\n", strings.ToUpper(string(f.Severity)), f.Check, f.Problem, f.Fix)
	}
	if r.OK() {
		fmt.Fprintf(w, "relayctl check: no errors (%d warnings)\n", len(r.Findings))
	} else {
		fmt.Fprintf(w, "relayctl check: %d findings\n", len(r.Findings))
	}
}

// Evaluate runs every check that the input has material for.
func Evaluate(in Input) *Report {
	r := &Report{}
	add := func(sev Severity, check, fix, format string, args ...any) {
		r.Findings = append(r.Findings, Finding{Severity: sev, Check: check, Problem: fmt.Sprintf(format, args...), Fix: fix})
	}
	if in.MinLifetime == 0 {
		in.MinLifetime = time.Hour
	}
	m, w := in.Management, in.Workload
	// What the management side trusts: its root Secret, and while a root
	// rotation runs the trust bundle too (old and new root).
	var mRoots []*x509.Certificate
	mRootSecret := ""
	if m != nil {
		mRoots, mRootSecret = m.Root, m.RootSecret
		if m.Rotation != nil && len(m.Rotation.Bundle) > 0 {
			mRoots = union(m.Root, m.Rotation.Bundle)
			mRootSecret = m.RootSecret + " and " + m.Rotation.BundleSecret
		}
	}

	if m != nil && m.Server != nil {
		leaf := m.Server.Leaf()
		if in.DialAddress != "" {
			host, _, err := net.SplitHostPort(in.DialAddress)
			if err != nil {
				host = in.DialAddress
			}
			if err := leaf.VerifyHostname(host); err != nil {
				add(Error, "server-san",
					fmt.Sprintf("add %q to the server certificate's names (chart value pki.server.dnsNames, or your PKI's request), or have agents dial one of %s", host, names(leaf)),
					"the server certificate in %s carries %s, not %q, the address agents dial", m.Server.Secret, names(leaf), host)
			} else {
				r.Passed = append(r.Passed, fmt.Sprintf("server-san: %s names %s", m.Server.Secret, host))
			}
		}
		if len(mRoots) > 0 {
			verify(r, add, "chain", m.Server, mRoots, mRootSecret, x509.ExtKeyUsageServerAuth,
				"reissue the server certificate from the root in "+m.RootSecret+", or put the root that signed it in "+m.RootSecret+" ca.crt")
		}
	}
	if m != nil && m.Signing != nil && len(mRoots) > 0 {
		verify(r, add, "chain", m.Signing, mRoots, mRootSecret, x509.ExtKeyUsageAny,
			"the intermediate in "+m.Signing.Secret+" must be signed by the root in "+m.RootSecret)
	}
	if w != nil && w.Client != nil {
		leaf := w.Client.Leaf()
		if in.Cluster != "" {
			if !slices.Equal(leaf.DNSNames, []string{in.Cluster}) {
				add(Error, "client-san",
					fmt.Sprintf("the client certificate's only DNS name must be the cluster name %q: fix the Certificate's dnsNames (relayctl register writes it) or the cluster name the agent uses", in.Cluster),
					"the client certificate in %s carries DNS names %v, not exactly [%s]", w.Client.Secret, leaf.DNSNames, in.Cluster)
			} else {
				r.Passed = append(r.Passed, fmt.Sprintf("client-san: %s names %s", w.Client.Secret, in.Cluster))
			}
		}
		roots, rootSecret := w.Root, w.RootSecret
		if m != nil && len(mRoots) > 0 {
			roots, rootSecret = mRoots, mRootSecret // the server verifies clients against its root (and the rotation bundle)
		}
		if len(roots) > 0 {
			verify(r, add, "chain", w.Client, roots, rootSecret, x509.ExtKeyUsageClientAuth,
				"the client certificate must chain to the management root "+rootSecret+"; re-enroll it (delete "+w.Client.Secret+" to have cert-manager reissue it)")
		}
	}
	if m != nil && w != nil && len(m.Root) > 0 && len(w.Root) > 0 {
		rot := m.Rotation
		if rot != nil && len(rot.Bundle) == 0 {
			rot = nil // not published yet: the root Secret is the bundle
		}
		switch {
		case rot == nil && sameCerts(m.Root, w.Root):
			r.Passed = append(r.Passed, fmt.Sprintf("bundle: %s matches %s", w.RootSecret, m.RootSecret))
		case rot != nil && sameCerts(rot.Bundle, w.Root):
			r.Passed = append(r.Passed, fmt.Sprintf("bundle: %s matches the root rotation's trust bundle %s (%s)", w.RootSecret, rot.BundleSecret, subjects(w.Root)))
		case rot != nil && rotationRootsOnly(w.Root, union(m.Root, rot.Bundle), rot.Roots):
			// Between two phases: the workload cluster gets the current
			// bundle with its next renewal.
			add(Warning, "bundle",
				"nothing to do if the cluster renews: its remote issuer writes the bundle its next renewal returns; `relayctl status` shows what each cluster was last given, and `relayctl register --secrets-only` places the current bundle now",
				"the workload trust bundle %s (%s) is not yet the root rotation's trust bundle %s (%s)", w.RootSecret, subjects(w.Root), rot.BundleSecret, subjects(rot.Bundle))
		default:
			add(Error, "bundle",
				"copy the management root's ca.crt to the workload cluster: relayctl register does it (or recreate "+w.RootSecret+" from "+m.RootSecret+" ca.crt)",
				"the workload trust bundle %s (%s) differs from the management root %s (%s)", w.RootSecret, subjects(w.Root), m.RootSecret, subjects(m.Root))
		}
		if m.Server != nil {
			verify(r, add, "bundle", m.Server, w.Root, w.RootSecret, x509.ExtKeyUsageServerAuth,
				"agents verify the server against "+w.RootSecret+": put the root that signed the server certificate there")
		}
	}
	if in.Mode.Token && m != nil && w != nil {
		switch {
		case m.Token == nil:
			add(Error, "token", "create "+m.TokenSecret+" with key token (relay-issuer generates it in the self-signed modes)", "the management cluster has no relay identity token in %s", m.TokenSecret)
		case w.Token == nil:
			add(Error, "token", "run relayctl register, which copies the token", "the workload cluster has no relay identity token in %s", w.TokenSecret)
		case subtle.ConstantTimeCompare(m.Token, w.Token) == 1:
			add(Warning, "token", "switch the issuer to tokenScope PerCluster and run relayctl register again, which writes the cluster's own token",
				"the workload cluster holds the management root token in %s (tokenScope Shared): any holder can claim any cluster", w.TokenSecret)
		case !holdsClusterToken(m.Token, w.Token, in.Cluster, in.TokenGeneration):
			add(Error, "token", "run relayctl register again, which writes this cluster's current token", "the token in %s is not the cluster token of %q under the root token in %s (wrong cluster, an older tokenGeneration, or another root; values not shown)", w.TokenSecret, in.Cluster, m.TokenSecret)
		default:
			r.Passed = append(r.Passed, "token: the workload cluster holds its own cluster token, derived from the management root token")
		}
	}
	for _, side := range []*Side{m, w} {
		if side == nil {
			continue
		}
		for _, c := range []*Cert{side.Server, side.Client, side.Signing} {
			if c != nil {
				lifetime(r, add, c, in.Now, in.MinLifetime)
			}
		}
	}
	return r
}

type addFunc func(sev Severity, check, fix, format string, args ...any)

func verify(r *Report, add addFunc, check string, c *Cert, roots []*x509.Certificate, rootSecret string, usage x509.ExtKeyUsage, fix string) {
	pool := x509.NewCertPool()
	for _, root := range roots {
		pool.AddCert(root)
	}
	inter := x509.NewCertPool()
	for _, i := range c.Chain[1:] {
		inter.AddCert(i)
	}
	leaf := c.Leaf()
	at := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2) // judge the chain, not the clock
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: at})
	if err != nil {
		add(Error, check, fix, "%s does not verify against %s: %v", c.Secret, rootSecret, err)
		return
	}
	r.Passed = append(r.Passed, fmt.Sprintf("%s: %s verifies against %s", check, c.Secret, rootSecret))
}

func lifetime(r *Report, add addFunc, c *Cert, now time.Time, minLifetime time.Duration) {
	leaf := c.Leaf()
	total := leaf.NotAfter.Sub(leaf.NotBefore)
	left := leaf.NotAfter.Sub(now)
	managed := "its issuer"
	if c.Certificate != "" {
		managed = "Certificate " + c.Certificate
	}
	switch {
	case left <= 0:
		add(Error, "lifetime", "renew it now: delete the Secret's certificate to force cert-manager to reissue, or replace it from your PKI",
			"%s expired %s ago", c.Secret, (-left).Round(time.Second))
		return
	case total < minLifetime:
		add(Error, "lifetime", fmt.Sprintf("set spec.duration of %s to at least %s so a failed renewal can be retried before expiry", managed, minLifetime),
			"%s lives only %s in all (from %s to %s), too short to leave room for renewal", c.Secret, total.Round(time.Second), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		return
	case c.RenewBefore > 0 && c.RenewBefore >= total:
		add(Error, "lifetime", fmt.Sprintf("set renewBefore of %s below its duration (a third of it is a good value)", managed),
			"%s has renewBefore %s, not shorter than its lifetime %s: cert-manager would renew it continuously", c.Secret, c.RenewBefore, total.Round(time.Second))
		return
	case left < total/10:
		add(Warning, "lifetime", fmt.Sprintf("check why %s has not renewed it (relayctl status shows its last CertificateRequest)", managed),
			"%s expires in %s, under a tenth of its lifetime", c.Secret, left.Round(time.Second))
		return
	}
	r.Passed = append(r.Passed, fmt.Sprintf("lifetime: %s has %s of %s left", c.Secret, left.Round(time.Minute), total.Round(time.Minute)))
}

func names(c *x509.Certificate) string {
	var n []string
	n = append(n, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	if len(n) == 0 {
		return "no DNS or IP names"
	}
	return "[" + strings.Join(n, " ") + "]"
}

func subjects(cs []*x509.Certificate) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.Subject.String())
	}
	return strings.Join(s, "; ")
}

// union is every certificate of a and b, once each.
func union(a, b []*x509.Certificate) []*x509.Certificate {
	out := slices.Clone(a)
	for _, c := range b {
		if !slices.ContainsFunc(out, func(x *x509.Certificate) bool { return bytes.Equal(x.Raw, c.Raw) }) {
			out = append(out, c)
		}
	}
	return out
}

// rotationRootsOnly reports whether every certificate of bundle is one of
// known or has one of the fingerprints fps (a root of the rotation).
func rotationRootsOnly(bundle, known []*x509.Certificate, fps []string) bool {
	for _, c := range bundle {
		if !slices.ContainsFunc(known, func(x *x509.Certificate) bool { return bytes.Equal(x.Raw, c.Raw) }) && !slices.Contains(fps, fingerprint.Of(c)) {
			return false
		}
	}
	return len(bundle) > 0
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y *x509.Certificate) bool { return bytes.Equal(x.Raw, y.Raw) }) {
			return false
		}
	}
	return true
}

// holdsClusterToken reports whether workload is the cluster token of
// cluster (generation gen, 0 meaning 1) under root, in constant time.
func holdsClusterToken(root, workload []byte, cluster string, gen int64) bool {
	if gen < 1 {
		gen = proof.DefaultGeneration
	}
	r, err := proof.ParseToken(root)
	if err != nil || cluster == "" {
		return false
	}
	ct, err := proof.ClusterToken(r, cluster, gen)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(ct, workload) == 1
}
