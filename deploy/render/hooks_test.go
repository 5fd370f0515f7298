package render_test

import (
	"fmt"
	"testing"

	"github.com/relaytls/relaytls/deploy/render"
)

// TestHelmTestHook: the chart's `helm test` pod fetches /metrics from the
// metrics Service the same render has (name and port), runs locked down
// with no API token, and is a test hook only: never among the objects an
// install or a profile applies, and absent where there is nothing to test.
func TestHelmTestHook(t *testing.T) {
	r := chart(t, nil)
	if len(r.Tests) != 1 {
		t.Fatalf("the defaults render %d test hooks, want 1: %v", len(r.Tests), kinds(r.Tests))
	}
	pod := r.Tests[0]
	if pod.GetKind() != "Pod" || pod.GetAnnotations()["helm.sh/hook"] != "test" {
		t.Fatalf("test hook %s/%s annotations %v", pod.GetKind(), pod.GetName(), pod.GetAnnotations())
	}
	if find(r.Objects, "Pod", pod.GetName()) != nil {
		t.Errorf("the test pod is among the installed objects")
	}
	svc := find(r.Objects, "Service", "relay-issuer-metrics")
	if svc == nil {
		t.Fatal("no metrics Service to test")
	}
	port := field(t, svc, "spec", "ports").([]any)[0].(map[string]any)["port"]
	want := fmt.Sprintf("http://relay-issuer-metrics.%s.svc:%v/metrics", render.Namespace, port)
	spec := field(t, pod, "spec").(map[string]any)
	c := spec["containers"].([]any)[0].(map[string]any)
	cmd := c["command"].([]any)
	if cmd[0] != "wget" || cmd[len(cmd)-1] != want {
		t.Errorf("test command %v, want wget ... %s", cmd, want)
	}
	if spec["restartPolicy"] != "Never" || spec["automountServiceAccountToken"] != false {
		t.Errorf("restartPolicy %v automountServiceAccountToken %v", spec["restartPolicy"], spec["automountServiceAccountToken"])
	}
	if psc := spec["securityContext"].(map[string]any); psc["runAsNonRoot"] != true {
		t.Errorf("pod securityContext %v", psc)
	}
	sc := c["securityContext"].(map[string]any)
	if sc["allowPrivilegeEscalation"] != false || sc["readOnlyRootFilesystem"] != true ||
		fmt.Sprint(sc["capabilities"].(map[string]any)["drop"]) != "[ALL]" {
		t.Errorf("container securityContext %v", sc)
	}
	if c["image"] != "busybox:1.37.0" {
		t.Errorf("test image %v", c["image"])
	}

	digest := "sha256:" + fmt.Sprintf("%064x", 1)
	r = chart(t, map[string]any{"tests": map[string]any{"image": map[string]any{"registry": "mirror.example.com", "digest": digest}}})
	if got := r.Tests[0].Object["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["image"]; got != "mirror.example.com/busybox@"+digest {
		t.Errorf("test image with registry and digest: %v", got)
	}

	for name, v := range map[string]map[string]any{
		"tests.enabled=false":                       {"tests": map[string]any{"enabled": false}},
		"issuer.metrics.service.enabled=false":      {"issuer": map[string]any{"metrics": map[string]any{"service": map[string]any{"enabled": false}}}},
		"insecure management (no relay-issuer)":     render.ProfileValues("insecure", "management"),
		"tls-byo-server workload (no relay-issuer)": render.ProfileValues("tls-byo-server", "workload"),
	} {
		if r := chart(t, v); len(r.Tests) != 0 {
			t.Errorf("%s renders test hooks %v", name, kinds(r.Tests))
		}
	}

	for _, mode := range render.Modes {
		for _, role := range render.Roles {
			objs, err := render.Profile(mode, role)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if _, ok := o.GetAnnotations()["helm.sh/hook"]; ok {
					t.Errorf("profile %s/%s has the hook %s/%s", mode, role, o.GetKind(), o.GetName())
				}
			}
		}
	}
}
