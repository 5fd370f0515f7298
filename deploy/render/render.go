package render

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/engine"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/deploy/profiles"
	"github.com/relaytls/relaytls/internal/manifest"
)

// Modes are the six relay security modes (SPEC section 3), in order; the
// list is the one relayctl and the tests read the profiles by.
var Modes = profiles.Modes

// Roles are the two cluster roles.
var Roles = profiles.Roles

// Namespace is the namespace the profiles install into.
const Namespace = profiles.Namespace

// ReleaseName is the Helm release name the profiles are rendered with.
const ReleaseName = "relaytls"

// RepoRoot is the root of the relaytls repository this package is built in.
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("render: cannot find the source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ChartDir is deploy/charts/relaytls.
func ChartDir() string { return filepath.Join(RepoRoot(), "deploy", "charts", "relaytls") }

// ChartOptions select how a chart is rendered.
type ChartOptions struct {
	// Namespace is the release namespace (default relaytls-system).
	Namespace string
	// ReleaseName (default relaytls).
	ReleaseName string
	// Values are the user-supplied values, merged over values.yaml.
	Values map[string]any
	// Cluster, when set, gives the templates a client (Helm's lookup), as
	// `helm install` has. Nil renders like `helm template`.
	Cluster *rest.Config
}

// Rendered is a rendered chart.
type Rendered struct {
	// CRDs are the chart's crds/ files, as Helm installs them first.
	CRDs []*unstructured.Unstructured
	// Objects are the rendered templates in Helm's install order.
	Objects []*unstructured.Unstructured
	// Tests are the `helm test` hooks (helm.sh/hook: test), which
	// `helm install` and the profiles do not apply.
	Tests []*unstructured.Unstructured
	// Notes is the rendered NOTES.txt.
	Notes string
}

// Chart renders the chart at dir as `helm install` (with a Cluster) or
// `helm template` (without) would: values validated against
// values.schema.json, templates rendered by Helm's engine, manifests in
// Helm's install order.
func Chart(dir string, o ChartOptions) (*Rendered, error) {
	if o.Namespace == "" {
		o.Namespace = Namespace
	}
	if o.ReleaseName == "" {
		o.ReleaseName = ReleaseName
	}
	charter, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("loading chart %s: %w", dir, err)
	}
	ch, ok := charter.(*chartv2.Chart)
	if !ok {
		return nil, fmt.Errorf("chart %s is not an apiVersion v2 chart", dir)
	}
	vals := o.Values
	if vals == nil {
		vals = map[string]any{}
	}
	top, err := chartutil.ToRenderValuesWithSchemaValidation(ch, vals,
		common.ReleaseOptions{Name: o.ReleaseName, Namespace: o.Namespace, Revision: 1, IsInstall: true},
		common.DefaultCapabilities, false)
	if err != nil {
		return nil, err
	}
	eng := engine.Engine{Strict: true}
	if o.Cluster != nil {
		eng = engine.New(o.Cluster)
		eng.Strict = true
	}
	files, err := eng.Render(ch, top)
	if err != nil {
		return nil, err
	}
	out := &Rendered{}
	for name, content := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			out.Notes = content
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("sorting the rendered manifests: %w", err)
	}
	// The only hooks are `helm test` pods: an install and a GitOps apply
	// see the same objects, and the profiles leave the tests out.
	for _, h := range hooks {
		if len(h.Events) != 1 || h.Events[0] != releasev1.HookTest {
			return nil, fmt.Errorf("%s: the chart renders a %v hook; relaytls's chart has only test hooks, so GitOps tools see all of it", h.Path, h.Events)
		}
		objs, err := Decode([]byte(h.Manifest))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.Path, err)
		}
		out.Tests = append(out.Tests, objs...)
	}
	for _, m := range manifests {
		objs, err := Decode([]byte(m.Content))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
		out.Objects = append(out.Objects, objs...)
	}
	for _, crd := range ch.CRDObjects() {
		objs, err := Decode(crd.File.Data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", crd.Filename, err)
		}
		out.CRDs = append(out.CRDs, objs...)
	}
	return out, nil
}

// Decode splits multi-document YAML into objects, skipping empty documents.
func Decode(b []byte) ([]*unstructured.Unstructured, error) { return manifest.Decode(b) }

// Encode writes objects as multi-document YAML.
func Encode(objs []*unstructured.Unstructured) ([]byte, error) {
	var b bytes.Buffer
	for _, o := range objs {
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes(), nil
}

// Kustomize builds the kustomization in dir with kustomize's krusty API, as
// `kustomize build` and Argo CD do, and returns the objects.
func Kustomize(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	y, err := m.AsYaml()
	if err != nil {
		return nil, err
	}
	return Decode(y)
}

// ProfileDir is deploy/profiles/<mode>/<role>.
func ProfileDir(mode, role string) string {
	return filepath.Join(RepoRoot(), "deploy", "profiles", mode, role)
}

// ProfileValues are the chart values a profile is rendered with: the mode
// and role, no cluster lookups, and example names a GitOps overlay patches
// (the workload's cluster name and the issuance endpoint).
func ProfileValues(mode, role string) map[string]any {
	v := map[string]any{
		"mode":      mode,
		"role":      role,
		"preflight": map[string]any{"enabled": false},
	}
	if role == "workload" {
		v["workload"] = map[string]any{
			"cluster":  ExampleCluster,
			"endpoint": ExampleEndpoint,
		}
	}
	return v
}

// Placeholders of the workload profiles, patched by an overlay.
const (
	ExampleCluster  = "workload-1"
	ExampleEndpoint = "relay-issuer.relaytls-system.example.com:9443"
)

// Profile renders the profile of mode and role from the chart: CRDs (sync
// wave -3), the namespace, then the chart's objects.
func Profile(mode, role string) ([]*unstructured.Unstructured, error) {
	r, err := Chart(ChartDir(), ChartOptions{Values: ProfileValues(mode, role)})
	if err != nil {
		return nil, fmt.Errorf("profile %s/%s: %w", mode, role, err)
	}
	var objs []*unstructured.Unstructured
	for _, crd := range r.CRDs {
		crd = crd.DeepCopy()
		ann := crd.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann["argocd.argoproj.io/sync-wave"] = "-3"
		crd.SetAnnotations(ann)
		objs = append(objs, crd)
	}
	// Helm's release labels say nothing true about a GitOps install, and
	// Argo CD tracks its resources by app.kubernetes.io/instance: the
	// profiles leave them out (selectors keep theirs).
	for _, o := range r.Objects {
		labels := o.GetLabels()
		for _, l := range []string{"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			delete(labels, l)
		}
		o.SetLabels(labels)
	}
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(Namespace)
	ns.SetAnnotations(map[string]string{"argocd.argoproj.io/sync-wave": "-3"})
	objs = append(objs, ns)
	return append(objs, r.Objects...), nil
}

// GeneratedFile is one file the generator owns.
type GeneratedFile struct {
	// Path is relative to the repository root.
	Path    string
	Content []byte
}

// Generated returns every file the generator writes: the chart's copies of
// deploy/rbac, deploy/crds and deploy/prometheus, the chart's CRD templates
// (deploy/crds behind crds.enabled), the values table of the chart README,
// and each profile's kustomization and manifests.
func Generated() ([]GeneratedFile, error) {
	root := RepoRoot()
	var out []GeneratedFile
	copies := map[string]string{
		"deploy/rbac/role.yaml":                 "deploy/charts/relaytls/files/issuer-role.yaml",
		"deploy/rbac/approver.yaml":             "deploy/charts/relaytls/files/approver.yaml",
		"deploy/prometheus/relaytls-rules.yaml": "deploy/charts/relaytls/files/relaytls-rules.yaml",
	}
	crds, err := filepath.Glob(filepath.Join(root, "deploy", "crds", "*.yaml"))
	if err != nil || len(crds) == 0 {
		return nil, fmt.Errorf("no CRDs in deploy/crds: %v", err)
	}
	for _, c := range crds {
		copies["deploy/crds/"+filepath.Base(c)] = "deploy/charts/relaytls/crds/" + filepath.Base(c)
		b, err := os.ReadFile(c)
		if err != nil {
			return nil, err
		}
		tpl, err := CRDTemplate(filepath.Base(c), b)
		if err != nil {
			return nil, err
		}
		out = append(out, GeneratedFile{Path: "deploy/charts/relaytls/templates/crds/" + filepath.Base(c), Content: tpl})
	}
	srcs := make([]string, 0, len(copies))
	for s := range copies {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	for _, src := range srcs {
		b, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			return nil, err
		}
		out = append(out, GeneratedFile{Path: copies[src], Content: b})
	}
	for _, mode := range Modes {
		for _, role := range Roles {
			objs, err := Profile(mode, role)
			if err != nil {
				return nil, err
			}
			y, err := Encode(objs)
			if err != nil {
				return nil, err
			}
			dir := filepath.Join("deploy", "profiles", mode, role)
			header := fmt.Sprintf("# Generated by deploy/render/cmd/gen from deploy/charts/relaytls\n# (mode=%s role=%s); do not edit. Change the chart and regenerate.\n", mode, role)
			out = append(out,
				GeneratedFile{Path: filepath.Join(dir, "relaytls.yaml"), Content: append([]byte(header), y...)},
				GeneratedFile{Path: filepath.Join(dir, "kustomization.yaml"), Content: []byte(kustomization(mode, role))},
			)
		}
	}
	doc, err := sidecarDoc()
	if err != nil {
		return nil, err
	}
	out = append(out, GeneratedFile{Path: "deploy/charts/relaytls/docs/sidecar.md", Content: doc})
	readme, err := chartReadme()
	if err != nil {
		return nil, err
	}
	out = append(out, GeneratedFile{Path: "deploy/charts/relaytls/README.md", Content: readme})
	return out, nil
}

// SidecarMarker starts the sidecar snippet in NOTES.txt.
const SidecarMarker = "Add the relay-sidecar to your"

// SidecarSnippet is the container and volumes NOTES.txt prints.
func SidecarSnippet(notes string) string {
	_, after, ok := strings.Cut(notes, SidecarMarker)
	if !ok {
		return ""
	}
	_, snippet, _ := strings.Cut(after, "\n")
	return strings.TrimSpace(snippet) + "\n"
}

// sidecarDoc renders the relay-sidecar snippet of every mode and role.
func sidecarDoc() ([]byte, error) {
	var b strings.Builder
	b.WriteString("<!-- Generated by deploy/render/cmd/gen from the chart's relaytls.sidecar template; do not edit. -->\n")
	b.WriteString("# relay-sidecar in your own Deployments\n\n")
	b.WriteString("relaytls does not deploy your management server or your agents. Add the\n")
	b.WriteString("relay-sidecar and the Secret volumes below to their pod specs: the server\n")
	b.WriteString("role beside the management server (management cluster), the agent role beside\n")
	b.WriteString("each agent (workload cluster). `helm install` prints the snippet for its mode\n")
	b.WriteString("and role, filled in from the `sidecar` and `workload` values. The agent's\n")
	b.WriteString("application connects to the sidecar's loopback --listen address; the server\n")
	b.WriteString("sidecar forwards each tunnel to --upstream.\n\n")
	b.WriteString("relay-sidecar is a native sidecar: an entry of `initContainers` with\n")
	b.WriteString("`restartPolicy: Always` (Kubernetes 1.29 and later), so it is started before\n")
	b.WriteString("your application's containers, restarted if it exits, and stopped after them.\n")
	b.WriteString("Merge the `initContainers` and `volumes` lists into your pod spec.\n\n")
	b.WriteString("Live revocation (management cluster of modes 2, 4 and 5): relay-issuer\n")
	b.WriteString("publishes the registered clusters, their token generations and which are\n")
	b.WriteString("revoked in the `relay-cluster-list` Secret (key `clusters.json`, no token) of\n")
	b.WriteString("the release namespace. The server sidecar mounts it and reads it with\n")
	b.WriteString("`--cluster-list`; it re-reads the file every `--reload-poll-interval`, refuses\n")
	b.WriteString("a revoked cluster and cuts its live connections and resumable tunnels within\n")
	b.WriteString("one interval, and derives each cluster's token with its generation (mode 2).\n")
	b.WriteString("The volume is not optional: a server sidecar that must honour revocation does\n")
	b.WriteString("not start without the list (relay-issuer creates it when it starts). Keep the\n")
	b.WriteString("mount when you edit the snippet; without it `relayctl revoke` still stops the\n")
	b.WriteString("cluster's renewals, but its open connections stay up. In modes 3 and 6 no\n")
	b.WriteString("relay-issuer runs in the management cluster: to revoke there, maintain a\n")
	b.WriteString("`relay-cluster-list` Secret by hand (`{\"version\": 1, \"clusters\": [{\"name\":\n")
	b.WriteString("\"east\", \"generation\": 1, \"revoked\": true}]}`) and add the same flag and mount.\n")
	for _, mode := range Modes {
		for _, role := range Roles {
			r, err := Chart(ChartDir(), ChartOptions{Values: ProfileValues(mode, role)})
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "\n## %s, %s cluster\n\n```yaml\n%s```\n", mode, role, SidecarSnippet(r.Notes))
		}
	}
	return []byte(b.String()), nil
}

func kustomization(mode, role string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# relaytls profile: mode %s, %s cluster. Point an Argo CD Application\n", mode, role)
	b.WriteString("# (or `kustomize build`) here, or at an overlay that uses this directory as\n")
	b.WriteString("# its base. Objects are ordered with argocd.argoproj.io/sync-wave: CRDs and\n")
	b.WriteString("# the namespace -3, identity and RBAC -2, relay-issuer -1, PKI 0,\n")
	b.WriteString("# certificates 1, RelayIssuer 2, the relay-client Certificate 3.\n")
	b.WriteString("# Nothing here is random or looked up from a cluster; no token is in Git\n")
	b.WriteString("# (relay-issuer generates it, or you create the Secret).\n")
	if role == "workload" && mode != relayv1.ModeInsecure {
		fmt.Fprintf(&b, "#\n# Overlay: replace the example cluster name %q", ExampleCluster)
		if mode == relayv1.ModeMTLSSelfSigned || mode == relayv1.ModeMTLSBYOCA {
			fmt.Fprintf(&b, " and endpoint %q\n# once, with the component deploy/components/workload-cluster (see\n# deploy/components/example-workload): it writes them to RelayIssuer relay,\n# Certificate relay-client and ConfigMap relaytls-config.\n", ExampleEndpoint)
		} else {
			b.WriteString(" in ConfigMap relaytls-config.\n")
		}
	}
	b.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- relaytls.yaml\n")
	return b.String()
}

// CRDTemplate turns a CRD that controller-gen wrote (file name, content)
// into the chart template that renders it when crds.enabled, with Helm's
// keep policy when crds.keep. Only metadata is rewritten; the spec is
// controller-gen's text as it is.
func CRDTemplate(name string, crd []byte) ([]byte, error) {
	objs, err := Decode(crd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(objs) != 1 || objs[0].GetKind() != "CustomResourceDefinition" {
		return nil, fmt.Errorf("%s: want one CustomResourceDefinition", name)
	}
	text := string(crd)
	if strings.Contains(text, "{{") {
		return nil, fmt.Errorf("%s: the CRD holds \"{{\", which Helm would read as a template action", name)
	}
	_, spec, ok := strings.Cut(text, "\nspec:\n")
	if !ok {
		return nil, fmt.Errorf("%s: no top-level spec", name)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "{{- /* Generated by deploy/render/cmd/gen from deploy/crds/%s (controller-gen); do not edit. */ -}}\n", name)
	b.WriteString("{{- if .Values.crds.enabled }}\n")
	b.WriteString("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n")
	fmt.Fprintf(&b, "  name: %s\n", objs[0].GetName())
	b.WriteString("  annotations:\n")
	ann := objs[0].GetAnnotations()
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "    %s: %q\n", k, ann[k])
	}
	b.WriteString("    {{- if .Values.crds.keep }}\n    helm.sh/resource-policy: keep\n    {{- end }}\n")
	b.WriteString("  labels:\n    {{- include \"relaytls.crdLabels\" . | nindent 4 }}\n")
	b.WriteString("spec:\n")
	b.WriteString(spec)
	if !strings.HasSuffix(spec, "\n") {
		b.WriteString("\n")
	}
	b.WriteString("{{- end }}\n")
	return []byte(b.String()), nil
}
