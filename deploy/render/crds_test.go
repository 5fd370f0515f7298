package render_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaytls/relaytls/deploy/render"
)

// TestCRDsInstallBeforeTheirObjects: the chart creates objects of its own
// CRDs (the RelayIssuer), so its CRDs must stay in crds/, which `helm
// install` applies and waits for before it maps the templates' objects. A
// CRD moved into templates/ (as a crds.enabled toggle would) makes a fresh
// `helm install` fail: Helm builds every template object against the API
// server's kinds before it creates any, and RelayIssuer is not served yet
// ("no matches for kind"). This test fails on such a move; see the chart
// README for the upgrade story instead.
func TestCRDsInstallBeforeTheirObjects(t *testing.T) {
	for _, mode := range render.Modes {
		for _, role := range render.Roles {
			r := chart(t, render.ProfileValues(mode, role))
			if len(r.CRDs) == 0 {
				t.Fatalf("%s/%s: the chart has no CRDs in crds/", mode, role)
			}
			for _, o := range append(append(r.Objects[:0:0], r.Objects...), r.Tests...) {
				if o.GetKind() == "CustomResourceDefinition" {
					t.Errorf("%s/%s: the templates render CRD %s; Helm would not install it before the objects that use it", mode, role, o.GetName())
				}
			}
		}
	}
	tpl, err := filepath.Glob(filepath.Join(render.ChartDir(), "templates", "**", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	top, _ := filepath.Glob(filepath.Join(render.ChartDir(), "templates", "*.yaml"))
	for _, f := range append(tpl, top...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "kind: CustomResourceDefinition") {
			t.Errorf("%s holds a CustomResourceDefinition; keep the CRDs in crds/", f)
		}
	}
	// The chart does create objects of its own kinds in the default mode, which
	// is why the CRDs must be served first.
	def := chart(t, nil)
	if find(def.Objects, "RelayIssuer", "relay") == nil {
		t.Error("the default render has no RelayIssuer relay; revisit whether the CRDs could move to templates/")
	}
}
