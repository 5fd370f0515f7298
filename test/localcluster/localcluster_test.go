package localcluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/cert-manager/cert-manager/pkg/util/pki"

	"github.com/relaytls/relaytls/test/localcluster"
	"github.com/relaytls/relaytls/test/poll"
)

// waitTimeout bounds every wait for cert-manager to act.
const waitTimeout = 30 * time.Second

// TestCluster exercises one cluster: issuance through cert-manager's real
// controllers, its webhook, and approval under per-identity RBAC.
func TestCluster(t *testing.T) {
	c := localcluster.Start(t, options("single"))
	ctx := t.Context()
	ns := must(c.NewNamespace(ctx, "issue-"))(t)

	t.Run("CA chain from a SelfSigned issuer", func(t *testing.T) {
		createSelfSignedCA(t, c, ns, "root")
		apply(t, c, fmt.Sprintf(`
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: ca, namespace: %[1]s}
spec:
  ca: {secretName: root}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: leaf, namespace: %[1]s}
spec:
  secretName: leaf
  dnsNames: [leaf.example.com]
  usages: [client auth]
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {name: ca, kind: Issuer}
`, ns))
		waitCertificateReady(t, c, ns, "leaf")

		leafSecret := getSecret(t, c, ns, "leaf")
		leaf := parseCert(t, leafSecret.Data[corev1.TLSCertKey])
		roots := x509.NewCertPool()
		roots.AddCert(parseCert(t, getSecret(t, c, ns, "root").Data[corev1.TLSCertKey]))
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "leaf.example.com", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("leaf does not verify against the root: %v", err)
		}
		if got := string(leafSecret.Data["ca.crt"]); got != string(getSecret(t, c, ns, "root").Data[corev1.TLSCertKey]) {
			t.Errorf("leaf Secret's ca.crt is not the root certificate")
		}
	})

	// alice may create and update CertificateRequests and their status in ns
	// but approve no signer.
	apply(t, c, fmt.Sprintf(`
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: requester, namespace: %[1]s}
rules:
- apiGroups: [cert-manager.io]
  resources: [certificaterequests, certificaterequests/status]
  verbs: [create, get, list, watch, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: requester}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
`, ns))
	_, aliceKubeconfig := must2(c.AddUser("alice", "requesters"))(t)
	// The kubeconfig file is what out-of-process components get; use it.
	alice := newClient(t, c, must(clientcmd.BuildConfigFromFlags("", aliceKubeconfig))(t))
	admin := newClient(t, c, must(clientcmd.BuildConfigFromFlags("", c.KubeconfigPath))(t))
	if err := admin.List(ctx, &corev1.NamespaceList{}); err != nil {
		t.Fatalf("the admin kubeconfig %s does not work: %v", c.KubeconfigPath, err)
	}

	t.Run("webhook sets spec.username and keeps the spec immutable", func(t *testing.T) {
		cr := newRequest(t, ns, "alice-request", cmmeta.IssuerReference{Name: "ca", Kind: "Issuer", Group: "cert-manager.io"})
		if err := alice.Create(ctx, cr); err != nil {
			t.Fatalf("alice cannot create a CertificateRequest: %v", err)
		}
		if cr.Spec.Username != "alice" {
			t.Errorf("spec.username = %q, want alice (set by the mutating webhook)", cr.Spec.Username)
		}
		if !contains(cr.Spec.Groups, "requesters") {
			t.Errorf("spec.groups = %v, want it to include requesters", cr.Spec.Groups)
		}

		// A patch, so the controllers' concurrent status updates cannot
		// turn the answer into a conflict.
		changed := cr.DeepCopy()
		changed.Spec.IsCA = true
		err := c.Client.Patch(ctx, changed, client.MergeFrom(cr))
		if err == nil || !strings.Contains(err.Error(), "webhook.cert-manager.io") {
			t.Fatalf("changing a CertificateRequest's spec as cluster-admin: got %v, want a denial by cert-manager's webhook", err)
		}
		t.Logf("spec change refused as expected: %v", err)
	})

	t.Run("approval needs approve on the signer", func(t *testing.T) {
		// A stand-in for relaytls's RelayIssuer CRD: the webhook resolves the
		// issuer kind through discovery to build the signer name.
		apply(t, c, `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: relayissuers.relaytls.io}
spec:
  group: relaytls.io
  scope: Namespaced
  names: {kind: RelayIssuer, plural: relayissuers, singular: relayissuer, listKind: RelayIssuerList}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`)
		relayRef := cmmeta.IssuerReference{Name: "relay", Kind: "RelayIssuer", Group: "relaytls.io"}
		before := newRequest(t, ns, "relay-before-grant", relayRef)
		if err := alice.Create(ctx, before); err != nil {
			t.Fatal(err)
		}

		// alice has update on certificaterequests/status but no approve.
		err := approve(ctx, alice, before, false)
		wantDenied(t, "alice", err)

		// cert-manager's own identity, with the stand-in for its chart's
		// RBAC, may approve cert-manager.io signers only.
		cmConfig, _ := must2(c.AddServiceAccount(localcluster.CertManagerNamespace, localcluster.CertManagerServiceAccount))(t)
		certManager := newClient(t, c, cmConfig)
		wantDenied(t, "cert-manager without relaytls's ClusterRole", approve(ctx, certManager, before, true))

		// The ClusterRole relaytls ships (deploy/rbac) for cert-manager's
		// approver, here inline.
		apply(t, c, `
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: relaytls-approver}
rules:
- apiGroups: [cert-manager.io]
  resources: [signers]
  verbs: [approve]
  resourceNames: ["relayissuers.relaytls.io/*", "relayclusterissuers.relaytls.io/*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: relaytls-approver}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: relaytls-approver}
subjects:
- {kind: ServiceAccount, namespace: cert-manager, name: cert-manager}
`)
		// The webhook caches authorization answers for a second; wait until
		// it allows the approval (dry run), then let the real approver act.
		waitFor(t, "cert-manager's identity to be allowed to approve relay requests", func(ctx context.Context) (bool, error) {
			return approve(ctx, certManager, before, true) == nil, nil
		})
		after := newRequest(t, ns, "relay-after-grant", relayRef)
		if err := alice.Create(ctx, after); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "cert-manager's approver to approve the relay request", func(ctx context.Context) (bool, error) {
			if err := c.Client.Get(ctx, client.ObjectKeyFromObject(after), after); err != nil {
				return false, err
			}
			return condition(after, cmapi.CertificateRequestConditionApproved) == cmmeta.ConditionTrue, nil
		})
		if alice := cmapiCondition(after, cmapi.CertificateRequestConditionApproved); alice.Reason != "cert-manager.io" {
			t.Errorf("Approved reason = %q, want cert-manager.io (the approver's)", alice.Reason)
		}
	})
}

// TestApply uses a bare control plane (no cert-manager), which also shows
// that option works.
func TestApply(t *testing.T) {
	opts := options("apply")
	opts.WithoutCertManager = true
	c := localcluster.Start(t, opts)
	ctx := t.Context()
	ns := must(c.NewNamespace(ctx, "apply-"))(t)

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), fmt.Sprintf(`
apiVersion: v1
kind: ConfigMap
metadata: {name: one, namespace: %[1]s}
data: {k: v1}
---
# an empty document and a comment are skipped
---
apiVersion: v1
kind: ConfigMap
metadata: {name: two, namespace: %[1]s}
`, ns))
	writeFile(t, filepath.Join(dir, "b.yml"), `{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "apply-test"}}`)
	writeFile(t, filepath.Join(dir, "notes.txt"), "not a manifest")
	if err := c.ApplyFiles(ctx, dir); err != nil {
		t.Fatal(err)
	}
	// Applying again with a change updates in place.
	apply(t, c, fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one, namespace: %s}\ndata: {k: v2}\n", ns))
	cm := &corev1.ConfigMap{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "one"}, cm); err != nil || cm.Data["k"] != "v2" {
		t.Fatalf("ConfigMap one: %v, data %v, want k=v2", err, cm.Data)
	}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "two"}, cm); err != nil {
		t.Fatal(err)
	}

	var issuers cmapi.IssuerList
	if err := c.Client.List(ctx, &issuers); err == nil {
		t.Errorf("cert-manager's API is served by a cluster started WithoutCertManager")
	}

	err := c.Apply(ctx, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lost}\n"))
	if err == nil || !strings.Contains(err.Error(), "no metadata.namespace") {
		t.Errorf("applying a namespaced object without namespace: got %v, want an error naming metadata.namespace", err)
	}
	err = c.Apply(ctx, []byte("kind: ConfigMap\nmetadata: {name: x}\n"))
	if err == nil || !strings.Contains(err.Error(), "no apiVersion or kind") {
		t.Errorf("applying a document without apiVersion: got %v", err)
	}
}

// TestTwoClusters starts two clusters in one process, as cross-cluster tests
// do, and issues a certificate in each at the same time.
func TestTwoClusters(t *testing.T) {
	clusters := localcluster.StartAll(t, options("management"), options("workload"))
	management, workload := clusters[0], clusters[1]
	if management.Config.Host == workload.Config.Host {
		t.Fatalf("both clusters serve at %s", management.Config.Host)
	}
	var wg sync.WaitGroup
	for _, c := range []*localcluster.Cluster{management, workload} {
		ns := must(c.NewNamespace(t.Context(), "two-"))(t)
		wg.Go(func() {
			t.Run(c.Name, func(t *testing.T) {
				createSelfSignedCA(t, c, ns, c.Name+"-root")
				cert := parseCert(t, getSecret(t, c, ns, c.Name+"-root").Data[corev1.TLSCertKey])
				if cert.Subject.CommonName != c.Name+"-root" {
					t.Errorf("CN = %q, want %s-root", cert.Subject.CommonName, c.Name)
				}
			})
		})
	}
	wg.Wait()
	// Each cluster holds only its own Certificate.
	var certs cmapi.CertificateList
	if err := workload.Client.List(t.Context(), &certs); err != nil {
		t.Fatal(err)
	}
	if len(certs.Items) != 1 || certs.Items[0].Name != "workload-root" {
		t.Errorf("workload cluster has Certificates %v, want only workload-root", names(certs.Items))
	}
}

// TestMissingBinariesFail runs this test binary again with an empty binary
// directory: the cluster test must fail (not skip) and say what to do.
func TestMissingBinariesFail(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestTwoClusters$", "-test.v")
	cmd.Env = append(os.Environ(), localcluster.BinaryDirEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("the test binary did not fail without kube binaries (err %v):\n%s", err, out)
	}
	for _, want := range []string{"--- FAIL: TestTwoClusters", "make kube-binaries"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Errorf("a test skipped instead of failing:\n%s", out)
	}
}

// options names a cluster; $LOCALCLUSTER_TEST_V sets the log verbosity.
func options(name string) localcluster.Options {
	v, _ := strconv.Atoi(os.Getenv("LOCALCLUSTER_TEST_V"))
	return localcluster.Options{Name: name, LogVerbosity: v}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func createSelfSignedCA(t *testing.T, c *localcluster.Cluster, ns, name string) {
	t.Helper()
	apply(t, c, fmt.Sprintf(`
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: selfsigned, namespace: %[1]s}
spec:
  selfSigned: {}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  isCA: true
  commonName: %[2]s
  secretName: %[2]s
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {name: selfsigned, kind: Issuer}
`, ns, name))
	waitCertificateReady(t, c, ns, name)
}

func waitCertificateReady(t *testing.T, c *localcluster.Cluster, ns, name string) {
	t.Helper()
	begin := time.Now()
	if _, err := c.WaitForCertificateReady(t.Context(), ns, name, waitTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("Certificate %s/%s Ready in %s after %s", ns, name, c.Name, time.Since(begin).Round(time.Millisecond))
}

// waitFor polls cond until it holds, fails t after waitTimeout and shows the
// last error.
func waitFor(t *testing.T, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	begin := time.Now()
	poll.EventuallyEvery(t, 50*time.Millisecond, waitTimeout, what, func(ctx context.Context) (bool, string, error) {
		ok, err := cond(ctx)
		return ok, "", err
	})
	t.Logf("%s: %s", what, time.Since(begin).Round(time.Millisecond))
}

// approve sets the Approved condition on cr as cl, optionally as a dry run.
func approve(ctx context.Context, cl client.Client, cr *cmapi.CertificateRequest, dryRun bool) error {
	cr = cr.DeepCopy()
	cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{
		Type: cmapi.CertificateRequestConditionApproved, Status: cmmeta.ConditionTrue,
		Reason: "Test", Message: "approved by the test", LastTransitionTime: new(metav1.Now()),
	})
	opts := &client.SubResourceUpdateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return cl.Status().Update(ctx, cr, opts)
}

func wantDenied(t *testing.T, who string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s approved a relay request, want a denial", who)
	}
	if !apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "does not have permissions to set approved/denied conditions") {
		t.Fatalf("%s: got %v, want the webhook's approval denial", who, err)
	}
	t.Logf("%s: denied as expected: %v", who, err)
}

func newRequest(t *testing.T, ns, name string, ref cmmeta.IssuerReference) *cmapi.CertificateRequest {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))(t)
	der := must(x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
	}, key))(t)
	return &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: cmapi.CertificateRequestSpec{
			Request:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			IssuerRef: ref,
			Usages:    []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageClientAuth},
		},
	}
}

func condition(cr *cmapi.CertificateRequest, typ cmapi.CertificateRequestConditionType) cmmeta.ConditionStatus {
	return cmapiCondition(cr, typ).Status
}

func cmapiCondition(cr *cmapi.CertificateRequest, typ cmapi.CertificateRequestConditionType) cmapi.CertificateRequestCondition {
	if cond := apiutil.GetCertificateRequestCondition(cr, typ); cond != nil {
		return *cond
	}
	return cmapi.CertificateRequestCondition{}
}

func apply(t *testing.T, c *localcluster.Cluster, manifest string) {
	t.Helper()
	if err := c.Apply(t.Context(), []byte(manifest)); err != nil {
		t.Fatal(err)
	}
}

func newClient(t *testing.T, c *localcluster.Cluster, cfg *rest.Config) client.Client {
	t.Helper()
	return must(client.New(cfg, client.Options{Scheme: c.Scheme}))(t)
}

func getSecret(t *testing.T, c *localcluster.Cluster, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := c.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func parseCert(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()
	return must(pki.DecodeX509CertificateBytes(pemData))(t)
}

func names(certs []cmapi.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, c.Namespace+"/"+c.Name)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func must2[A, B any](a A, b B, err error) func(*testing.T) (A, B) {
	return func(t *testing.T) (A, B) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}
