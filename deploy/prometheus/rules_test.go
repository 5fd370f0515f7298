// Package prometheus holds relaytls's PrometheusRule (relaytls-rules.yaml);
// its test checks the rule's shape and that every metric it uses exists.
package prometheus

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/relaytls/relaytls/internal/access"
)

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func TestRules(t *testing.T) {
	b, err := os.ReadFile("relaytls-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []rule `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(b, &pr); err != nil {
		t.Fatal(err)
	}
	if pr.Kind != "PrometheusRule" {
		t.Fatalf("kind %q", pr.Kind)
	}
	// The metrics the sidecar and cert-manager really export.
	sidecarSrc, err := os.ReadFile(filepath.Join("..", "..", "relay-sidecar", "internal", "metrics", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{
		"certmanager_certificate_expiration_timestamp_seconds": true,
		"certmanager_certificate_renewal_timestamp_seconds":    true,
	}
	issuerSrc, err := os.ReadFile(filepath.Join("..", "..", "issuer", "metrics", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range [][]byte{sidecarSrc, issuerSrc} {
		for _, m := range regexp.MustCompile(`"(relay_(?:sidecar|issuer)_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
			known[m[1]] = true
		}
	}
	alerts := map[string]bool{}
	metricRe := regexp.MustCompile(`\b(certmanager_[a-z_]+|relay_[a-z_]+)\b`)
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s lacks expr, severity, summary or description", r.Alert)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("alert %s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
			for _, m := range metricRe.FindAllString(r.Expr, -1) {
				if !known[m] {
					t.Errorf("alert %s uses metric %s, which nothing exports", r.Alert, m)
				}
			}
		}
	}
	for _, want := range []string{"RelayClientCertificateExpiringSoon", "RelayServerCertificateExpiringSoon", "RelayIntermediateCAExpiringSoon", "RelayRootCAExpiringSoon", "RelayIdentityProofsRefused", "RelayIssuerIdentityProofsRefused"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
	// The refusal reasons the rule matches are the sidecar's own.
	for _, reason := range []string{access.ReasonInvalidProof, access.ReasonMalformedProof, access.ReasonMissingProof,
		access.ReasonClusterMismatch, access.ReasonBadCluster, access.ReasonMissingCluster, access.ReasonNoIdentity} {
		if !strings.Contains(string(b), reason) {
			t.Errorf("the rule does not match refusal reason %q", reason)
		}
	}
}
