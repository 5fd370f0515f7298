package argocd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// toLua converts a JSON-shaped Go value into a Lua value, as Argo CD hands
// a resource to a health script.
func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case []any:
		t := L.NewTable()
		for _, e := range x {
			t.Append(toLua(L, e))
		}
		return t
	case map[string]any:
		t := L.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	default:
		panic("unexpected type in a resource")
	}
}

// health runs the script on the resource and returns status and message.
func health(t *testing.T, script, resource string) (string, string) {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(resource), &obj); err != nil {
		t.Fatal(err)
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: false})
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	fn, err := L.LoadString(script)
	if err != nil {
		t.Fatalf("the health script does not compile: %v", err)
	}
	L.Push(fn)
	if err := L.PCall(0, 1, nil); err != nil {
		t.Fatalf("the health script fails: %v", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("the health script returned %s, not a table", L.Get(-1).Type())
	}
	return hs.RawGetString("status").String(), hs.RawGetString("message").String()
}

const customizations = "resource_customizations/relaytls.io"

// kinds are the kinds with a health check.
func kinds(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(customizations)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	if len(out) < 2 {
		t.Fatalf("%s holds %v; want at least RelayIssuer and RelayClusterIssuer", customizations, out)
	}
	return out
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// healthTests is Argo CD's health_test.yaml format.
type healthTests struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

// TestHealth runs every case of every kind's health_test.yaml, as Argo
// CD's own test of resource_customizations does, and requires a
// terminating case for each kind.
func TestHealth(t *testing.T) {
	for _, kind := range kinds(t) {
		dir := filepath.Join(customizations, kind)
		script := read(t, filepath.Join(dir, "health.lua"))
		var ht healthTests
		if err := yaml.UnmarshalStrict([]byte(read(t, filepath.Join(dir, "health_test.yaml"))), &ht); err != nil {
			t.Fatalf("%s/health_test.yaml: %v", dir, err)
		}
		terminating := false
		for _, tc := range ht.Tests {
			t.Run(kind+"/"+tc.InputPath, func(t *testing.T) {
				input := read(t, filepath.Join(dir, tc.InputPath))
				if !strings.Contains(input, "kind: "+kind+"\n") {
					t.Errorf("%s is not a %s", tc.InputPath, kind)
				}
				terminating = terminating || strings.Contains(input, "deletionTimestamp:")
				status, msg := health(t, script, input)
				if status != tc.HealthStatus.Status || msg != tc.HealthStatus.Message {
					t.Errorf("health = %s %q, want %s %q", status, msg, tc.HealthStatus.Status, tc.HealthStatus.Message)
				}
			})
		}
		if len(ht.Tests) == 0 || !terminating {
			t.Errorf("%s: %d cases, terminating one among them: %v", kind, len(ht.Tests), terminating)
		}
	}
}

// TestArgoCDConfigMap checks that argocd-cm.yaml installs each kind's very
// script.
func TestArgoCDConfigMap(t *testing.T) {
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal([]byte(read(t, "argocd-cm.yaml")), &cm); err != nil {
		t.Fatal(err)
	}
	for _, kind := range kinds(t) {
		key := "resource.customizations.health.relaytls.io_" + kind
		if cm.Data[key] != read(t, filepath.Join(customizations, kind, "health.lua")) {
			t.Errorf("argocd-cm.yaml %s is not %s/%s/health.lua", key, customizations, kind)
		}
	}
}

func TestRelayClusterHealth(t *testing.T) {
	b, err := os.ReadFile("relaycluster-health.lua")
	if err != nil {
		t.Fatal(err)
	}
	script := string(b)
	const head = "apiVersion: relaytls.io/v1alpha1\nkind: RelayCluster\nmetadata:\n  name: cluster-1\n  generation: 2\n"
	for _, tc := range []struct{ name, resource, status, message string }{
		{"no status", head + "spec: {}\n", "Progressing", "Registered condition"},
		{"registered", head + "status:\n  conditions:\n  - type: Registered\n    status: \"True\"\n    reason: Registered\n    message: ok\n    observedGeneration: 2\n", "Healthy", "Registered: ok"},
		{"stale", head + "status:\n  conditions:\n  - type: Registered\n    status: \"True\"\n    reason: Registered\n    observedGeneration: 1\n", "Progressing", "generation 2"},
		{"revoked", head + "spec:\n  revoked: true\nstatus:\n  conditions:\n  - type: Registered\n    status: \"False\"\n    reason: ClusterRevoked\n    observedGeneration: 2\n", "Suspended", "Revoked"},
		{"not registered", head + "status:\n  conditions:\n  - type: Registered\n    status: \"False\"\n    reason: Other\n    message: broken\n    observedGeneration: 2\n", "Degraded", "broken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, msg := health(t, script, tc.resource)
			if status != tc.status || !strings.Contains(msg, tc.message) {
				t.Errorf("health = %s %q, want %s with %q", status, msg, tc.status, tc.message)
			}
		})
	}
	cm, err := os.ReadFile("argocd-cm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(cm, &m); err != nil {
		t.Fatal(err)
	}
	if m.Data["resource.customizations.health.relaytls.io_RelayCluster"] != script {
		t.Error("argocd-cm.yaml does not install relaycluster-health.lua for RelayCluster")
	}
}
