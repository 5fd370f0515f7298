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
// role: it is a native sidecar (an init container with restartPolicy
// Always), each flag is one relay-sidecar defines, the flags each role and
// mode requires are there, every path flag lies under a mount backed by a
// Secret volume, and the server sidecar of every mode whose relay-issuer
// publishes relay-cluster-list mounts it and passes --cluster-list (live
// revocation, SPEC section 8).
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
	// The cluster list's Secret and key, as relay-issuer names them (read
	// from the API package's source: this module does not import it).
	names, err := os.ReadFile(filepath.Join(render.RepoRoot(), "api", "v1alpha1", "names.go"))
	if err != nil {
		t.Fatal(err)
	}
	constant := func(name string) string {
		m := regexp.MustCompile(name + `\s*=\s*"([^"]+)"`).FindSubmatch(names)
		if m == nil {
			t.Fatalf("api/v1alpha1/names.go defines no %s", name)
		}
		return string(m[1])
	}
	clusterListName, clusterListKey := constant("DefaultClusterListName"), constant("ClusterListKey")
	if !defined["cluster-list"] {
		t.Fatal("relay-sidecar defines no --cluster-list flag")
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
				if len(pod.Containers) != 0 || len(pod.InitContainers) != 1 {
					t.Fatalf("want one native sidecar (initContainers) and no containers:\n%s", snippet)
				}
				c := pod.InitContainers[0]
				if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
					t.Errorf("relay-sidecar must be a native sidecar (restartPolicy: Always):\n%s", snippet)
				}
				flags := map[string]string{}
				for _, a := range c.Args {
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
				mountedSecret := map[string]string{} // mount path -> Secret
				for _, m := range c.VolumeMounts {
					if volumes[m.Name] == "" {
						t.Errorf("mount %s has no Secret volume", m.Name)
					}
					if !m.ReadOnly {
						t.Errorf("mount %s is not read-only", m.Name)
					}
					mountedSecret[m.MountPath] = volumes[m.Name]
				}
				secretOf := func(p string) string {
					if s := mountedSecret[p]; s != "" { // --cert-dir names the mount itself
						return s
					}
					return mountedSecret[filepath.Dir(p)]
				}
				for _, f := range []string{"cert-dir", "trust-bundle", "token-file", "cluster-list"} {
					if p := flags[f]; p != "" && secretOf(p) == "" {
						t.Errorf("--%s=%s is not under a mounted Secret:\n%s", f, p, snippet)
					}
				}
				// Live revocation: relay-issuer publishes relay-cluster-list
				// in the management cluster of modes 2, 4 and 5; that server
				// sidecar must read it, from that very Secret.
				publishes := role == "management" && (mode == "tls-self-signed" || mode == "mtls-self-signed" || mode == "mtls-byo-ca")
				switch p := flags["cluster-list"]; {
				case publishes && p == "":
					t.Errorf("the server sidecar of %s does not pass --cluster-list: revoked clusters would keep their connections:\n%s", mode, snippet)
				case publishes && filepath.Base(p) != clusterListKey:
					t.Errorf("--cluster-list=%s does not name the %s key", p, clusterListKey)
				case publishes && secretOf(p) != clusterListName:
					t.Errorf("--cluster-list=%s is not read from the %s Secret (got %q):\n%s", p, clusterListName, secretOf(p), snippet)
				case !publishes && p != "":
					t.Errorf("%s/%s: --cluster-list names a list no relay-issuer publishes here (the sidecar would not start):\n%s", mode, role, snippet)
				}
				if mode == "mtls-byo-client" && role == "workload" && !strings.Contains(snippet, "secretName: relay-client-tls-secret") {
					t.Errorf("mode 6 agent must mount relay-client-tls-secret:\n%s", snippet)
				}
			})
		}
	}
}
