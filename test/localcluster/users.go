package localcluster

import (
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AddUser gives the cluster a new identity: a client certificate for the user
// name in the given groups (every user is also in system:authenticated). It
// returns a REST config and a kubeconfig file for it. The identity has no
// permissions until RBAC grants them.
func (c *Cluster) AddUser(name string, groups ...string) (*rest.Config, string, error) {
	if name == "" {
		return nil, "", errors.New("AddUser: the user name is empty")
	}
	if c.env == nil {
		return nil, "", errors.New("AddUser: the cluster is not started")
	}
	user, err := c.env.ControlPlane.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, "", fmt.Errorf("adding user %s: %w", name, err)
	}
	cfg := rest.CopyConfig(user.Config())
	cfg.QPS, cfg.Burst = ClientQPS, ClientBurst
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, "", fmt.Errorf("making a kubeconfig for %s: %w", name, err)
	}
	path, err := c.writeKubeconfig(name, kubeconfig)
	if err != nil {
		return nil, "", err
	}
	return cfg, path, nil
}

// AddServiceAccount gives the cluster the identity a pod running as the
// ServiceAccount namespace/name would have (user
// system:serviceaccount:<namespace>:<name> in the groups of
// ServiceAccountGroups), so RBAC bindings to that ServiceAccount apply to
// it. The ServiceAccount object itself is not needed and not created.
func (c *Cluster) AddServiceAccount(namespace, name string) (*rest.Config, string, error) {
	if namespace == "" || name == "" {
		return nil, "", fmt.Errorf("AddServiceAccount: namespace %q and name %q must both be set", namespace, name)
	}
	return c.AddUser(ServiceAccountUsername(namespace, name), ServiceAccountGroups(namespace)...)
}

// ServiceAccountUsername is the user name Kubernetes gives the ServiceAccount
// namespace/name.
func ServiceAccountUsername(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// ServiceAccountGroups are the groups Kubernetes puts a ServiceAccount of
// namespace in.
func ServiceAccountGroups(namespace string) []string {
	return []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}
