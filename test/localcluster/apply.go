package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/relaytls/relaytls/internal/manifest"
)

// FieldManager is the server-side apply field manager of Apply.
const FieldManager = "relaytls-localcluster"

// Apply server-side applies every object of the given multi-document YAML
// (or JSON) manifests as cluster-admin, in order, taking ownership of
// conflicting fields. CustomResourceDefinitions are waited for until they are
// established, so later documents may use them. Empty documents are skipped.
func (c *Cluster) Apply(ctx context.Context, manifests ...[]byte) error {
	for i, m := range manifests {
		objs, err := manifest.Decode(m)
		if err != nil {
			return fmt.Errorf("manifest %d: %w", i+1, err)
		}
		for _, obj := range objs {
			if err := c.applyObject(ctx, obj); err != nil {
				return err
			}
		}
	}
	return nil
}

// ApplyFiles applies the manifests in the given files, like Apply. A
// directory stands for its *.yaml, *.yml and *.json files, in name order (not
// recursive).
func (c *Cluster) ApplyFiles(ctx context.Context, paths ...string) error {
	for _, path := range paths {
		files := []string{path}
		if isDir(path) {
			files = nil
			entries, err := os.ReadDir(path)
			if err != nil {
				return err
			}
			for _, e := range entries {
				switch filepath.Ext(e.Name()) {
				case ".yaml", ".yml", ".json":
					if !e.IsDir() {
						files = append(files, filepath.Join(path, e.Name()))
					}
				}
			}
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("reading manifests: %w", err)
			}
			if err := c.Apply(ctx, data); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
		}
	}
	return nil
}

func (c *Cluster) applyObject(ctx context.Context, obj *unstructured.Unstructured) error {
	desc := fmt.Sprintf("%s %s", obj.GetKind(), obj.GetName())
	if ns := obj.GetNamespace(); ns != "" {
		desc = fmt.Sprintf("%s %s/%s", obj.GetKind(), ns, obj.GetName())
	}
	// A kind whose CRD was just established may take a moment to reach the
	// client's REST mapper; retry "no match" errors briefly.
	gvk := obj.GroupVersionKind()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		mapping, err := c.Client.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace && obj.GetNamespace() == "" {
			return false, errors.New("it is namespaced but has no metadata.namespace")
		}
		return true, c.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(FieldManager), client.ForceOwnership)
	})
	if err != nil {
		return fmt.Errorf("applying %s: %w", desc, err)
	}
	if obj.GetKind() == "CustomResourceDefinition" && strings.HasPrefix(obj.GetAPIVersion(), "apiextensions.k8s.io/") {
		if err := c.waitCRDEstablished(ctx, obj.GetName()); err != nil {
			return err
		}
	}
	return nil
}

// waitCRDsServed waits until the API server serves a list of each CRD's
// resource. Right after a CRD is created the API server answers its requests
// with 429 and "Retry-After: 1" until its watch cache is ready; clients
// (cert-manager's informers included) then sleep a whole second. Polling
// without retries here is faster and leaves the cluster ready.
func (c *Cluster) waitCRDsServed(ctx context.Context, crds ...*apiextensionsv1.CustomResourceDefinition) error {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	rc := cs.CoreV1().RESTClient()
	for _, crd := range crds {
		version := ""
		for _, v := range crd.Spec.Versions {
			if v.Served && (version == "" || v.Storage) {
				version = v.Name
			}
		}
		if version == "" {
			continue
		}
		path := "/apis/" + crd.Spec.Group + "/" + version + "/" + crd.Spec.Names.Plural
		var last error
		err := wait.PollUntilContextTimeout(ctx, 25*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			last = rc.Get().AbsPath(path).Param("limit", "1").MaxRetries(0).Do(ctx).Error()
			return last == nil, nil
		})
		if err != nil {
			return fmt.Errorf("the API server does not serve %s (CRD %s): %w (last answer: %v)", path, crd.Name, err, last)
		}
	}
	return nil
}

func (c *Cluster) waitCRDEstablished(ctx context.Context, name string) error {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return false, err
		}
		return apihelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for CRD %s to be established: %w", name, err)
	}
	return c.waitCRDsServed(ctx, crd)
}
