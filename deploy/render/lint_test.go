package render_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"sigs.k8s.io/yaml"

	"github.com/relaytls/relaytls/deploy/render"
)

// TestHelmLintStrict is `helm lint --strict -f ci/<mode>-<role>-values.yaml`
// (Helm's own linter, warnings fail) for every mode and role, each also with
// crds.enabled (the CRD templates); the ci/ files are the ones
// chart-testing uses, and keep the default crds.enabled=false because
// chart-testing installs each on a fresh cluster without --take-ownership.
func TestHelmLintStrict(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(render.ChartDir(), "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := len(render.Modes) * len(render.Roles); len(files) != want {
		t.Fatalf("ci/ holds %d values files, want one per mode and role (%d)", len(files), want)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), "-values.yaml"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var values map[string]any
			if err := yaml.Unmarshal(b, &values); err != nil {
				t.Fatal(err)
			}
			if _, ok := values["crds"]; ok {
				t.Fatalf("%s sets crds; chart-testing installs it on a fresh cluster, where only the default works", filepath.Base(f))
			}
			for _, crds := range []bool{false, true} {
				v := withValues(values, map[string]any{"crds": map[string]any{"enabled": crds}})
				res := lint.RunAll(render.ChartDir(), v, "relaytls-system")
				for _, m := range res.Messages {
					if m.Severity >= support.WarningSev {
						t.Errorf("crds.enabled=%v: %s", crds, m.Error())
					}
				}
			}
		})
	}
}
