package render_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/loader"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/kube"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/deploy/render"
	"github.com/relaytls/relaytls/test/localcluster"
)

// helmCLI runs Helm's install, upgrade and uninstall actions (the code of
// `helm install` etc., with the CLI's defaults: server-side apply, no
// --wait) against a real API server, one fresh client per command as
// separate invocations have.
type helmCLI struct {
	t          *testing.T
	kubeconfig string
	cacheDir   string
}

func (h helmCLI) config(ns string) *action.Configuration {
	h.t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &h.kubeconfig
	flags.Namespace = &ns
	flags.CacheDir = &h.cacheDir
	cfg := action.NewConfiguration()
	if err := cfg.Init(flags, ns, "secret"); err != nil {
		h.t.Fatal(err)
	}
	return cfg
}

type helmFlags struct {
	skipCRDs, takeOwnership bool
}

func (h helmCLI) install(ch *chartv2.Chart, ns string, vals map[string]any, f helmFlags) error {
	i := action.NewInstall(h.config(ns))
	i.ReleaseName, i.Namespace, i.CreateNamespace = "relaytls", ns, true
	i.ServerSideApply = true
	i.WaitStrategy = kube.HookOnlyStrategy
	i.Timeout = time.Minute
	i.SkipCRDs, i.TakeOwnership = f.skipCRDs, f.takeOwnership
	_, err := i.RunWithContext(h.t.Context(), ch, vals)
	return err
}

func (h helmCLI) upgrade(ch *chartv2.Chart, ns string, vals map[string]any, f helmFlags) error {
	u := action.NewUpgrade(h.config(ns))
	u.Namespace = ns
	u.WaitStrategy = kube.HookOnlyStrategy
	u.Timeout = time.Minute
	u.TakeOwnership = f.takeOwnership
	_, err := u.RunWithContext(h.t.Context(), "relaytls", ch, vals)
	return err
}

func (h helmCLI) uninstall(ns string) error {
	u := action.NewUninstall(h.config(ns))
	u.WaitStrategy = kube.HookOnlyStrategy
	u.Timeout = time.Minute
	_, err := u.Run("relaytls")
	return err
}

// TestHelmInstallCRDs installs, upgrades and uninstalls the chart with
// Helm's own code on a real API server and checks the CRD story the chart
// README tells: the default install works and installs the CRDs from crds/
// (which later upgrades leave alone); templated CRDs alone (crds.enabled
// with --skip-crds) fail a fresh install, which is why crds/ stays and
// crds.enabled is off by default; crds.enabled with --take-ownership moves
// an existing release's CRDs under Helm, and the next upgrade brings them
// up to date; crds.keep decides whether `helm uninstall` deletes them.
func TestHelmInstallCRDs(t *testing.T) {
	cmDir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("finding cert-manager's module: %v", err)
	}
	o := clusterOptions("helm")
	o.WithoutCertManager = true // the chart's Certificates need cert-manager's kinds, not its controllers
	o.CRDDirs = []string{filepath.Join(strings.TrimSpace(string(cmDir)), "deploy", "crds")}
	c := localcluster.Start(t, o)
	h := helmCLI{t: t, kubeconfig: c.KubeconfigPath, cacheDir: t.TempDir()}
	ctx := t.Context()

	load := func() *chartv2.Chart {
		t.Helper()
		ch, err := loader.Load(render.ChartDir())
		if err != nil {
			t.Fatal(err)
		}
		chv2 := ch.(*chartv2.Chart)
		// The test API server is built without version ldflags and says
		// v0.0.0-master, which the chart's kubeVersion (>=1.29) refuses.
		chv2.Metadata.KubeVersion = ""
		return chv2
	}
	// old is the chart as an earlier release would ship it: its RelayIssuer
	// CRD in crds/ has no printer columns.
	old := load()
	for _, f := range old.Files {
		if f.Name != "crds/relaytls.io_relayissuers.yaml" {
			continue
		}
		objs, err := render.Decode(f.Data)
		if err != nil {
			t.Fatal(err)
		}
		vs, _, _ := unstructured.NestedSlice(objs[0].Object, "spec", "versions")
		delete(vs[0].(map[string]any), "additionalPrinterColumns")
		_ = unstructured.SetNestedSlice(objs[0].Object, vs, "spec", "versions")
		if f.Data, err = render.Encode(objs); err != nil {
			t.Fatal(err)
		}
	}
	current := load()
	crdNames := []string{"relayissuers.relaytls.io", "relayclusterissuers.relaytls.io", "relayclusters.relaytls.io"}
	getCRD := func(name string) (*apiextensionsv1.CustomResourceDefinition, error) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		return crd, c.Client.Get(ctx, client.ObjectKey{Name: name}, crd)
	}
	columns := func() int {
		t.Helper()
		crd, err := getCRD("relayissuers.relaytls.io")
		if err != nil {
			t.Fatal(err)
		}
		return len(crd.Spec.Versions[0].AdditionalPrinterColumns)
	}
	relayIssuer := func(ns string) {
		t.Helper()
		ri := &unstructured.Unstructured{}
		ri.SetGroupVersionKind(relayv1.GroupVersion.WithKind("RelayIssuer"))
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "relay"}, ri); err != nil {
			t.Fatalf("the chart's RelayIssuer in %s: %v", ns, err)
		}
	}
	crdsGone := func() {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			for _, n := range crdNames {
				if _, err := getCRD(n); !apierrors.IsNotFound(err) {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatal("the CRDs are still there")
		}
	}
	mode := map[string]any{"mode": "mtls-self-signed"}
	withCRDs := func(keep bool) map[string]any {
		return map[string]any{"mode": "mtls-self-signed", "crds": map[string]any{"enabled": true, "keep": keep}}
	}

	// Templated CRDs alone: Helm maps the RelayIssuer before it creates the
	// CRD that serves it.
	err = h.install(current, "only-templates", withCRDs(true), helmFlags{skipCRDs: true})
	if err == nil || !strings.Contains(err.Error(), "RelayIssuer") {
		t.Fatalf("a fresh install with crds.enabled and --skip-crds: err = %v, want Helm's refusal to map RelayIssuer", err)
	}
	t.Logf("templated CRDs alone, as expected: %v", err)
	if err := h.uninstall("only-templates"); err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatal(err)
	}
	crdsGone()

	// The default install from an older chart: crds/ installs the CRDs, not
	// owned by the release.
	if err := h.install(old, "a", mode, helmFlags{}); err != nil {
		t.Fatalf("default install: %v", err)
	}
	relayIssuer("a")
	for _, n := range crdNames {
		crd, err := getCRD(n)
		if err != nil {
			t.Fatalf("the default install did not install CRD %s: %v", n, err)
		}
		if rel := crd.Annotations["meta.helm.sh/release-name"]; rel != "" {
			t.Errorf("CRD %s from crds/ belongs to release %q", n, rel)
		}
	}
	if n := columns(); n != 0 {
		t.Fatalf("the older chart's CRD has %d printer columns", n)
	}
	// Upgrading with the defaults leaves crds/ alone.
	if err := h.upgrade(current, "a", mode, helmFlags{}); err != nil {
		t.Fatalf("default upgrade: %v", err)
	}
	if n := columns(); n != 0 {
		t.Fatalf("a default upgrade changed the CRD (%d printer columns); Helm never upgrades crds/", n)
	}
	// Switching to crds.enabled needs --take-ownership: the CRDs exist
	// without the release's ownership.
	if err := h.upgrade(current, "a", withCRDs(true), helmFlags{}); err == nil || !strings.Contains(err.Error(), "CustomResourceDefinition") {
		t.Fatalf("upgrade to crds.enabled without --take-ownership: err = %v, want Helm's ownership conflict on the CRDs", err)
	}
	if err := h.upgrade(current, "a", withCRDs(true), helmFlags{takeOwnership: true}); err != nil {
		t.Fatalf("upgrade to crds.enabled with --take-ownership: %v", err)
	}
	if n := columns(); n == 0 {
		t.Fatal("helm upgrade with crds.enabled did not upgrade the RelayIssuer CRD")
	}
	for _, n := range crdNames {
		crd, _ := getCRD(n)
		if crd.Annotations["meta.helm.sh/release-name"] != "relaytls" || crd.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s after the upgrade: annotations %v, want the release's and helm.sh/resource-policy: keep", n, crd.Annotations)
		}
	}
	relayIssuer("a")
	// crds.keep (default): uninstall leaves the CRDs.
	if err := h.uninstall("a"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // a deletion would have been issued by now
	for _, n := range crdNames {
		if crd, err := getCRD(n); err != nil || crd.DeletionTimestamp != nil {
			t.Fatalf("helm uninstall with crds.keep removed CRD %s (%v)", n, err)
		}
	}

	// A fresh install with crds.enabled and --take-ownership (crds/ creates
	// the CRDs first, the templates adopt them); crds.keep=false lets
	// uninstall delete them.
	if err := h.install(current, "b", withCRDs(false), helmFlags{takeOwnership: true}); err != nil {
		t.Fatalf("install with crds.enabled and --take-ownership: %v", err)
	}
	relayIssuer("b")
	crd, _ := getCRD("relayissuers.relaytls.io")
	if _, ok := crd.Annotations["helm.sh/resource-policy"]; ok {
		t.Errorf("crds.keep=false, but the CRD has helm.sh/resource-policy")
	}
	if err := h.uninstall("b"); err != nil {
		t.Fatal(err)
	}
	crdsGone()

	// The fresh default install, as a user runs it (the kind suite does).
	if err := h.install(current, "c", mode, helmFlags{}); err != nil {
		t.Fatalf("fresh default install: %v", err)
	}
	relayIssuer("c")
}
