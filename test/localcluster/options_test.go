package localcluster

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOptionsComplete(t *testing.T) {
	type testCase struct {
		name    string
		in      Options
		wantMin time.Duration
		wantMax time.Duration
		wantErr string
	}
	for _, tc := range []testCase{
		{name: "production defaults", wantMin: time.Hour, wantMax: 32 * time.Hour},
		{name: "shortened", in: Options{CertificateRequestMinimumBackoff: time.Second, CertificateRequestMaximumBackoff: 4 * time.Second}, wantMin: time.Second, wantMax: 4 * time.Second},
		{name: "minimum above the default maximum", in: Options{CertificateRequestMinimumBackoff: 48 * time.Hour}, wantMin: 48 * time.Hour, wantMax: 48 * time.Hour},
		{name: "negative", in: Options{CertificateRequestMinimumBackoff: -time.Second}, wantErr: "must be positive"},
		{name: "maximum below minimum", in: Options{CertificateRequestMinimumBackoff: time.Minute, CertificateRequestMaximumBackoff: time.Second}, wantErr: "is below"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.in
			err := o.complete()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.CertificateRequestMinimumBackoff != tc.wantMin || o.CertificateRequestMaximumBackoff != tc.wantMax {
				t.Errorf("backoff %s..%s, want %s..%s", o.CertificateRequestMinimumBackoff, o.CertificateRequestMaximumBackoff, tc.wantMin, tc.wantMax)
			}
			if o.ClusterResourceNamespace != "cert-manager" || len(o.CopiedAnnotationPrefixes) != 4 || o.Workers != 5 || len(o.Controllers) == 0 {
				t.Errorf("defaults not filled: %+v", o)
			}
		})
	}
}

// TestCertManagerCRDsWithoutGoCommand shows that cert-manager's CRDs are
// found in a test binary without running the go command.
func TestCertManagerCRDsWithoutGoCommand(t *testing.T) {
	dir, ok := certManagerDirFromSource()
	if !ok {
		t.Fatal("cert-manager's module directory not found from its compiled sources")
	}
	if !strings.Contains(filepath.ToSlash(dir), "github.com/cert-manager/cert-manager@v") {
		t.Errorf("module directory %s does not look like a module cache entry", dir)
	}
	crds, err := filepath.Glob(filepath.Join(dir, "deploy", "crds", "cert-manager.io_*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("no cert-manager CRDs under %s (err %v)", dir, err)
	}
}

func TestEscapeModulePath(t *testing.T) {
	if got := escapeModulePath("github.com/BurntSushi/toml"); got != "github.com/!burnt!sushi/toml" {
		t.Errorf("got %s", got)
	}
}
