package render_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/relaytls/relaytls/deploy/render"
)

// TestWorkloadComponent builds the example overlay, which names its
// cluster and endpoint once, and checks that every place relay-issuer,
// cert-manager and relayctl check read them carries those values.
func TestWorkloadComponent(t *testing.T) {
	objs, err := render.Kustomize(filepath.Join(render.RepoRoot(), "deploy", "components", "example-workload"))
	if err != nil {
		t.Fatal(err)
	}
	const cluster, endpoint = "east", "relay-issuer.mgmt.example.com:9443"
	if o := find(objs, "ConfigMap", "relaytls-cluster"); o != nil {
		t.Error("the overlay outputs its local-config ConfigMap relaytls-cluster")
	}
	for _, want := range []struct {
		kind, name string
		path       []string
		value      any
	}{
		{"ConfigMap", "relaytls-config", []string{"data", "cluster"}, cluster},
		{"ConfigMap", "relaytls-config", []string{"data", "endpoint"}, endpoint},
		{"RelayIssuer", "relay", []string{"spec", "remote", "cluster"}, cluster},
		{"RelayIssuer", "relay", []string{"spec", "remote", "endpoint"}, endpoint},
		{"Certificate", "relay-client", []string{"spec", "commonName"}, cluster},
		{"Certificate", "relay-client", []string{"spec", "dnsNames"}, []any{cluster}},
	} {
		o := find(objs, want.kind, want.name)
		if o == nil {
			t.Fatalf("the overlay has no %s %s", want.kind, want.name)
		}
		got := field(t, o, want.path...)
		if g, ok := got.([]any); ok {
			if len(g) != 1 || g[0] != cluster {
				t.Errorf("%s %s %v = %v, want %v", want.kind, want.name, want.path, got, want.value)
			}
			continue
		}
		if got != want.value {
			t.Errorf("%s %s %v = %v, want %v", want.kind, want.name, want.path, got, want.value)
		}
	}
}

// TestWorkloadComponentEveryMode uses the component on every workload
// profile: modes without a RelayIssuer or relay-client build too.
func TestWorkloadComponentEveryMode(t *testing.T) {
	root := render.RepoRoot()
	cm, err := os.ReadFile(filepath.Join(root, "deploy", "components", "example-workload", "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range render.Modes {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			// kustomize takes only relative paths to other directories.
			rel := func(p string) string {
				r, err := filepath.Rel(dir, p)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			k := fmt.Sprintf("resources:\n- %s\n- cluster.yaml\ncomponents:\n- %s\n",
				rel(render.ProfileDir(mode, "workload")), rel(filepath.Join(root, "deploy", "components", "workload-cluster")))
			if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), cm, 0o644); err != nil {
				t.Fatal(err)
			}
			objs, err := render.Kustomize(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := field(t, find(objs, "ConfigMap", "relaytls-config"), "data", "cluster"); got != "east" {
				t.Errorf("relaytls-config data.cluster = %v", got)
			}
		})
	}
}
