package render_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/relaytls/relaytls/deploy/render"
)

func chart(t *testing.T, values map[string]any) *render.Rendered {
	t.Helper()
	r, err := render.Chart(render.ChartDir(), render.ChartOptions{Values: values})
	if err != nil {
		t.Fatalf("rendering the chart with %v: %v", values, err)
	}
	return r
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func kinds(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

// TestGeneratedUpToDate fails when the chart's copies of deploy/rbac and
// deploy/crds, or the profiles, differ from what the generator makes now.
func TestGeneratedUpToDate(t *testing.T) {
	files, err := render.Generated()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(render.RepoRoot(), f.Path))
		if err != nil {
			t.Errorf("%s: %v; run `cd deploy/render && go run ./cmd/gen`", f.Path, err)
			continue
		}
		if !bytes.Equal(got, f.Content) {
			t.Errorf("%s is stale; run `cd deploy/render && go run ./cmd/gen`", f.Path)
		}
	}
	// Every profile directory on disk is one the generator makes.
	dirs, _ := filepath.Glob(filepath.Join(render.RepoRoot(), "deploy", "profiles", "*", "*"))
	if len(dirs) != len(render.Modes)*len(render.Roles) {
		t.Errorf("deploy/profiles has %d mode/role directories, want %d (one per mode and role)", len(dirs), len(render.Modes)*len(render.Roles))
	}
}

// TestChartRBACIsDeployRBAC checks that the RBAC the chart renders carries
// exactly the rules of deploy/rbac/role.yaml and approver.yaml, the files the
// integration tests run the issuer under.
func TestChartRBACIsDeployRBAC(t *testing.T) {
	readObjs := func(rel string) []*unstructured.Unstructured {
		b, err := os.ReadFile(filepath.Join(render.RepoRoot(), rel))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := render.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
	want := append(readObjs("deploy/rbac/role.yaml"), readObjs("deploy/rbac/approver.yaml")...)
	for _, mode := range []string{"tls-self-signed", "mtls-self-signed", "mtls-byo-ca"} {
		for _, role := range render.Roles {
			if role == "workload" && mode == "tls-self-signed" {
				continue // no issuer there
			}
			t.Run(mode+"/"+role, func(t *testing.T) {
				r := chart(t, render.ProfileValues(mode, role))
				for _, w := range want {
					if w.GetKind() == "ClusterRoleBinding" {
						continue // the subject comes from the values
					}
					g := find(r.Objects, w.GetKind(), w.GetName())
					if g == nil {
						t.Fatalf("the chart renders no %s %s; it renders %v", w.GetKind(), w.GetName(), kinds(r.Objects))
					}
					if !reflect.DeepEqual(g.Object["rules"], w.Object["rules"]) {
						t.Errorf("%s %s rules differ from deploy/rbac:\nchart: %v\ndeploy/rbac: %v", w.GetKind(), w.GetName(), g.Object["rules"], w.Object["rules"])
					}
				}
				crb := find(r.Objects, "ClusterRoleBinding", "relaytls-cert-manager-approver")
				if crb == nil {
					t.Fatal("no approver ClusterRoleBinding")
				}
				subj, _, _ := unstructured.NestedSlice(crb.Object, "subjects")
				if len(subj) != 1 || subj[0].(map[string]any)["name"] != "cert-manager" {
					t.Errorf("approver subjects = %v, want cert-manager's ServiceAccount", subj)
				}
			})
		}
	}
	// Modes without an issuer render no RBAC at all.
	for _, mode := range []string{"insecure", "tls-byo-server", "mtls-byo-client"} {
		r := chart(t, render.ProfileValues(mode, "management"))
		for _, o := range r.Objects {
			if strings.HasPrefix(o.GetAPIVersion(), "rbac.") || o.GetKind() == "Deployment" {
				t.Errorf("mode %s renders %s %s, but runs no issuer", mode, o.GetKind(), o.GetName())
			}
		}
	}
}

// TestChartRefusals: every bad input fails with an error naming it.
func TestChartRefusals(t *testing.T) {
	type testCase struct {
		name   string
		values map[string]any
		want   []string
	}
	wl := func(extra map[string]any) map[string]any {
		v := map[string]any{"role": "workload", "mode": "mtls-self-signed", "workload": map[string]any{"cluster": "east", "endpoint": "relay.example.com:9443"}}
		for k, x := range extra {
			v[k] = x
		}
		return v
	}
	for _, tc := range []testCase{
		{"unknown mode", map[string]any{"mode": "mtls-please"}, []string{"/mode", "must be one of", "mtls-byo-client"}},
		{"unknown role", map[string]any{"role": "edge"}, []string{"/role", "management"}},
		{"reserved server secret, mode 3", map[string]any{"mode": "tls-byo-server", "secrets": map[string]any{"server": "relay-server-tls-secret"}}, []string{"secrets.server", "relay-server-tls-secret is reserved"}},
		{"reserved server secret, mode 5", map[string]any{"mode": "mtls-byo-ca", "secrets": map[string]any{"server": "relay-server-tls-secret"}}, []string{"secrets.server", "reserved"}},
		{"reserved server secret, mode 6", map[string]any{"mode": "mtls-byo-client", "secrets": map[string]any{"server": "relay-server-tls-secret"}}, []string{"secrets.server", "reserved"}},
		{"reserved telemetry secret", map[string]any{"mode": "mtls-byo-ca", "secrets": map[string]any{"telemetryGateway": "gloo-telemetry-gateway-tls-secret"}}, []string{"secrets.telemetryGateway", "reserved"}},
		{"workload without cluster", wl(map[string]any{"workload": map[string]any{"endpoint": "relay.example.com:9443"}}), []string{"workload.cluster", "DNS-1123"}},
		{"workload with a bad cluster", wl(map[string]any{"workload": map[string]any{"cluster": "East_1", "endpoint": "relay.example.com:9443"}}), []string{"workload.cluster", "East_1"}},
		{"workload without endpoint", wl(map[string]any{"workload": map[string]any{"cluster": "east"}}), []string{"workload.endpoint", "host:port"}},
		{"server without names", map[string]any{"pki": map[string]any{"server": map[string]any{"dnsNames": []any{}}}}, []string{"pki.server.dnsNames"}},
		{"schema: unknown key", map[string]any{"issuer": map[string]any{"replicaz": 2}}, []string{"replicaz"}},
		{"schema: bad duration", map[string]any{"relayIssuer": map[string]any{"maxDuration": "a month"}}, []string{"maxDuration"}},
		{"schema: token as a value", map[string]any{"token": "s3cr3t"}, []string{"token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render.Chart(render.ChartDir(), render.ChartOptions{Values: tc.values})
			if err == nil {
				t.Fatalf("rendering %v succeeded; want an error mentioning %q", tc.values, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error repeats the token value: %q", err)
			}
		})
	}
	// A BYO install under another name is fine.
	chart(t, map[string]any{"mode": "tls-byo-server", "secrets": map[string]any{"server": "my-relay-cert"}})
}

// TestProfilesBuildWithKustomize builds every profile with kustomize and
// checks it is the chart's output, holds no Secret (no token in Git) and
// orders its objects with sync waves.
func TestProfilesBuildWithKustomize(t *testing.T) {
	for _, mode := range render.Modes {
		for _, role := range render.Roles {
			t.Run(mode+"/"+role, func(t *testing.T) {
				built, err := render.Kustomize(render.ProfileDir(mode, role))
				if err != nil {
					t.Fatal(err)
				}
				want, err := render.Profile(mode, role)
				if err != nil {
					t.Fatal(err)
				}
				if len(built) != len(want) {
					t.Fatalf("kustomize builds %d objects %v, the chart renders %d %v", len(built), kinds(built), len(want), kinds(want))
				}
				for _, w := range want {
					g := find(built, w.GetKind(), w.GetName())
					if g == nil || !reflect.DeepEqual(g.Object, w.Object) {
						t.Errorf("%s %s differs between kustomize build and the chart", w.GetKind(), w.GetName())
					}
				}
				for _, o := range built {
					if o.GetKind() == "Secret" {
						t.Errorf("profile holds Secret %s: no credential may be in Git", o.GetName())
					}
					if _, ok := o.GetAnnotations()["argocd.argoproj.io/sync-wave"]; !ok {
						t.Errorf("%s %s has no sync wave", o.GetKind(), o.GetName())
					}
				}
			})
		}
	}
}

// TestIssuerArgs checks the relay-issuer Deployment of every configuration
// against the binary's flags, and the issuance endpoint's wiring: the
// Service's target port, the serving certificate's volume.
func TestIssuerArgs(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(render.RepoRoot(), "issuer", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`fs\.\w+Var\(&[\w.]+, "([a-z-]+)"`).FindAllStringSubmatch(string(src), -1) {
		defined[m[1]] = true
	}
	if !defined["namespace"] || !defined["issuance-listen-address"] {
		t.Fatalf("relay-issuer flags not found in issuer/main.go (found %v); the pattern is out of date", defined)
	}
	for _, mode := range render.Modes {
		for _, role := range render.Roles {
			r := chart(t, render.ProfileValues(mode, role))
			d := find(r.Objects, "Deployment", "relay-issuer")
			if d == nil {
				continue
			}
			c, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
			args, _, _ := unstructured.NestedStringSlice(c[0].(map[string]any), "args")
			serves := false
			for _, a := range args {
				name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if !defined[name] {
					t.Errorf("%s/%s: --%s is not a relay-issuer flag", mode, role, name)
				}
				serves = serves || name == "issuance-listen-address"
			}
			wantServe := role == "management" && (mode == "mtls-self-signed" || mode == "mtls-byo-ca")
			if serves != wantServe {
				t.Errorf("%s/%s: serves the issuance endpoint = %v, want %v", mode, role, serves, wantServe)
			}
			svc := find(r.Objects, "Service", "relay-issuer")
			if (svc != nil) != wantServe {
				t.Errorf("%s/%s: issuance Service present = %v, want %v", mode, role, svc != nil, wantServe)
			}
			if !wantServe {
				continue
			}
			vols, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
			wantSecret := "relay-server-tls-secret"
			if mode == "mtls-byo-ca" {
				wantSecret = "relay-server-tls-secret-custom"
			}
			if len(vols) != 1 || str(vols[0].(map[string]any), "secret", "secretName") != wantSecret {
				t.Errorf("%s: the endpoint's certificate volume is %v, want Secret %s", mode, vols, wantSecret)
			}
			ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
			if str(ports[0].(map[string]any), "targetPort") != "issuance" || !strings.Contains(fmt.Sprint(c[0].(map[string]any)["ports"]), "issuance") {
				t.Errorf("%s: Service targets %v; the container must expose a port named issuance", mode, ports)
			}
		}
	}
}
