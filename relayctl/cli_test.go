package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaytls/relaytls/relayctl/internal/kube"
)

// cli runs relayctl as main does and returns its exit code and streams.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = execute(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// writeKubeconfig writes a kubeconfig with contexts "plain" (no namespace,
// the current one) and "team" (namespace team-a) for a server that need
// not exist: nothing here dials it.
func writeKubeconfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	const kc = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: not-a-secret}
contexts:
- name: plain
  context: {cluster: c, user: u}
- name: team
  context: {cluster: c, user: u, namespace: team-a}
current-context: plain
`
	if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"init", "-h"}, {"register", "-h"}, {"status", "--help"}, {"check", "-h"}, {"version", "-h"}, {"migrate-scope", "-h"}, {"help", "register"}} {
		code, out, errOut := cli(t, args...)
		if code != exitOK {
			t.Errorf("relayctl %s: exit %d, want 0; stderr:\n%s", strings.Join(args, " "), code, errOut)
		}
		if !strings.Contains(out, "Usage:") || errOut != "" {
			t.Errorf("relayctl %s: want the usage on stdout and nothing on stderr; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out, errOut)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	kc := writeKubeconfig(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown flag, with the nearest one", []string{"register", "--endpiont", "x:1"}, []string{"unknown flag: --endpiont", "did you mean --endpoint?", "Run 'relayctl register --help' for usage."}},
		{"unknown command, with a suggestion", []string{"regster"}, []string{`unknown command "regster"`, "Did you mean this?", "register", "Run 'relayctl --help' for usage."}},
		{"stray argument", []string{"status", "extra"}, []string{`unknown command "extra"`}},
		{"missing --mode", []string{"init", "-o", "yaml"}, []string{"--mode is required: one of insecure, tls-self-signed"}},
		{"unknown mode", []string{"init", "--mode", "mtls-ish", "-o", "yaml"}, []string{`unknown mode "mtls-ish"`}},
		{"unsupported output", []string{"init", "--mode", "4", "-o", "xml"}, []string{`-o "xml": init prints yaml, json, jsonpath=TEMPLATE`}},
		{"unsupported status output", []string{"status", "--kubeconfig", kc, "-o", "xml"}, []string{`-o "xml": status prints text, json, yaml, jsonpath=TEMPLATE`}},
		{"bad jsonpath", []string{"init", "--mode", "4", "-o", "jsonpath={.items[}"}, []string{"-o jsonpath={.items[}"}},
		{"--single-use-token with --dry-run", []string{"register", "--cluster", "east", "--mgmt-context", "team", "--dry-run", "--single-use-token"}, []string{"--dry-run and --single-use-token conflict", "commit the RelayCluster"}},
		{"token without --cluster", []string{"token", "--mgmt-context", "team", "--stdout"}, []string{"--cluster is required"}},
		{"token to two places", []string{"token", "--cluster", "east", "--mgmt-context", "team", "--stdout", "--output-file", "t"}, []string{"give exactly one of --output-file and --stdout"}},
		{"token to nowhere", []string{"token", "--cluster", "east", "--mgmt-context", "team"}, []string{"give exactly one of --output-file and --stdout"}},
		{"revoke without --cluster", []string{"revoke", "--mgmt-context", "team"}, []string{"--cluster is required"}},
		{"revoke with --context", []string{"revoke", "--cluster", "east", "--context", "team"}, []string{"--context names one cluster"}},
		{"-o without --dry-run", []string{"register", "--cluster", "east", "--mgmt-context", "team", "-o", "yaml"}, []string{"-o goes with --dry-run"}},
		{"--context on a two-cluster command", []string{"status", "--kubeconfig", kc, "--context", "team"}, []string{"--context names one cluster", "--mgmt-context and --remote-context"}},
		{"no cluster for status", []string{"status"}, []string{"give --mgmt-context and/or --remote-context"}},
		{"bad cluster name", []string{"register", "--cluster", "East_1", "--mgmt-context", "team"}, []string{"--cluster"}},
		{"bad duration", []string{"register", "--cluster", "east", "--timeout", "soon"}, []string{`invalid argument "soon" for "--timeout"`}},
		{"migrate-scope without the management cluster", []string{"migrate-scope", "--remote-context", "team"}, []string{"--mgmt-context or --mgmt-kubeconfig is required"}},
		{"migrate-scope without a workload cluster", []string{"migrate-scope", "--kubeconfig", kc, "--mgmt-context", "team"}, []string{"give every workload cluster with --remote-context"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := cli(t, tc.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d (usage); stderr:\n%s", code, exitUsage, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			// The error once, no usage dump, nothing on stdout.
			first := strings.SplitN(errOut, "\n", 2)[0]
			if n := strings.Count(errOut, strings.TrimPrefix(first, "relayctl: ")); n != 1 {
				t.Errorf("the error appears %d times on stderr:\n%s", n, errOut)
			}
			if strings.Contains(errOut, "Flags:") || out != "" {
				t.Errorf("a usage error printed the usage or to stdout; stdout:\n%s\nstderr:\n%s", out, errOut)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := cli(t, "--version")
	if code != exitOK || !strings.HasPrefix(out, "relayctl ") || !strings.Contains(out, "go1.") {
		t.Errorf("relayctl --version: exit %d, output %q", code, out)
	}
	code, out, _ = cli(t, "version")
	if code != exitOK || !strings.HasPrefix(out, "relayctl ") {
		t.Errorf("relayctl version: exit %d, output %q", code, out)
	}
	code, out, errOut := cli(t, "version", "-o", "json")
	var v struct{ Version, GoVersion, Platform string }
	if code != exitOK || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || v.GoVersion == "" || v.Platform == "" {
		t.Errorf("relayctl version -o json: exit %d, output %q, stderr %q", code, out, errOut)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		code, out, errOut := cli(t, "completion", shell)
		if code != exitOK || !strings.Contains(out, "relayctl") {
			t.Errorf("relayctl completion %s: exit %d, %d bytes, stderr %q", shell, code, len(out), errOut)
		}
	}
	kc := writeKubeconfig(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"init", "--mode", ""}, []string{"insecure", "mtls-byo-client"}},
		{[]string{"init", "-o", ""}, []string{"yaml", "json"}},
		{[]string{"status", "--mgmt-kubeconfig", kc, "--mgmt-context", ""}, []string{"plain", "team"}},
		{[]string{"init", "--kubeconfig", kc, "--context", ""}, []string{"plain", "team"}},
		{[]string{"reg"}, []string{"register"}},
	} {
		code, out, errOut := cli(t, append([]string{"__complete"}, tc.args...)...)
		for _, w := range tc.want {
			if code != exitOK || !hasCandidate(out, w) {
				t.Errorf("completing %q: exit %d, want %q among:\n%s%s", tc.args, code, w, out, errOut)
			}
		}
	}
}

func TestInitOutputFormats(t *testing.T) {
	code, out, errOut := cli(t, "init", "--mode", "mtls-self-signed", "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var list struct {
		Kind  string
		Items []struct {
			Kind     string
			Metadata struct{ Name, Namespace string }
		}
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("-o json is not JSON: %v\n%s", err, out)
	}
	found := false
	for _, it := range list.Items {
		found = found || (it.Kind == "RelayIssuer" && it.Metadata.Name == "relay" && it.Metadata.Namespace == kube.DefaultNamespace)
	}
	if list.Kind != "List" || !found {
		t.Errorf("-o json: kind %q with %d items, RelayIssuer relay among them: %v", list.Kind, len(list.Items), found)
	}
	code, out, errOut = cli(t, "init", "--mode", "mtls-self-signed", "-o", `jsonpath={.items[?(@.kind=="RelayIssuer")].metadata.name}`)
	if code != exitOK || strings.TrimSpace(out) != "relay" {
		t.Errorf("-o jsonpath: exit %d, output %q, stderr %q", code, out, errOut)
	}
	code, out, _ = cli(t, "init", "--mode", "mtls-self-signed", "-o", "yaml")
	if code != exitOK || !strings.HasPrefix(out, "---\n") || !strings.Contains(out, "kind: RelayIssuer") {
		t.Errorf("-o yaml: exit %d, not a multi-document stream:\n%.300s", code, out)
	}
}

func TestNamespaceDefaults(t *testing.T) {
	kc := writeKubeconfig(t)
	for _, tc := range []struct {
		context, namespace, want string
	}{
		{"", "", kube.DefaultNamespace},
		{"plain", "", kube.DefaultNamespace},
		{"team", "", "team-a"},
		{"team", "ops", "ops"},
		{"plain", "ops", "ops"},
	} {
		tg := kube.NewTarget("management")
		*tg.Flags.KubeConfig, *tg.Flags.Context, *tg.Flags.Namespace = kc, tc.context, tc.namespace
		c, err := tg.Connect()
		if err != nil {
			t.Fatalf("context %q, -n %q: %v", tc.context, tc.namespace, err)
		}
		if c.Namespace != tc.want {
			t.Errorf("context %q, -n %q: namespace %q, want %q", tc.context, tc.namespace, c.Namespace, tc.want)
		}
	}
	tg := kube.NewTarget("workload")
	*tg.Flags.KubeConfig, *tg.Flags.Namespace = kc, "Not_A_Namespace"
	if _, err := tg.Connect(); err == nil || !strings.Contains(err.Error(), `workload cluster: namespace "Not_A_Namespace"`) {
		t.Errorf("an invalid -n: %v", err)
	}
	// An install from the built-in profile goes only to its namespace.
	code, _, errOut := cli(t, "init", "--mode", "insecure", "--kubeconfig", kc, "--context", "team")
	if code != exitFailed || !strings.Contains(errOut, "the namespace is team-a") || !strings.Contains(errOut, "helm install -n team-a") {
		t.Errorf("init into the context's namespace team-a: exit %d, stderr:\n%s", code, errOut)
	}
}

// hasCandidate reports whether a __complete output offers w.
func hasCandidate(out, w string) bool {
	for _, line := range strings.Split(out, "\n") {
		if name, _, _ := strings.Cut(line, "\t"); name == w {
			return true
		}
	}
	return false
}
