package render_test

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/relaytls/relaytls/deploy/render"
)

func withValues(base map[string]any, extra map[string]any) map[string]any {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]any{}
	}
	maps.Copy(out, extra)
	return out
}

func renderedCRDs(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			out = append(out, o)
		}
	}
	return out
}

// deployCRDs are deploy/crds, what controller-gen makes of api/.
func deployCRDs(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(render.RepoRoot(), "deploy", "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/crds: %v", err)
	}
	out := map[string]*unstructured.Unstructured{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := render.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			out[o.GetName()] = o
		}
	}
	return out
}

// TestCRDsDefault: with the default crds.enabled=false no template renders
// a CRD in any mode and role (`helm template` prints none); the CRDs are
// the crds/ files, which `helm install` applies first.
func TestCRDsDefault(t *testing.T) {
	want := deployCRDs(t)
	for _, mode := range render.Modes {
		for _, role := range render.Roles {
			for _, vals := range []map[string]any{
				render.ProfileValues(mode, role),
				withValues(render.ProfileValues(mode, role), map[string]any{"crds": map[string]any{"enabled": false, "keep": false}}),
			} {
				r := chart(t, vals)
				if got := renderedCRDs(append(append(r.Objects[:0:0], r.Objects...), r.Tests...)); len(got) != 0 {
					t.Errorf("%s/%s %v: the templates render %d CRDs with crds.enabled=false", mode, role, vals["crds"], len(got))
				}
				if len(r.CRDs) != len(want) {
					t.Errorf("%s/%s: crds/ holds %d CRDs, want the %d of deploy/crds", mode, role, len(r.CRDs), len(want))
				}
			}
		}
	}
}

// TestCRDTemplates: with crds.enabled the templates render every CRD of
// deploy/crds with its spec unchanged, before their kinds' objects in Helm's
// install order,
// labelled as the chart's CRDs, with helm.sh/resource-policy: keep exactly
// when crds.keep.
func TestCRDTemplates(t *testing.T) {
	want := deployCRDs(t)
	for _, mode := range render.Modes {
		for _, role := range render.Roles {
			for _, keep := range []bool{true, false} {
				crdVals := map[string]any{"enabled": true}
				if !keep {
					crdVals["keep"] = false // keep defaults to true
				}
				r := chart(t, withValues(render.ProfileValues(mode, role), map[string]any{"crds": crdVals}))
				got := renderedCRDs(r.Objects)
				if len(got) != len(want) {
					t.Fatalf("%s/%s keep=%v: %d CRDs rendered, want %d", mode, role, keep, len(got), len(want))
				}
				// Helm's install order puts the CRDs before any object of
				// their kinds.
				lastCRD, firstOwn := -1, len(r.Objects)
				for i, o := range r.Objects {
					if o.GetKind() == "CustomResourceDefinition" {
						lastCRD = i
					} else if o.GroupVersionKind().Group == "relaytls.io" && i < firstOwn {
						firstOwn = i
					}
				}
				if lastCRD > firstOwn {
					t.Errorf("%s/%s: a CRD comes after %s in the install order", mode, role, r.Objects[firstOwn].GetKind())
				}
				for _, o := range got {
					w := want[o.GetName()]
					if w == nil {
						t.Errorf("%s/%s: CRD %s is not in deploy/crds", mode, role, o.GetName())
						continue
					}
					if !reflect.DeepEqual(o.Object["spec"], w.Object["spec"]) {
						t.Errorf("%s/%s: the spec of CRD %s differs from deploy/crds", mode, role, o.GetName())
					}
					ann := o.GetAnnotations()
					if _, ok := ann["helm.sh/resource-policy"]; ok != keep {
						t.Errorf("%s/%s crds.keep=%v: CRD %s has helm.sh/resource-policy: %v", mode, role, keep, o.GetName(), ok)
					} else if ok && ann["helm.sh/resource-policy"] != "keep" {
						t.Errorf("CRD %s: helm.sh/resource-policy %q, want keep", o.GetName(), ann["helm.sh/resource-policy"])
					}
					for k, v := range w.GetAnnotations() {
						if ann[k] != v {
							t.Errorf("CRD %s: annotation %s=%q, want controller-gen's %q", o.GetName(), k, ann[k], v)
						}
					}
					l := o.GetLabels()
					if l["app.kubernetes.io/component"] != "crds" || l["app.kubernetes.io/managed-by"] != "Helm" {
						t.Errorf("CRD %s labels %v", o.GetName(), l)
					}
					if _, ok := l["relaytls.io/mode"]; ok {
						t.Errorf("CRD %s carries a mode label; CRDs are shared by every install in the cluster", o.GetName())
					}
				}
			}
		}
	}
}

// TestCRDTemplateRefusesTemplateActions: a CRD whose text holds "{{" would
// be read by Helm as a template; the generator refuses it instead of
// writing a broken chart.
func TestCRDTemplateRefusesTemplateActions(t *testing.T) {
	crd := []byte("---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: x.relaytls.io\nspec:\n  group: relaytls.io\n  names:\n    kind: X\n    plural: x\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        description: a {{ .Values }} here\n        type: object\n")
	if _, err := render.CRDTemplate("x.yaml", crd); err == nil {
		t.Fatal("CRDTemplate accepted a CRD holding {{")
	}
}
