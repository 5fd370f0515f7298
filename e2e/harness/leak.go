package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/e2e/provider"
	"github.com/relaytls/relaytls/internal/proof"
)

// Sensitive is what must never appear in a log, Event or status message:
// tokens and private keys, by what they are (never printed).
type Sensitive struct {
	needles []needle
}

type needle struct {
	what  string
	value []byte
}

// AddToken adds a relay identity token (and its base64, as in a dumped
// Secret).
func (s *Sensitive) AddToken(tok []byte) {
	tok = bytes.TrimSpace(tok)
	if len(tok) == 0 {
		return
	}
	s.needles = append(s.needles, needle{"the relay identity token", tok},
		needle{"the relay identity token (base64)", []byte(base64.StdEncoding.EncodeToString(tok))})
}

// AddKey adds a PEM private key: each of its base64 body lines, so a key
// printed whole or in part is found.
func (s *Sensitive) AddKey(pemKey []byte) {
	for _, line := range bytes.Split(pemKey, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) >= 32 && !bytes.HasPrefix(line, []byte("-----")) {
			s.needles = append(s.needles, needle{"a private key", line})
		}
	}
}

// Len is the number of needles.
func (s *Sensitive) Len() int { return len(s.needles) }

// Collect adds every token and private key of the Secrets in Namespace of
// the clusters, everything the projectors ever projected, and the identity
// proofs of the CertificateRequests the clusters still keep (cert-manager
// deletes older revisions). (Tunnel proofs are bound to
// a TLS session's exporter, which the harness cannot know; they are not
// looked for.)
func (s *Sensitive) Collect(ctx context.Context, clusters []provider.Cluster, projectors []*Projector) error {
	for _, c := range clusters {
		var l corev1.SecretList
		if err := c.Client().List(ctx, &l, client.InNamespace(Namespace)); err != nil {
			return err
		}
		for _, sec := range l.Items {
			for k, v := range sec.Data {
				switch {
				case k == "token":
					s.AddToken(v)
				case bytes.Contains(v, []byte("PRIVATE KEY-----")):
					s.AddKey(v)
				}
			}
		}
	}
	// Identity proofs: recomputed for every CertificateRequest of the
	// clusters and every token, so a proof is found wherever it went.
	var tokens [][]byte
	for _, n := range s.needles {
		if n.what == "the relay identity token" {
			tokens = append(tokens, n.value)
		}
	}
	for _, c := range clusters {
		var crs cmapi.CertificateRequestList
		if err := c.Client().List(ctx, &crs); err != nil {
			return err
		}
		for _, cr := range crs.Items {
			csr, err := pki.DecodeX509CertificateRequestBytes(cr.Spec.Request)
			if err != nil {
				continue
			}
			for _, tok := range tokens {
				t, err := proof.ParseToken(tok)
				if err != nil {
					continue
				}
				for _, name := range append([]string{cr.Annotations[relayv1.ClusterAnnotation]}, csr.DNSNames...) {
					if name != "" {
						s.needles = append(s.needles, needle{"an identity proof", []byte(proof.Identity(t, name, csr.Raw))})
					}
				}
			}
		}
	}
	for _, p := range projectors {
		for _, v := range p.Seen() {
			if bytes.Contains(v, []byte("PRIVATE KEY-----")) {
				s.AddKey(v)
			}
		}
	}
	return nil
}

// Leaks scans every file of logDir, every Event of the clusters, and the
// condition messages of CertificateRequests, Certificates and RelayIssuers
// for the needles and for any PEM private key. Each finding says where and
// what, never the value.
func (s *Sensitive) Leaks(ctx context.Context, logDir string, clusters []provider.Cluster) ([]string, error) {
	var found []string
	check := func(where string, text []byte) {
		if bytes.Contains(text, []byte("PRIVATE KEY-----")) {
			found = append(found, where+": a PEM private key")
		}
		for _, n := range s.needles {
			if bytes.Contains(text, n.value) {
				found = append(found, where+": "+n.what)
				return
			}
		}
	}
	files, err := filepath.Glob(filepath.Join(logDir, "*"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for n := 1; sc.Scan(); n++ {
			check(fmt.Sprintf("%s line %d", filepath.Base(f), n), sc.Bytes())
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
	}
	for _, c := range clusters {
		var events corev1.EventList
		if err := c.Client().List(ctx, &events); err != nil {
			return nil, err
		}
		for _, e := range events.Items {
			check(fmt.Sprintf("%s: Event %s/%s", c.Name(), e.Namespace, e.Name), []byte(e.Reason+" "+e.Message))
		}
		var crs cmapi.CertificateRequestList
		if err := c.Client().List(ctx, &crs); err != nil {
			return nil, err
		}
		for _, cr := range crs.Items {
			for _, cond := range cr.Status.Conditions {
				check(fmt.Sprintf("%s: CertificateRequest %s/%s", c.Name(), cr.Namespace, cr.Name), []byte(cond.Reason+" "+cond.Message))
			}
		}
		var crts cmapi.CertificateList
		if err := c.Client().List(ctx, &crts); err != nil {
			return nil, err
		}
		for _, crt := range crts.Items {
			for _, cond := range crt.Status.Conditions {
				check(fmt.Sprintf("%s: Certificate %s/%s", c.Name(), crt.Namespace, crt.Name), []byte(cond.Reason+" "+cond.Message))
			}
		}
		var issuers relayv1.RelayIssuerList
		if err := c.Client().List(ctx, &issuers); err != nil {
			return nil, err
		}
		for _, iss := range issuers.Items {
			for _, cond := range iss.Status.Conditions {
				check(fmt.Sprintf("%s: RelayIssuer %s/%s", c.Name(), iss.Namespace, iss.Name), []byte(cond.Reason+" "+cond.Message))
			}
		}
	}
	return found, nil
}
