package render_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/relaytls/relaytls/deploy/render"
	"github.com/relaytls/relaytls/test/localcluster"
)

// chartConfig is one chart configuration that is rendered, checked and
// applied.
type chartConfig struct {
	name   string
	values map[string]any
	check  func(t *testing.T, r *render.Rendered)
}

func chartConfigs() []chartConfig {
	var out []chartConfig
	for _, mode := range render.Modes {
		for _, role := range render.Roles {
			v := render.ProfileValues(mode, role)
			out = append(out, chartConfig{name: mode + "-" + role, values: v})
		}
	}
	return append(out,
		chartConfig{name: "digest-and-telemetry", values: map[string]any{
			"mode": "mtls-self-signed", "preflight": map[string]any{"enabled": false},
			"issuer":    map[string]any{"image": map[string]any{"digest": "sha256:" + strings.Repeat("ab", 32)}},
			"telemetry": map[string]any{"enabled": true},
		}, check: func(t *testing.T, r *render.Rendered) {
			d := find(r.Objects, "Deployment", "relay-issuer")
			img, _, _ := unstructured.NestedString(d.Object, "spec", "template", "spec", "containers", "0", "image")
			_ = img
			c := containers(t, d)[0]
			if !strings.Contains(c["image"].(string), "@sha256:abab") {
				t.Errorf("image %v does not use the digest", c["image"])
			}
			if find(r.Objects, "Certificate", "relaytls-telemetry-gateway") == nil {
				t.Error("telemetry enabled but no gateway Certificate")
			}
		}},
		chartConfig{name: "cluster-resource-namespace", values: map[string]any{
			"mode": "mtls-byo-ca", "preflight": map[string]any{"enabled": false},
			"issuer": map[string]any{"clusterResourceNamespace": "relaytls-crn"},
		}, check: func(t *testing.T, r *render.Rendered) {
			n := 0
			for _, o := range r.Objects {
				if o.GetKind() == "Role" && o.GetName() == "relay-issuer" {
					n++
				}
			}
			if n != 2 {
				t.Errorf("%d Roles relay-issuer, want 2 (release namespace and cluster resource namespace)", n)
			}
		}},
		chartConfig{name: "no-waves-no-approver", values: map[string]any{
			"mode": "mtls-self-signed", "preflight": map[string]any{"enabled": false},
			"argocd": map[string]any{"syncWaves": false}, "certManager": map[string]any{"approverRBAC": false},
		}, check: func(t *testing.T, r *render.Rendered) {
			for _, o := range r.Objects {
				if _, ok := o.GetAnnotations()["argocd.argoproj.io/sync-wave"]; ok {
					t.Errorf("%s %s has a sync wave with argocd.syncWaves=false", o.GetKind(), o.GetName())
				}
			}
			if find(r.Objects, "ClusterRole", "relaytls-cert-manager-approver") != nil {
				t.Error("approver ClusterRole rendered with certManager.approverRBAC=false")
			}
		}},
	)
}

func containers(t *testing.T, d *unstructured.Unstructured) []map[string]any {
	t.Helper()
	cs, _, err := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if err != nil || len(cs) == 0 {
		t.Fatalf("Deployment %s has no containers: %v", d.GetName(), err)
	}
	var out []map[string]any
	for _, c := range cs {
		out = append(out, c.(map[string]any))
	}
	return out
}

func str(m map[string]any, path ...string) string {
	s, _, _ := unstructured.NestedString(m, path...)
	return s
}

// checkCommon holds for every configuration.
func checkCommon(t *testing.T, values map[string]any, r *render.Rendered) {
	t.Helper()
	mode, _ := values["mode"].(string)
	role, _ := values["role"].(string)
	if role == "" {
		role = "management"
	}
	runsIssuer := mode == "mtls-self-signed" || mode == "mtls-byo-ca" || (mode == "tls-self-signed" && role == "management")
	for _, o := range r.Objects {
		if o.GetKind() == "Secret" {
			t.Errorf("renders Secret %s: credentials are never chart output", o.GetName())
		}
	}
	d := find(r.Objects, "Deployment", "relay-issuer")
	if (d != nil) != runsIssuer {
		t.Fatalf("mode %s role %s: Deployment present=%v, want %v", mode, role, d != nil, runsIssuer)
	}
	if cm := find(r.Objects, "ConfigMap", "relaytls-config"); cm == nil || str(cm.Object, "data", "mode") != mode {
		t.Errorf("ConfigMap relaytls-config missing or not saying mode %s", mode)
	}
	wantSidecarMode := map[string]string{"insecure": "insecure", "tls-self-signed": "tls", "tls-byo-server": "tls"}[mode]
	if wantSidecarMode == "" {
		wantSidecarMode = "mtls"
	}
	if !strings.Contains(r.Notes, "--mode="+wantSidecarMode) {
		t.Errorf("NOTES.txt sidecar snippet lacks --mode=%s:\n%s", wantSidecarMode, r.Notes)
	}
	if d == nil {
		return
	}
	pod, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec")
	if pod["securityContext"].(map[string]any)["runAsNonRoot"] != true || str(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
		t.Errorf("pod securityContext %v: want runAsNonRoot and seccomp RuntimeDefault", pod["securityContext"])
	}
	if pod["serviceAccountName"] != "relay-issuer" {
		t.Errorf("serviceAccountName %v", pod["serviceAccountName"])
	}
	c := containers(t, d)[0]
	sc := c["securityContext"].(map[string]any)
	drop, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "drop")
	if sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false || len(drop) != 1 || drop[0] != "ALL" || str(sc, "seccompProfile", "type") != "RuntimeDefault" {
		t.Errorf("container securityContext %v: want read-only root, no privilege escalation, ALL capabilities dropped, seccomp RuntimeDefault", sc)
	}
	if str(c, "livenessProbe", "httpGet", "path") != "/healthz" || str(c, "readinessProbe", "httpGet", "path") != "/readyz" {
		t.Errorf("probes: liveness %v readiness %v", c["livenessProbe"], c["readinessProbe"])
	}
	if str(c, "resources", "requests", "cpu") == "" || str(c, "resources", "requests", "memory") == "" {
		t.Errorf("no resource requests: %v", c["resources"])
	}
	env, _, _ := unstructured.NestedSlice(c, "env")
	podNS := false
	for _, e := range env {
		e := e.(map[string]any)
		if e["name"] == "POD_NAMESPACE" && str(e, "valueFrom", "fieldRef", "fieldPath") == "metadata.namespace" {
			podNS = true
		}
	}
	if !podNS {
		t.Errorf("no POD_NAMESPACE from the downward API in %v", env)
	}
	ri := find(r.Objects, "RelayIssuer", "relay")
	if ri == nil {
		t.Fatal("no RelayIssuer relay")
	}
	if role == "management" {
		gen, _, _ := unstructured.NestedBool(ri.Object, "spec", "ca", "generateToken")
		if gen != (mode != "mtls-byo-ca") {
			t.Errorf("mode %s: generateToken=%v", mode, gen)
		}
	} else if str(ri.Object, "spec", "remote", "cluster") == "" {
		t.Errorf("workload RelayIssuer without remote.cluster: %v", ri.Object["spec"])
	}
}

// TestOnCluster renders every chart configuration and every profile and
// applies them with server-side apply to real local control planes with
// cert-manager (its CRDs, controllers and webhook), and runs the chart's
// preflight against a real API server.
func TestOnCluster(t *testing.T) {
	cs := localcluster.StartAll(t, clusterOptions("management"), clusterOptions("workload"))
	mgmt, wl := cs[0], cs[1]
	ctx := t.Context()

	t.Run("chart", func(t *testing.T) {
		for i, cfg := range chartConfigs() {
			t.Run(cfg.name, func(t *testing.T) {
				ns := fmt.Sprintf("chart-%d", i)
				r, err := render.Chart(render.ChartDir(), render.ChartOptions{Namespace: ns, Values: cfg.values})
				if err != nil {
					t.Fatal(err)
				}
				checkCommon(t, cfg.values, r)
				if cfg.check != nil {
					cfg.check(t, r)
				}
				c := mgmt
				if cfg.values["role"] == "workload" {
					c = wl
				}
				crds, err := render.Encode(r.CRDs)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Apply(ctx, crds); err != nil {
					t.Fatalf("applying the chart's CRDs: %v", err)
				}
				for _, n := range []string{ns, "relaytls-crn"} {
					if err := c.CreateNamespace(ctx, n); err != nil && !strings.Contains(err.Error(), "already exists") {
						t.Fatal(err)
					}
				}
				objs, err := render.Encode(r.Objects)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Apply(ctx, objs); err != nil {
					t.Fatalf("server-side apply of %s: %v", cfg.name, err)
				}
			})
		}
	})

	t.Run("profiles", func(t *testing.T) {
		for _, mode := range render.Modes {
			for _, role := range render.Roles {
				t.Run(mode+"/"+role, func(t *testing.T) {
					objs, err := render.Kustomize(render.ProfileDir(mode, role))
					if err != nil {
						t.Fatal(err)
					}
					y, err := render.Encode(objs)
					if err != nil {
						t.Fatal(err)
					}
					c := mgmt
					if role == "workload" {
						c = wl
					}
					if err := c.Apply(ctx, y); err != nil {
						t.Fatalf("server-side apply of profile %s/%s: %v", mode, role, err)
					}
					if role == "management" && (mode == "tls-self-signed" || mode == "mtls-self-signed") {
						checkSelfSignedPKI(t, mgmt, mode)
					}
				})
			}
		}
	})

	t.Run("preflight", func(t *testing.T) {
		testPreflight(t, mgmt)
	})
}

// clusterOptions points localcluster at the repository's bin/kube: this
// module's own go.mod would otherwise be taken for the repository root.
func clusterOptions(name string) localcluster.Options {
	o := localcluster.Options{Name: name}
	if os.Getenv("RELAYTLS_KUBE_BIN") == "" {
		o.BinaryDir = filepath.Join(render.RepoRoot(), "bin", "kube")
	}
	return o
}

// checkSelfSignedPKI waits for cert-manager to build the profile's PKI and
// checks the chain: server (and intermediate) verify against the root.
func checkSelfSignedPKI(t *testing.T, c *localcluster.Cluster, mode string) {
	t.Helper()
	names := []string{"relaytls-root", "relaytls-server"}
	if mode == "mtls-self-signed" {
		names = append(names, "relaytls-intermediate")
	}
	for _, n := range names {
		if _, err := c.WaitForCertificateReady(t.Context(), render.Namespace, n, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	secret := func(name string) *corev1.Secret {
		var s corev1.Secret
		if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: render.Namespace, Name: name}, &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(secret("relay-root-tls-secret").Data["ca.crt"]) {
		t.Fatal("relay-root-tls-secret has no ca.crt")
	}
	leaf := func(name string) *x509.Certificate {
		b, _ := pem.Decode(secret(name).Data["tls.crt"])
		if b == nil {
			t.Fatalf("%s has no tls.crt", name)
		}
		crt, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return crt
	}
	srv := leaf("relay-server-tls-secret")
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "relay.relaytls-system.svc"}); err != nil {
		t.Errorf("server certificate does not verify against the root for relay.relaytls-system.svc: %v", err)
	}
	if mode == "mtls-self-signed" {
		in := leaf("relay-tls-signing-secret")
		if !in.IsCA {
			t.Error("relay-tls-signing-secret is not a CA")
		}
		if _, err := in.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("intermediate does not chain to the root: %v", err)
		}
	}
}

// testPreflight renders with a client, as helm install does: the BYO
// modes name every missing Secret, and pass once they exist; mode 4 refuses
// a token it did not generate.
func testPreflight(t *testing.T, c *localcluster.Cluster) {
	ctx := t.Context()
	ns := "preflight"
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	renderIn := func(values map[string]any) error {
		_, err := render.Chart(render.ChartDir(), render.ChartOptions{Namespace: ns, Values: values, Cluster: c.Config})
		return err
	}
	byo := map[string]any{"mode": "mtls-byo-ca"}
	err := renderIn(byo)
	if err == nil {
		t.Fatal("mode mtls-byo-ca installed with none of its Secrets")
	}
	all := []string{"relay-root-tls-secret", "relay-tls-signing-secret", "relay-server-tls-secret-custom", "relay-identity-token-secret"}
	for _, s := range all {
		if !strings.Contains(err.Error(), ns+"/"+s) {
			t.Errorf("preflight error does not name missing Secret %s: %v", s, err)
		}
	}
	mk := func(name string, ann map[string]string) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann}, Data: map[string][]byte{"token": []byte("x")}}
		if err := c.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	mk(all[0], nil)
	mk(all[3], nil)
	err = renderIn(byo)
	if err == nil {
		t.Fatal("mode mtls-byo-ca installed with two of four Secrets")
	}
	for i, s := range all {
		named := strings.Contains(err.Error(), ns+"/"+s)
		if present := i == 0 || i == 3; named == present {
			t.Errorf("Secret %s present=%v but named in the error=%v: %v", s, present, named, err)
		}
	}
	mk(all[1], nil)
	mk(all[2], nil)
	if err := renderIn(byo); err != nil {
		t.Fatalf("all Secrets exist, preflight still fails: %v", err)
	}
	// Mode 4: relay-identity-token-secret exists but was made by the user.
	err = renderIn(map[string]any{"mode": "mtls-self-signed"})
	if err == nil || !strings.Contains(err.Error(), "refuses a user-supplied token") {
		t.Fatalf("mode mtls-self-signed with a user token Secret: err = %v, want a refusal", err)
	}
	// Workload, mode 4: the root ca.crt and the token must be there.
	err = renderIn(map[string]any{"role": "workload", "mode": "mtls-self-signed", "workload": map[string]any{"cluster": "east", "endpoint": "relay.example.com:9443"}, "secrets": map[string]any{"root": "no-root-here"}})
	if err == nil || !strings.Contains(err.Error(), ns+"/no-root-here") {
		t.Fatalf("workload without its root Secret: err = %v, want it named", err)
	}
	// Without a cluster (helm template, GitOps) nothing is looked up.
	if _, err := render.Chart(render.ChartDir(), render.ChartOptions{Namespace: ns, Values: byo}); err != nil {
		t.Fatalf("rendering without a cluster must not run the preflight: %v", err)
	}
}
