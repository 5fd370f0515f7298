//go:build e2ekind

// Package kind is the kind suite: relaytls installed the way users install
// it, on two real kind clusters that hack/kind/e2e.sh has made (cert-manager
// already in both), with the sample relay application and relay-sidecar
// running as pods, Secrets mounted and rotated by the real kubelet, and the
// relay and the issuance endpoint reached from the other cluster over the
// docker network. Run it with `make e2e-kind`; it is not part of make test
// (build tag e2ekind).
package kind

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/e2e/harness"
	"github.com/relaytls/relaytls/e2e/provider"
	"github.com/relaytls/relaytls/test/testpki"
)

const ns = "relaytls-system"

// env is what hack/kind/e2e.sh hands over.
type env struct {
	kubeconfig, prefix, registry, tag, kubectl, helm, root, relayctl string
	mgmt, wl                                                         provider.Cluster
	mgmtCtx, wlCtx                                                   string
	logDir                                                           string
}

func setup(t *testing.T) *env {
	t.Helper()
	e := &env{
		kubeconfig: os.Getenv("RELAYTLS_KIND_KUBECONFIG"),
		prefix:     os.Getenv("RELAYTLS_KIND_PREFIX"),
		registry:   os.Getenv("RELAYTLS_KIND_IMAGE_REGISTRY"),
		tag:        os.Getenv("RELAYTLS_KIND_IMAGE_TAG"),
		kubectl:    os.Getenv("RELAYTLS_KIND_KUBECTL"),
		helm:       os.Getenv("RELAYTLS_KIND_HELM"),
		root:       provider.RepoPath("."),
	}
	if e.kubeconfig == "" || e.prefix == "" {
		t.Fatal("RELAYTLS_KIND_KUBECONFIG and RELAYTLS_KIND_PREFIX are not set: run this suite with make e2e-kind, which makes the clusters")
	}
	e.mgmtCtx, e.wlCtx = "kind-"+e.prefix+"-mgmt", "kind-"+e.prefix+"-wl"
	var err error
	if e.mgmt, err = provider.Attach("management", e.kubeconfig, e.mgmtCtx); err != nil {
		t.Fatal(err)
	}
	if e.wl, err = provider.Attach("workload", e.kubeconfig, e.wlCtx); err != nil {
		t.Fatal(err)
	}
	e.logDir = filepath.Join(e.root, "_out", "kind", "logs", "suite")
	if err := os.MkdirAll(e.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if e.relayctl = os.Getenv("RELAYTLS_KIND_RELAYCTL"); e.relayctl == "" {
		e.relayctl = filepath.Join(t.TempDir(), "relayctl")
		cmd := exec.Command("go", "build", "-o", e.relayctl, "./relayctl")
		cmd.Dir = e.root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build relayctl: %v\n%s", err, out)
		}
	}
	return e
}

// run runs a command in the repository root and returns its stdout; a
// failure fails the test with its output.
func (e *env) run(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	base := t.Context()
	if base.Err() != nil {
		base = context.Background() // in a Cleanup, after t's context ended
	}
	ctx, cancel := context.WithTimeout(base, 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// tryK runs kubectl and returns its combined output and error, for the
// callers that handle a failure themselves.
func (e *env) tryK(t *testing.T, kctx string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.kubectl, append([]string{"--context", kctx}, args...)...)
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *env) k(t *testing.T, kctx string, stdin []byte, args ...string) string {
	t.Helper()
	return e.run(t, stdin, e.kubectl, append([]string{"--context", kctx}, args...)...)
}

// sidecarSnippet is the chart's documented relay-sidecar container and
// volumes for a mode and role (deploy/charts/relaytls/docs/sidecar.md): a
// native sidecar (an init container with restartPolicy Always), with the
// given arguments replaced.
func (e *env) sidecarSnippet(t *testing.T, mode, cluster string, set map[string]string) (corev1.Container, []corev1.Volume) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(e.root, "deploy/charts/relaytls/docs/sidecar.md"))
	if err != nil {
		t.Fatal(err)
	}
	head := "## " + mode + ", " + cluster + " cluster\n"
	i := bytes.Index(doc, []byte(head))
	if i < 0 {
		t.Fatalf("docs/sidecar.md has no section %q", strings.TrimSpace(head))
	}
	rest := doc[i+len(head):]
	start := bytes.Index(rest, []byte("```yaml\n"))
	end := bytes.Index(rest[start+8:], []byte("```"))
	var snip struct {
		InitContainers []corev1.Container `json:"initContainers"`
		Volumes        []corev1.Volume    `json:"volumes"`
	}
	if err := yaml.Unmarshal(rest[start+8:start+8+end], &snip); err != nil {
		t.Fatalf("section %q: %v", strings.TrimSpace(head), err)
	}
	if len(snip.InitContainers) != 1 {
		t.Fatalf("section %q: want one native sidecar in initContainers", strings.TrimSpace(head))
	}
	c := snip.InitContainers[0]
	for k, v := range set {
		found := false
		for j, a := range c.Args {
			if strings.HasPrefix(a, "--"+k+"=") {
				c.Args[j], found = "--"+k+"="+v, true
			}
		}
		if !found {
			c.Args = append(c.Args, "--"+k+"="+v)
		}
	}
	always := corev1.ContainerRestartPolicyAlways
	c.RestartPolicy = &always
	c.Image = e.registry + "/relay-sidecar:" + e.tag
	return c, snip.Volumes
}

// appDeployment is the sample relay app with its native relay-sidecar.
func (e *env) appDeployment(name string, sidecar corev1.Container, vols []corev1.Volume, appArgs []string) []byte {
	yes := true
	uid := int64(65532)
	d := map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"replicas": 1,
			"selector": map[string]any{"matchLabels": map[string]string{"app": name}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]string{"app": name}},
				"spec": corev1.PodSpec{
					InitContainers: []corev1.Container{sidecar},
					Containers: []corev1.Container{{
						Name: "app", Image: e.registry + "/relayapp:" + e.tag,
						Args: appArgs,
						SecurityContext: &corev1.SecurityContext{
							RunAsNonRoot: &yes, RunAsUser: &uid, ReadOnlyRootFilesystem: &yes,
							AllowPrivilegeEscalation: new(bool),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
					Volumes: vols,
				},
			},
		},
	}
	b, _ := json.Marshal(d)
	return b
}

func nodePortService(name, app string, port, nodePort int) []byte {
	return []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":%q},
"spec":{"type":"NodePort","selector":{"app":%q},"ports":[{"name":"relay","port":%d,"targetPort":%d,"nodePort":%d}]}}`,
		name, ns, app, port, port, nodePort))
}

// stats is the last counters line of a relayapp pod's log.
func (e *env) stats(t *testing.T, kctx, deploy string) map[string]int64 {
	t.Helper()
	out := e.k(t, kctx, nil, "-n", ns, "logs", "deploy/"+deploy, "-c", "app", "--tail=5")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var m map[string]int64
	for i := len(lines) - 1; i >= 0; i-- {
		if json.Unmarshal([]byte(lines[i]), &m) == nil {
			return m
		}
	}
	t.Fatalf("no counters in the log of %s: %q", deploy, out)
	return nil
}

func revision(ctx context.Context, c provider.Cluster, name string) (int, error) {
	var crt cmapi.Certificate
	if err := c.Client().Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &crt); err != nil {
		return 0, err
	}
	if crt.Status.Revision == nil {
		return 0, nil
	}
	return *crt.Status.Revision, nil
}

// sidecarMetric reads one relay-sidecar metric of a deployment's pod through
// the API server's pod proxy.
func sidecarMetric(ctx context.Context, c provider.Cluster, app, metric string, labels ...string) (float64, error) {
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return 0, err
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil || len(pods.Items) == 0 {
		return 0, fmt.Errorf("no pod of %s: %v", app, err)
	}
	body, err := cs.CoreV1().Pods(ns).ProxyGet("http", pods.Items[0].Name, "9090", "/metrics", nil).DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	return harness.SumMetric(string(body), metric, labels...), nil
}

// modeCase is one relay security mode as the kind suite runs it.
type modeCase struct {
	mode string
	// autoClient: the workload cluster gets a relay-client Certificate
	// from the remote RelayIssuer through the issuance endpoint.
	autoClient bool
}

// byo reports whether the user brings the PKI (modes 3, 5 and 6): it is
// made as the local suite makes it (harness.UserMaterial), and the server
// certificate carries harness.ServerName, not the node's name.
func byo(m harness.Mode) bool { return m.Number == 3 || m.Number == 5 || m.Number == 6 }

// mgmtIssuer reports whether the chart runs relay-issuer in the management
// cluster (modes 2, 4 and 5: values.yaml relayIssuer).
func mgmtIssuer(m harness.Mode) bool { return m.Number == 2 || m.Number == 4 || m.Number == 5 }

// userClientSecret is an agent client certificate of the user's PKI (mode
// 6) for cluster, as a user stores it: tls.crt, tls.key and the root.
func userClientSecret(t *testing.T, root *testpki.Cert, cluster string) map[string][]byte {
	c := testpki.Issue(t, root, testpki.Options{CommonName: cluster, DNSNames: []string{cluster},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return map[string][]byte{"tls.crt": c.CertPEM(), "tls.key": c.KeyPEM(t), "ca.crt": root.CertPEM()}
}

// TestKind runs each mode on the two real clusters: in the bring-your-own
// modes the user's PKI first (as the local suite makes it), the management
// side from the Helm chart, the workload side from the kustomize profile plus
// relayctl register --secrets-only (where the mode has a token), server and
// agent as pods, three renewals of every renewed certificate as rotated by
// kubelet with zero gaps and breaks (mode 6: the user also replaces the
// agent's client certificate Secret once), the relay-issuer pod killed
// mid-run (where it runs), the server pod restarted, and the secret-leak
// scan. RELAYTLS_KIND_MODES picks modes by name.
func TestKind(t *testing.T) {
	e := setup(t)
	cases := []modeCase{
		{mode: "mtls-self-signed", autoClient: true},
		{mode: "tls-self-signed"},
		{mode: "mtls-byo-ca", autoClient: true},
		{mode: "mtls-byo-client"},
	}
	only := strings.Fields(os.Getenv("RELAYTLS_KIND_MODES"))
	for _, m := range cases {
		if len(only) > 0 && !slices.Contains(only, m.mode) {
			continue
		}
		t.Run(m.mode, func(t *testing.T) {
			// removed pass or fail, so the next mode starts on clean clusters
			t.Cleanup(func() { e.uninstall(t) })
			runMode(t, e, m)
		})
	}
}

// crdDocs are the CustomResourceDefinition documents of a multi-document YAML.
func crdDocs(yamlDocs string) []string {
	var out []string
	for _, d := range strings.Split(yamlDocs, "\n---\n") {
		var head struct{ Kind string }
		if err := yaml.Unmarshal([]byte(d), &head); err == nil && head.Kind == "CustomResourceDefinition" {
			out = append(out, d)
		}
	}
	return out
}

// uninstall removes one mode's installation from both clusters.
func (e *env) uninstall(t *testing.T) {
	e.run(t, nil, e.helm, "--kube-context", e.mgmtCtx, "uninstall", "relaytls", "-n", ns, "--wait", "--ignore-not-found")
	for _, kc := range []string{e.mgmtCtx, e.wlCtx} {
		e.k(t, kc, nil, "delete", "namespace", ns, "--ignore-not-found", "--timeout=3m")
	}
}

func runMode(t *testing.T, e *env, m modeCase) {
	ctx := t.Context()
	mgmtNode := e.prefix + "-mgmt-control-plane"
	mode := m.mode
	hm, err := harness.ModeByName(mode)
	if err != nil {
		t.Fatal(err)
	}
	// Short lives so the run sees three renewals: each renews 2m before a
	// 3m expiry, i.e. every minute.
	const duration, renewBefore = "3m", "2m"
	// The renewed certificates: the chart's server certificate in the
	// self-signed modes, the user's in modes 3 and 6 (renewed as often),
	// the relay-client Certificate where the workload cluster enrolls.
	var certs []harness.Renewed
	waitReady := func() {
		for _, w := range certs {
			if err := harness.WaitCertificateReady(ctx, w.Cluster, w.Certificate, 3*time.Minute); err != nil {
				t.Fatalf("Certificate %s: %v", w.Certificate, err)
			}
		}
	}
	var user *harness.Installation
	if byo(hm) {
		// What the user brings exists before the chart is installed (its
		// preflight checks the Secrets).
		for _, kc := range []string{e.mgmtCtx, e.wlCtx} {
			e.k(t, kc, nil, "create", "namespace", ns)
		}
		user, err = harness.UserMaterial(ctx, harness.Options{T: t, Mode: hm, Mgmt: e.mgmt, Workload: e.wl, RenewEvery: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, user.Renewed...)
		waitReady()
	}

	// Management cluster: the chart, as users install it.
	e.run(t, nil, e.helm, "--kube-context", e.mgmtCtx, "install", "relaytls", "deploy/charts/relaytls",
		"-n", ns, "--create-namespace", "--wait", "--timeout", "5m",
		"--set", "mode="+mode,
		"--set", "pki.server.dnsNames={"+mgmtNode+",relay."+ns+".svc}",
		"--set", "pki.server.duration="+duration, "--set", "pki.server.renewBefore="+renewBefore,
		"--set", "issuer.issuance.service.type=NodePort")
	if !byo(hm) {
		certs = append(certs, harness.Renewed{Cluster: e.mgmt, Certificate: "relaytls-server", Secret: relayv1.ServerSecretName})
		waitReady()
	}
	endpoint := mgmtNode + ":9443" // unused without an issuance endpoint
	if m.autoClient {
		issuancePort := strings.Trim(e.k(t, e.mgmtCtx, nil, "-n", ns, "get", "service", "relay-issuer",
			"-o", "jsonpath={.spec.ports[0].nodePort}"), "'\n ")
		endpoint = mgmtNode + ":" + issuancePort
	}

	// Management server: the sample app with the documented server sidecar.
	sc, vols := e.sidecarSnippet(t, mode, "management", nil)
	e.k(t, e.mgmtCtx, e.appDeployment("relay-server", sc, vols,
		[]string{"--role=server", "--listen=127.0.0.1:9900", "--stats-interval=2s"}), "apply", "-f", "-")
	e.k(t, e.mgmtCtx, nodePortService("relay", "relay-server", 9000, 30900), "apply", "-f", "-")

	// Workload cluster: the kustomize profile, overlaid with this cluster's
	// name, the endpoint and short certificate lives, then register.
	overlay := t.TempDir()
	rel, _ := filepath.Rel(overlay, filepath.Join(e.root, "deploy/profiles", mode, "workload"))
	kust := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
patches:
- target: {kind: ConfigMap, name: relaytls-config}
  patch: |-
    - {op: replace, path: /data/cluster, value: wl}
    - {op: replace, path: /data/endpoint, value: "%s"}
`, rel, endpoint)
	serverNamePatch := ""
	if byo(hm) {
		serverNamePatch = "\n    - {op: add, path: /spec/remote/serverName, value: " + harness.ServerName + "}"
	}
	if m.autoClient {
		kust += fmt.Sprintf(`- target: {group: relaytls.io, kind: RelayIssuer, name: relay}
  patch: |-
    - {op: replace, path: /spec/remote/cluster, value: wl}
    - {op: replace, path: /spec/remote/endpoint, value: "%s"}%s
- target: {group: cert-manager.io, kind: Certificate, name: relay-client}
  patch: |-
    - {op: replace, path: /spec/commonName, value: wl}
    - {op: replace, path: /spec/dnsNames, value: [wl]}
    - {op: replace, path: /spec/duration, value: %s}
    - {op: replace, path: /spec/renewBefore, value: %s}
`, endpoint, serverNamePatch, duration, renewBefore)
	}
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kust), 0o644); err != nil {
		t.Fatal(err)
	}
	rendered := e.run(t, nil, e.kubectl, "kustomize", overlay)
	// As a kubectl user must (Argo CD orders it with sync waves): the CRDs
	// first, Established, then everything, or the RelayIssuer has no kind
	// to map to ("ensure CRDs are installed first").
	crds := crdDocs(rendered)
	if len(crds) == 0 {
		t.Fatalf("the %s workload profile has no CRDs", mode)
	}
	e.k(t, e.wlCtx, []byte(strings.Join(crds, "\n---\n")), "apply", "--server-side", "-f", "-")
	e.k(t, e.wlCtx, nil, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/relayissuers.relaytls.io", "crd/relayclusterissuers.relaytls.io", "crd/relayclusters.relaytls.io")
	e.k(t, e.wlCtx, []byte(rendered), "apply", "--server-side", "-f", "-")
	if hm.UsesToken() {
		reg := []string{"register", "--secrets-only", "--cluster", "wl",
			"--mgmt-context", e.mgmtCtx, "--remote-context", e.wlCtx,
			"--mgmt-kubeconfig", e.kubeconfig, "--remote-kubeconfig", e.kubeconfig}
		if m.autoClient {
			reg = append(reg, "--endpoint", endpoint)
		}
		e.run(t, nil, e.relayctl, reg...)
	}
	if m.autoClient {
		if err := harness.WaitCertificateReady(ctx, e.wl, "relay-client", 4*time.Minute); err != nil {
			t.Fatalf("workload Certificate relay-client: %v", err)
		}
		certs = append(certs, harness.Renewed{Cluster: e.wl, Certificate: "relay-client", Secret: relayv1.ClientSecretName})
	}
	if hm.Number == 6 {
		// The agent's own certificate from the user's PKI, no issuer.
		if err := harness.PutSecret(ctx, e.wl, relayv1.BYOClientSecretName, userClientSecret(t, user.UserRoot, "wl")); err != nil {
			t.Fatal(err)
		}
	}

	// Agent: the sample app with the documented agent sidecar.
	set := map[string]string{"server-addr": mgmtNode + ":30900", "cluster": "wl"}
	if byo(hm) {
		set["server-name"] = harness.ServerName
	}
	sc, vols = e.sidecarSnippet(t, mode, "workload", set)
	e.k(t, e.wlCtx, e.appDeployment("relay-agent", sc, vols,
		[]string{"--role=agent", "--connect=127.0.0.1:9900", "--stats-interval=2s"}), "apply", "-f", "-")
	e.k(t, e.mgmtCtx, nil, "-n", ns, "rollout", "status", "deploy/relay-server", "--timeout=3m")
	e.k(t, e.wlCtx, nil, "-n", ns, "rollout", "status", "deploy/relay-agent", "--timeout=3m")

	// Three renewals of every renewed certificate, as kubelet rotates them
	// into the pods; after the first one the relay-issuer pod is killed
	// (where it runs) and, in mode 6, the user replaces the agent's client
	// certificate Secret with a new certificate and key.
	if len(certs) == 0 {
		t.Fatalf("mode %s renews no certificate: nothing to rotate", mode)
	}
	start := map[string]int{}
	for _, w := range certs {
		r, err := revision(ctx, w.Cluster, w.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		start[w.Certificate] = r
	}
	acted := false
	err = wait.PollUntilContextTimeout(ctx, 5*time.Second, 8*time.Minute, false, func(ctx context.Context) (bool, error) {
		done := true
		for _, w := range certs {
			r, err := revision(ctx, w.Cluster, w.Certificate)
			if err != nil {
				return false, err
			}
			if r-start[w.Certificate] >= 1 && !acted {
				acted = true
				if mgmtIssuer(hm) {
					t.Logf("killing the relay-issuer pod after the first renewal of %s", w.Certificate)
					e.k(t, e.mgmtCtx, nil, "-n", ns, "delete", "pod", "-l", "app.kubernetes.io/name=relay-issuer", "--wait=false")
				}
				if hm.Number == 6 {
					t.Logf("replacing the agent's client certificate Secret %s after the first renewal of %s", relayv1.BYOClientSecretName, w.Certificate)
					if err := harness.PutSecret(ctx, e.wl, relayv1.BYOClientSecretName, userClientSecret(t, user.UserRoot, "wl")); err != nil {
						return false, err
					}
				}
			}
			if r-start[w.Certificate] < 3 {
				done = false
			}
		}
		return done, nil
	})
	if err != nil {
		for _, w := range certs {
			r, _ := revision(ctx, w.Cluster, w.Certificate)
			t.Logf("%s: revision %d (started at %d)", w.Certificate, r, start[w.Certificate])
		}
		t.Fatalf("three renewals of every certificate: %v", err)
	}
	// kubelet needs up to its sync period (10s here) to project the last one
	time.Sleep(25 * time.Second)
	for _, d := range []struct{ kctx, app string }{{e.mgmtCtx, "relay-server"}, {e.wlCtx, "relay-agent"}} {
		s := e.stats(t, d.kctx, d.app)
		t.Logf("%s counters after the renewals: %v", d.app, s)
		if s["gaps"] != 0 || s["breaks"] != 0 || s["received"] == 0 {
			t.Errorf("%s: gaps %d, breaks %d, received %d; want 0, 0, > 0", d.app, s["gaps"], s["breaks"], s["received"])
		}
	}
	// Each sidecar whose certificate cert-manager renews reloads once per
	// renewal kubelet projects (three), after its first load. A tls-mode
	// agent holds only the root and its token, which do not rotate, and
	// mode 5's server the user's certificate: they load once. Mode 6's
	// agent loads its first client certificate and the user's replacement.
	server, agent := 1.0, 1.0
	for _, w := range certs {
		if w.Cluster == e.mgmt {
			server = 3
		} else {
			agent = 3
		}
	}
	if hm.Number == 6 {
		agent = 2
	}
	for _, d := range []struct {
		c    provider.Cluster
		app  string
		want float64
	}{{e.mgmt, "relay-server", server}, {e.wl, "relay-agent", agent}} {
		n, err := sidecarMetric(ctx, d.c, d.app, "relay_sidecar_credential_reloads_total", `result="success"`)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s sidecar: %v successful credential reloads (want >= %v)", d.app, n, d.want)
		if n < d.want {
			t.Errorf("%s sidecar reloaded its credentials %v times; want >= %v (one per renewal kubelet projected)", d.app, n, d.want)
		}
	}
	// No lost or doubled certificate across the issuer's restart: every
	// revision of each renewed Certificate has exactly one CertificateRequest.
	for _, w := range certs {
		var crs cmapi.CertificateRequestList
		if err := w.Cluster.Client().List(ctx, &crs, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		perRev := map[string]int{}
		for _, cr := range crs.Items {
			if cr.Annotations[cmapi.CertificateNameKey] == w.Certificate {
				perRev[cr.Annotations[cmapi.CertificateRequestRevisionAnnotationKey]]++
			}
		}
		if len(perRev) == 0 {
			t.Errorf("%s: no CertificateRequest kept", w.Certificate)
		}
		for rev, n := range perRev {
			if n != 1 {
				t.Errorf("%s revision %s has %d CertificateRequests; want 1", w.Certificate, rev, n)
			}
		}
	}

	// The server pod restarted: the agent reconnects and new tunnels work.
	before := e.stats(t, e.wlCtx, "relay-agent")
	e.k(t, e.mgmtCtx, nil, "-n", ns, "rollout", "restart", "deploy/relay-server")
	e.k(t, e.mgmtCtx, nil, "-n", ns, "rollout", "status", "deploy/relay-server", "--timeout=3m")
	err = wait.PollUntilContextTimeout(ctx, 3*time.Second, 2*time.Minute, false, func(context.Context) (bool, error) {
		s := e.stats(t, e.wlCtx, "relay-agent")
		return s["streams"] > before["streams"] && s["received"] > before["received"], nil
	})
	if err != nil {
		t.Fatalf("after the server pod restarted the agent did not open a new working stream: before %v, now %v", before, e.stats(t, e.wlCtx, "relay-agent"))
	}
	// The restarted server's counters line comes every 2s: wait for one
	// that shows the agent's heartbeats arriving.
	var srv map[string]int64
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, 30*time.Second, true, func(context.Context) (bool, error) {
		srv = e.stats(t, e.mgmtCtx, "relay-server")
		return srv["received"] > 0, nil
	})
	if err != nil {
		t.Errorf("the restarted server received nothing in 30s: %v", srv)
	}

	// The secret-leak scan: every pod log of both clusters, Events and conditions.
	for _, kc := range []string{e.mgmtCtx, e.wlCtx} {
		pods := e.k(t, kc, nil, "get", "pods", "-A", "-o", "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}")
		for _, p := range strings.Fields(pods) {
			nsName := strings.SplitN(p, "/", 2)
			out, err := e.tryK(t, kc, "-n", nsName[0], "logs", nsName[1], "--all-containers", "--prefix")
			if err != nil {
				if strings.Contains(out, "NotFound") {
					// listed while terminating (the restarted server's old pod) and gone now
					t.Logf("pod %s went away before its logs were read", p)
					continue
				}
				t.Fatalf("kubectl logs %s: %v\n%s", p, err, out)
			}
			f := filepath.Join(e.logDir, kc+"_"+nsName[0]+"_"+nsName[1]+".log")
			if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var s harness.Sensitive
	if err := s.Collect(ctx, []provider.Cluster{e.mgmt, e.wl}, nil); err != nil {
		t.Fatal(err)
	}
	if s.Len() == 0 {
		t.Fatal("the leak scan found no token or key to look for")
	}
	leaks, err := s.Leaks(ctx, e.logDir, []provider.Cluster{e.mgmt, e.wl})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaks {
		t.Errorf("leak: %s", l)
	}
}
