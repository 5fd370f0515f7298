package render_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/yannh/kubeconform/pkg/resource"
	"github.com/yannh/kubeconform/pkg/validator"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/relaytls/relaytls/deploy/render"
	"github.com/relaytls/relaytls/test/localcluster"
)

// TestKubeconform validates the chart rendered with every ci/ values file
// and every kustomize profile with kubeconform's validator, strict
// (unknown fields fail). Its schemas need no network: they are made from
// the OpenAPI document of a real local kube-apiserver (bin/kube) that serves
// relaytls's and cert-manager's CRDs, one JSON schema per kind, as
// kubeconform's local schema locations read them.
func TestKubeconform(t *testing.T) {
	cmDir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("finding cert-manager's module: %v", err)
	}
	o := clusterOptions("kubeconform")
	o.WithoutCertManager = true
	o.CRDDirs = []string{
		filepath.Join(render.RepoRoot(), "deploy", "crds"),
		filepath.Join(strings.TrimSpace(string(cmDir)), "deploy", "crds"),
	}
	c := localcluster.Start(t, o)
	schemas := t.TempDir()
	n := writeSchemas(t, c, schemas)
	t.Logf("%d schemas from the API server's OpenAPI document", n)

	v, err := validator.New([]string{filepath.Join(schemas, "{{ .ResourceKind }}_{{ .Group }}_{{ .ResourceAPIVersion }}.json")},
		validator.Opts{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	validate := func(t *testing.T, name string, objs []*unstructured.Unstructured) (invalid []string) {
		t.Helper()
		if len(objs) == 0 {
			t.Fatalf("%s: nothing to validate", name)
		}
		for _, o := range objs {
			y, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			r := v.ValidateResource(resource.Resource{Path: name, Bytes: y})
			switch r.Status {
			case validator.Valid:
			case validator.Invalid, validator.Error:
				invalid = append(invalid, fmt.Sprintf("%s %s/%s: %v", name, o.GetKind(), o.GetName(), r.Err))
			default:
				invalid = append(invalid, fmt.Sprintf("%s %s/%s: status %d (skipped or empty), want valid", name, o.GetKind(), o.GetName(), r.Status))
			}
		}
		return invalid
	}

	t.Run("rejects", func(t *testing.T) {
		r := chart(t, nil)
		dep := find(r.Objects, "Deployment", "relay-issuer").DeepCopy()
		_ = unstructured.SetNestedField(dep.Object, int64(1), "spec", "replicaz")
		ri := find(r.Objects, "RelayIssuer", "relay").DeepCopy()
		_ = unstructured.SetNestedField(ri.Object, "x", "spec", "unknownField")
		svc := find(r.Objects, "Service", "relay-issuer-metrics").DeepCopy()
		_ = unstructured.SetNestedField(svc.Object, "seven", "spec", "ports")
		for _, o := range []*unstructured.Unstructured{dep, ri, svc} {
			if got := validate(t, "broken", []*unstructured.Unstructured{o}); len(got) != 1 {
				t.Errorf("a broken %s passes kubeconform", o.GetKind())
			}
		}
	})

	t.Run("ci", func(t *testing.T) {
		files, err := filepath.Glob(filepath.Join(render.ChartDir(), "ci", "*-values.yaml"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no ci/ values: %v", err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var vals map[string]any
			if err := yaml.Unmarshal(b, &vals); err != nil {
				t.Fatal(err)
			}
			r, err := render.Chart(render.ChartDir(), render.ChartOptions{Values: vals})
			if err != nil {
				t.Fatalf("%s: %v", filepath.Base(f), err)
			}
			objs := append(append(append([]*unstructured.Unstructured{}, r.CRDs...), r.Objects...), r.Tests...)
			for _, e := range validate(t, filepath.Base(f), objs) {
				t.Error(e)
			}
			// The CRD templates (crds.enabled) validate as CRDs too.
			vals["crds"] = map[string]any{"enabled": true}
			r, err = render.Chart(render.ChartDir(), render.ChartOptions{Values: vals})
			if err != nil {
				t.Fatalf("%s with crds.enabled: %v", filepath.Base(f), err)
			}
			if n := len(renderedCRDs(r.Objects)); n == 0 {
				t.Fatalf("%s with crds.enabled renders no CRD", filepath.Base(f))
			}
			for _, e := range validate(t, filepath.Base(f)+" crds.enabled", r.Objects) {
				t.Error(e)
			}
		}
	})

	t.Run("profiles", func(t *testing.T) {
		for _, mode := range render.Modes {
			for _, role := range render.Roles {
				objs, err := render.Kustomize(render.ProfileDir(mode, role))
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range validate(t, mode+"/"+role, objs) {
					t.Error(e)
				}
			}
		}
	})
}

// writeSchemas writes one standalone JSON schema per kind the API server
// serves, named kind_group_version.json (the core group's is
// kind_v1_v1.json, as kubeconform splits "v1"). Each holds the whole
// definitions map and refers to its kind's definition; int-or-string
// fields and quantities accept both forms, and every object schema with
// properties but no additionalProperties (and no preserve-unknown-fields)
// refuses unknown fields.
func writeSchemas(t *testing.T, c *localcluster.Cluster, dir string) int {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/openapi/v2").SetHeader("Accept", "application/json").DoRaw(t.Context())
	if err != nil {
		t.Fatalf("GET /openapi/v2: %v", err)
	}
	var doc struct {
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for name, d := range doc.Definitions {
		switch name {
		case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
			doc.Definitions[name] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		case "io.k8s.apimachinery.pkg.api.resource.Quantity":
			doc.Definitions[name] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
		default:
			tighten(d)
		}
	}
	n := 0
	for name, d := range doc.Definitions {
		m, _ := d.(map[string]any)
		gvks, _ := m["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk := g.(map[string]any)
			group, _ := gvk["group"].(string)
			version := gvk["version"].(string)
			kind := gvk["kind"].(string)
			if group == "" {
				group = version
			}
			s := map[string]any{"$ref": "#/definitions/" + name, "definitions": doc.Definitions}
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, strings.ToLower(kind)+"_"+group+"_"+version+".json")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if n < 50 {
		t.Fatalf("only %d kinds in the OpenAPI document", n)
	}
	return n
}

// tighten walks a schema (not its property names): properties' values,
// items, additionalProperties and the allOf/anyOf/oneOf branches.
func tighten(node any) {
	x, ok := node.(map[string]any)
	if !ok {
		return
	}
	if x["format"] == "int-or-string" || x["x-kubernetes-int-or-string"] == true {
		delete(x, "type")
		delete(x, "format")
		x["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
	}
	props, _ := x["properties"].(map[string]any)
	if _, hasAP := x["additionalProperties"]; props != nil && !hasAP && x["x-kubernetes-preserve-unknown-fields"] != true {
		x["additionalProperties"] = false
	}
	for _, p := range props {
		tighten(p)
	}
	tighten(x["items"])
	tighten(x["additionalProperties"])
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		branches, _ := x[k].([]any)
		for _, b := range branches {
			tighten(b)
		}
	}
}
