package argocd

import (
	"os"
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

func readScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("relayissuer-health.lua")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHealth(t *testing.T) {
	script := readScript(t)
	const head = "apiVersion: relaytls.io/v1alpha1\nkind: RelayIssuer\nmetadata:\n  name: relay\n  generation: 3\n"
	type testCase struct {
		name, resource, status, message string
	}
	for _, tc := range []testCase{
		{"absent status", head + "spec: {}\n", "Progressing", "Waiting for relay-issuer to report a Ready condition"},
		{"no conditions", head + "status: {}\n", "Progressing", "Ready condition"},
		{"no Ready condition", head + "status:\n  conditions:\n  - type: Other\n    status: \"True\"\n", "Progressing", "Ready condition"},
		{"ready", head + "status:\n  conditions:\n  - type: Ready\n    status: \"True\"\n    reason: Checked\n    message: Succeeded checking the issuer\n    observedGeneration: 3\n", "Healthy", "Checked: Succeeded checking the issuer"},
		{"not ready", head + "status:\n  conditions:\n  - type: Ready\n    status: \"False\"\n    reason: Pending\n    message: Secret relaytls-system/relay-tls-signing-secret not found\n    observedGeneration: 3\n", "Degraded", "relay-tls-signing-secret not found"},
		{"stale ready", head + "status:\n  conditions:\n  - type: Ready\n    status: \"True\"\n    reason: Checked\n    observedGeneration: 2\n", "Progressing", "generation 3 (Ready condition is for generation 2)"},
		{"stale not ready", head + "status:\n  conditions:\n  - type: Ready\n    status: \"False\"\n    reason: Failed\n    observedGeneration: 1\n", "Progressing", "generation 3"},
		{"initializing", head + "status:\n  conditions:\n  - type: Ready\n    status: Unknown\n    reason: Initializing\n    observedGeneration: 3\n", "Progressing", "Initializing"},
		{"cluster issuer ready without generation", "kind: RelayClusterIssuer\nmetadata:\n  name: relay\nstatus:\n  conditions:\n  - type: Ready\n    status: \"True\"\n    reason: Checked\n", "Healthy", "Checked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, msg := health(t, script, tc.resource)
			if status != tc.status || !strings.Contains(msg, tc.message) {
				t.Errorf("health = %s %q, want %s with %q", status, msg, tc.status, tc.message)
			}
		})
	}
}

// TestArgoCDConfigMap checks that argocd-cm.yaml installs this very script
// for both kinds.
func TestArgoCDConfigMap(t *testing.T) {
	script := readScript(t)
	b, err := os.ReadFile("argocd-cm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"RelayIssuer", "RelayClusterIssuer"} {
		key := "resource.customizations.health.relaytls.io_" + kind
		if cm.Data[key] != script {
			t.Errorf("argocd-cm.yaml %s is not relayissuer-health.lua", key)
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
