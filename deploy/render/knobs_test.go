package render_test

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/relaytls/relaytls/deploy/render"
)

func field(t *testing.T, o *unstructured.Unstructured, path ...string) any {
	t.Helper()
	v, ok, err := unstructured.NestedFieldNoCopy(o.Object, path...)
	if err != nil || !ok {
		t.Fatalf("%s %s has no %s (%v)", o.GetKind(), o.GetName(), strings.Join(path, "."), err)
	}
	return v
}

// TestOperationsKnobs renders the chart with every operations value set
// and checks each lands where a cluster reads it; the defaults add none of
// the optional objects.
func TestOperationsKnobs(t *testing.T) {
	def := chart(t, nil)
	for _, kind := range []string{"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PodMonitor", "PrometheusRule"} {
		if o := find(def.Objects, kind, "relay-issuer"); o != nil {
			t.Errorf("the defaults render a %s", kind)
		}
	}
	dep := find(def.Objects, "Deployment", "relay-issuer")
	if got := field(t, dep, "spec", "template", "spec", "nodeSelector"); got.(map[string]any)["kubernetes.io/os"] != "linux" {
		t.Errorf("default nodeSelector %v", got)
	}
	if find(def.Objects, "Service", "relay-issuer-metrics") == nil {
		t.Error("the defaults render no metrics Service")
	}

	r := chart(t, map[string]any{"issuer": map[string]any{
		"replicas":            2,
		"image":               map[string]any{"registry": "mirror.example.com/", "tag": "v1.2.3"},
		"podDisruptionBudget": map[string]any{"enabled": true},
		"topologySpreadConstraints": []any{map[string]any{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
			"labelSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "relay-issuer"}}}},
		"podSecurityContext": map[string]any{"runAsUser": nil, "runAsGroup": nil},
		"extraArgs":          []any{"--log-level=debug"},
		"extraEnv":           []any{map[string]any{"name": "GODEBUG", "value": "x509sha1=0"}},
		"serviceAccount":     map[string]any{"annotations": map[string]any{"iam.example.com/role": "relay"}},
		"networkPolicy":      map[string]any{"enabled": true},
		"metrics": map[string]any{
			"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}},
			"podMonitor":     map[string]any{"enabled": true},
			"prometheusRule": map[string]any{"enabled": true},
		},
	}})
	dep = find(r.Objects, "Deployment", "relay-issuer")
	pod := field(t, dep, "spec", "template", "spec").(map[string]any)
	c := pod["containers"].([]any)[0].(map[string]any)
	if c["image"] != "mirror.example.com/ghcr.io/relaytls/relay-issuer:v1.2.3" {
		t.Errorf("image %v", c["image"])
	}
	if args := c["args"].([]any); args[len(args)-1] != "--log-level=debug" {
		t.Errorf("extraArgs not last: %v", args)
	}
	if env := c["env"].([]any); env[len(env)-1].(map[string]any)["name"] != "GODEBUG" {
		t.Errorf("extraEnv: %v", env)
	}
	if sc := pod["securityContext"].(map[string]any); sc["runAsUser"] != nil || sc["runAsNonRoot"] != true {
		t.Errorf("podSecurityContext override kept the chart's UID: %v", sc)
	}
	if _, ok := pod["topologySpreadConstraints"]; !ok {
		t.Error("no topologySpreadConstraints")
	}
	if sa := find(r.Objects, "ServiceAccount", "relay-issuer"); sa.GetAnnotations()["iam.example.com/role"] != "relay" {
		t.Errorf("ServiceAccount annotations %v", sa.GetAnnotations())
	}
	if pdb := find(r.Objects, "PodDisruptionBudget", "relay-issuer"); pdb == nil || fmt.Sprint(field(t, pdb, "spec", "minAvailable")) != "1" {
		t.Errorf("PodDisruptionBudget: %v", pdb)
	}
	np := find(r.Objects, "NetworkPolicy", "relay-issuer")
	if np == nil || len(field(t, np, "spec", "ingress").([]any)) != 3 {
		t.Errorf("NetworkPolicy (management mode 4: metrics, health, issuance): %v", np)
	}
	sm := find(r.Objects, "ServiceMonitor", "relay-issuer")
	if sm == nil || sm.GetLabels()["release"] != "prom" || field(t, sm, "spec", "endpoints").([]any)[0].(map[string]any)["port"] != "metrics" {
		t.Errorf("ServiceMonitor: %v", sm)
	}
	if find(r.Objects, "PodMonitor", "relay-issuer") == nil {
		t.Error("no PodMonitor")
	}
	pr := find(r.Objects, "PrometheusRule", "relaytls")
	if pr == nil || pr.GetNamespace() != "relaytls-system" {
		t.Fatalf("PrometheusRule: %v", pr)
	}
	var summaries []string
	for _, g := range field(t, pr, "spec", "groups").([]any) {
		for _, rule := range g.(map[string]any)["rules"].([]any) {
			summaries = append(summaries, rule.(map[string]any)["annotations"].(map[string]any)["summary"].(string))
		}
	}
	if len(summaries) < 5 || !strings.Contains(strings.Join(summaries, "\n"), "{{ $labels.certificate }}") {
		t.Errorf("the PrometheusRule's templates did not survive Helm: %q", summaries)
	}

	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"both PDB bounds", map[string]any{"podDisruptionBudget": map[string]any{"enabled": true, "maxUnavailable": 1}}, "minAvailable or maxUnavailable, not both"},
		{"ServiceMonitor without Service", map[string]any{"metrics": map[string]any{"service": map[string]any{"enabled": false}, "serviceMonitor": map[string]any{"enabled": true}}}, "needs issuer.metrics.service.enabled"},
		{"unknown metrics key", map[string]any{"metrics": map[string]any{"servicemonitor": map[string]any{"enabled": true}}}, "servicemonitor"},
	} {
		_, err := render.Chart(render.ChartDir(), render.ChartOptions{Values: map[string]any{"issuer": tc.values}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
}
