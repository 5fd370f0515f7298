package render_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/relaytls/relaytls/deploy/render"
)

// TestSidecarSnippets checks the relay-sidecar snippet of every mode and
// role: each flag is one relay-sidecar defines, the flags each role and mode
// requires are there, and every mounted path is backed by a Secret volume.
func TestSidecarSnippets(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(render.RepoRoot(), "relay-sidecar", "internal", "config", "config.go"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`fs\.\w+Var\(&c\.\w+, "([a-z-]+)"`).FindAllStringSubmatch(string(src), -1) {
		defined[m[1]] = true
	}
	if len(defined) < 10 {
		t.Fatalf("found only %d relay-sidecar flags in config.go; the pattern is out of date", len(defined))
	}
	need := map[string][]string{
		"server/insecure": {"role", "mode", "listen", "upstream"},
		"server/tls":      {"cert-dir", "token-file", "upstream"},
		"server/mtls":     {"cert-dir", "trust-bundle", "upstream"},
		"agent/insecure":  {"server-addr", "cluster", "listen"},
		"agent/tls":       {"server-addr", "cluster", "trust-bundle", "token-file"},
		"agent/mtls":      {"server-addr", "trust-bundle", "cert-dir"},
	}
	for _, mode := range render.Modes {
		for _, role := range render.Roles {
			t.Run(mode+"/"+role, func(t *testing.T) {
				r := chart(t, render.ProfileValues(mode, role))
				snippet := render.SidecarSnippet(r.Notes)
				var pod corev1.PodSpec
				if err := yaml.UnmarshalStrict([]byte(snippet), &pod); err != nil {
					t.Fatalf("snippet is not a pod spec fragment (containers, volumes): %v\n%s", err, snippet)
				}
				if len(pod.Containers) != 1 {
					t.Fatalf("want one container:\n%s", snippet)
				}
				flags := map[string]string{}
				for _, a := range pod.Containers[0].Args {
					name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
					if !defined[name] {
						t.Errorf("--%s is not a relay-sidecar flag", name)
					}
					flags[name] = value
				}
				key := flags["role"] + "/" + flags["mode"]
				req, ok := need[key]
				if !ok {
					t.Fatalf("unexpected role/mode %s", key)
				}
				for _, f := range req {
					if flags[f] == "" {
						t.Errorf("%s needs --%s:\n%s", key, f, snippet)
					}
				}
				volumes := map[string]string{}
				for _, v := range pod.Volumes {
					if v.Secret != nil {
						volumes[v.Name] = v.Secret.SecretName
					}
				}
				for _, m := range pod.Containers[0].VolumeMounts {
					if volumes[m.Name] == "" {
						t.Errorf("mount %s has no Secret volume", m.Name)
					}
				}
				for _, f := range []string{"cert-dir", "trust-bundle", "token-file"} {
					if p := flags[f]; p != "" && !strings.HasPrefix(p, "/var/run/relaytls/") {
						t.Errorf("--%s=%s is not under a mounted Secret", f, p)
					}
				}
				if mode == "mtls-byo-client" && role == "workload" && !strings.Contains(snippet, "secretName: relay-client-tls-secret") {
					t.Errorf("mode 6 agent must mount relay-client-tls-secret:\n%s", snippet)
				}
			})
		}
	}
}
