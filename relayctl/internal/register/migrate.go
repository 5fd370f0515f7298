package register

import (
	"context"
	"errors"
	"fmt"
	"io"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	relayv1 "github.com/relaytls/relaytls/api/v1alpha1"
	"github.com/relaytls/relaytls/internal/proof"
	"github.com/relaytls/relaytls/relayctl/internal/check"
	"github.com/relaytls/relaytls/relayctl/internal/kube"
	"github.com/relaytls/relaytls/relayctl/modes"
)

// MigrateResult is what MigrateScope did.
type MigrateResult struct {
	// Flipped is true when the issuer was moved from Shared to PerCluster
	// by this run (false: it already was PerCluster).
	Flipped bool
	// Clusters are the workload clusters that now hold their own token.
	Clusters []string
	// Mode is the management cluster's mode.
	Mode modes.Mode
}

// remoteCluster is one workload cluster to migrate and the name it enrols as.
type remoteCluster struct {
	conn *kube.Conn
	name string
}

// MigrateScope moves an install from tokenScope Shared (every workload
// cluster holds the management root token) to PerCluster tokens. Every
// check runs before anything is written: the management cluster must run a
// token mode, and every workload cluster must be reachable and say which
// cluster it is. Then each cluster gets a RelayCluster when it has none,
// the management RelayIssuer is switched to PerCluster, and each workload
// cluster's token Secret is overwritten with that cluster's own token.
//
// Nothing here touches a certificate or a connection: in modes 4 and 5 the
// relay runs on client certificates, which stay valid; a renewal that falls
// between the switch and the token write is refused once and retried by
// cert-manager. A run cut short is finished by running it again.
func MigrateScope(ctx context.Context, mgmt *kube.Conn, remotes []*kube.Conn, progress io.Writer) (*MigrateResult, error) {
	if len(remotes) == 0 {
		return nil, errors.New("no workload cluster given: pass each one with --remote-context (or --remote-kubeconfig)")
	}
	cfg, mode, err := managementConfig(ctx, mgmt)
	if err != nil {
		return nil, err
	}
	if !mode.Token {
		return nil, fmt.Errorf("mode %s uses no relay identity tokens: there is no token scope to migrate", mode.Name)
	}
	if !mode.AutoClient {
		// In the tls modes the scope is a flag of the server sidecar, which
		// this command cannot change without restarting it.
		return nil, fmt.Errorf("mode %s checks tokens in the server relay-sidecar (--token-scope), not in a RelayIssuer: "+
			"write each cluster's own token with relayctl register --secrets-only and, in the same rollout, restart the server sidecar with --token-scope=per-cluster (agents reconnect once)", mode.Name)
	}
	var iss relayv1.RelayIssuer
	key := client.ObjectKey{Namespace: mgmt.Namespace, Name: modes.RelayIssuerName}
	if err := mgmt.Client.Get(ctx, key, &iss); err != nil {
		return nil, fmt.Errorf("%s: reading RelayIssuer %s/%s: %w", mgmt.Name, key.Namespace, key.Name, err)
	}
	if iss.Spec.CA == nil {
		return nil, fmt.Errorf("%s: RelayIssuer %s/%s is not a CA-mode issuer: its token scope is set where the CA-mode issuer runs", mgmt.Name, key.Namespace, key.Name)
	}

	// Every workload cluster must be reachable and named before anything changes.
	targets := make([]remoteCluster, 0, len(remotes))
	seen := map[string]string{}
	for _, rc := range remotes {
		name, err := clusterNameOf(ctx, rc)
		if err != nil {
			return nil, err
		}
		if other, dup := seen[name]; dup {
			return nil, fmt.Errorf("%s and %s both say they are cluster %q: each workload cluster has its own name", other, rc.Name, name)
		}
		seen[name] = rc.Name
		targets = append(targets, remoteCluster{conn: rc, name: name})
	}

	rootToken, err := managementToken(ctx, mgmt, cfg)
	if err != nil {
		return nil, err
	}
	res := &MigrateResult{Mode: mode}
	shared := iss.Spec.CA.TokenScope == relayv1.TokenScopeShared
	// RelayCluster records first: with requireRegistration a cluster without
	// one would be refused as soon as the issuer is per cluster.
	plans := make([]*Plan, len(targets))
	for i, tc := range targets {
		p, err := Prepare(ctx, mgmt, Options{Cluster: tc.name, SecretsOnly: true})
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", tc.name, err)
		}
		if err := p.recordCluster(ctx, progress); err != nil {
			return nil, err
		}
		p.record = false
		plans[i] = p
	}
	if shared {
		patch := client.MergeFrom(iss.DeepCopy())
		iss.Spec.CA.TokenScope = relayv1.TokenScopePerCluster
		if err := mgmt.Client.Patch(ctx, &iss, patch); err != nil {
			return nil, fmt.Errorf("%s: setting spec.ca.tokenScope: PerCluster on RelayIssuer %s/%s: %w", mgmt.Name, key.Namespace, key.Name, err)
		}
		res.Flipped = true
		fmt.Fprintf(progress, "  RelayIssuer %s/%s: tokenScope Shared -> PerCluster\n", key.Namespace, key.Name)
	} else {
		fmt.Fprintf(progress, "  RelayIssuer %s/%s is already PerCluster: making sure every cluster holds its own token\n", key.Namespace, key.Name)
	}
	for i, tc := range targets {
		// The plan was made before the switch: give the cluster its own token.
		tok, err := derivedToken(ctx, mgmt, rootToken, tc.name)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", tc.name, err)
		}
		plans[i].token = tok
		if err := plans[i].CopySecrets(ctx, tc.conn, progress); err != nil {
			return nil, fmt.Errorf("cluster %q: %w (run relayctl migrate-scope again to finish)", tc.name, err)
		}
		res.Clusters = append(res.Clusters, tc.name)
	}
	return res, nil
}

// clusterNameOf reads which cluster a workload cluster enrols as: its
// relaytls-config, else its remote RelayIssuer.
func clusterNameOf(ctx context.Context, rc *kube.Conn) (string, error) {
	cfg, err := check.Config(ctx, rc)
	if err != nil {
		return "", err
	}
	if cfg["role"] != "" && cfg["role"] != "workload" {
		return "", fmt.Errorf("%s is installed as a %q cluster, not a workload cluster", rc.Name, cfg["role"])
	}
	name := cfg["cluster"]
	if name == "" {
		var iss relayv1.RelayIssuer
		err := rc.Client.Get(ctx, client.ObjectKey{Namespace: rc.Namespace, Name: modes.RelayIssuerName}, &iss)
		switch {
		case err == nil && iss.Spec.Remote != nil:
			name = iss.Spec.Remote.Cluster
		case err != nil && !apierrors.IsNotFound(err):
			return "", fmt.Errorf("%s: reading RelayIssuer %s/%s: %w", rc.Name, rc.Namespace, modes.RelayIssuerName, err)
		}
	}
	if name == "" {
		return "", fmt.Errorf("%s: cannot tell which cluster this is: ConfigMap %s/%s has no key cluster and there is no remote RelayIssuer %s naming one", rc.Name, rc.Namespace, modes.ConfigMapName, modes.RelayIssuerName)
	}
	if err := proof.ValidateCluster(name); err != nil {
		return "", fmt.Errorf("%s: ConfigMap %s/%s: cluster %q: %w", rc.Name, rc.Namespace, modes.ConfigMapName, name, err)
	}
	return name, nil
}

// readRootToken reads the management root token from the Secret
// relaytls-config names (the default name where the ConfigMap cannot be read).
func readRootToken(ctx context.Context, mgmt *kube.Conn) (proof.Token, error) {
	cfg, err := check.Config(ctx, mgmt)
	if err != nil {
		cfg = nil
	}
	return managementToken(ctx, mgmt, cfg)
}
